"""The listener over the JetStream backend (R3 on the shared cluster): it uses nothing but
the Backend protocol, so aiokafka produces and fetches there as on the embedded log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gateway.app import create_app
from gateway.kafka.server import KafkaListener, start_listener
from gateway.settings import Settings
from storage.jetstream import JetStreamBackend
from storage.types import TopicConfig
from tests.nats_cluster import NatsCluster, fresh_namespace

pytestmark = pytest.mark.nats


@pytest.fixture
async def jetstream_kafka(
    nats_cluster: NatsCluster, settings: Settings
) -> AsyncIterator[tuple[JetStreamBackend, KafkaListener]]:
    backend = await JetStreamBackend.open(
        nats_cluster.urls, replicas=3, namespace=fresh_namespace()
    )
    app = create_app(replace(settings, kafka_port=0), backend)
    listener = await start_listener(app.state.logway)
    try:
        yield backend, listener
    finally:
        await listener.close()
        await app.state.logway.groups.close()
        await backend.close()


async def test_aiokafka_round_trip_on_jetstream(
    jetstream_kafka: tuple[JetStreamBackend, KafkaListener],
) -> None:
    backend, listener = jetstream_kafka
    await backend.create_topic("orders", 2, TopicConfig())
    bootstrap = f"127.0.0.1:{listener.port}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sent = [
            await producer.send_and_wait("orders", b'{"n": %d}' % i, key=b"k%d" % i)
            for i in range(20)
        ]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        consumer.assign([TopicPartition("orders", 0), TopicPartition("orders", 1)])
        got: list[object] = []
        while len(got) < len(sent):
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, "nothing fetched"
            got += [m for batch in batches.values() for m in batch]
    finally:
        await consumer.stop()
    fetched = {(m.partition, m.offset): (m.key, m.value, m.timestamp) for m in got}  # type: ignore[attr-defined]
    assert fetched == {
        (s.partition, s.offset): (b"k%d" % i, b'{"n": %d}' % i, s.timestamp)
        for i, s in enumerate(sent)
    }
