"""Kafka clients nobody here wrote against a real `logway serve --kafka-port`: kcat and
confluent-kafka (librdkafka) producing with idempotence, aiokafka and kafka-python reading
what HTTP produced, and HTTP pulls and streams reading what they produced. One log: the
same key, headers, offset and timestamp whichever protocol wrote or reads a record."""

from __future__ import annotations

import asyncio
import base64
import json
import select
import subprocess
from collections.abc import Sequence
from typing import Any, NamedTuple

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import KafkaError, Message, Producer
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaPythonPartition

from tests.e2e.conftest import GatewayFactory, create_topic, pull_all
from tests.e2e.kafka_harness import (
    KafkaGateway,
    granian_only,
    librdkafka_config,
    require_kcat,
    start_kafka_gateway,
)

pytestmark = pytest.mark.e2e
server = granian_only
TIMEOUT_S = 30.0  # guards against hanging only; nothing asserts a duration


@pytest.fixture
def kafka_gateway(start_gateway: GatewayFactory) -> KafkaGateway:
    return start_kafka_gateway(start_gateway)


class Delivered(NamedTuple):
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp_ms: int


def delivered(
    producer: Producer,
    produce: Sequence[tuple[bytes, bytes]],
    topic: str,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> list[Delivered]:
    """Produce each (key, value), flush, and return the delivery reports (all successful)."""
    reports: list[Delivered] = []
    errors: list[KafkaError] = []

    def report(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
            return
        partition, offset, key, value = (
            message.partition(), message.offset(), message.key(), message.value()
        )  # fmt: skip
        assert partition is not None
        assert offset is not None
        assert key is not None
        assert value is not None
        reports.append(Delivered(partition, offset, key, value, message.timestamp()[1]))

    for key, value in produce:
        producer.produce(topic, value, key, headers=headers, on_delivery=report)
        producer.poll(0)
    assert producer.flush(TIMEOUT_S) == 0
    assert errors == []
    return reports


def _by_offset(client: httpx.Client, topic: str, partitions: int) -> dict[tuple[int, int], Any]:
    return {
        (record["partition"], record["offset"]): record
        for p in range(partitions)
        for record in pull_all(client, topic, p)
    }


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_librdkafka_idempotent_producer_writes_what_http_reads(
    kafka_gateway: KafkaGateway, compression: str
) -> None:
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "orders", 4)
        producer = Producer(
            librdkafka_config(kafka_gateway.bootstrap, **{
                "enable.idempotence": True,
                "compression.type": compression,
                "linger.ms": 5,
            })
        )  # fmt: skip
        sent = [
            (f"customer-{i % 50}".encode(), json.dumps({"order": i}).encode()) for i in range(3000)
        ]
        reports = delivered(producer, sent, "orders", headers=[("source", b"librdkafka")])
        stored = _by_offset(client, "orders", 4)
        assert len(stored) == len(sent)  # nothing twice
        for message in reports:
            record = stored[(message.partition, message.offset)]
            assert record["key"] == message.key.decode()
            assert record["value"] == json.loads(message.value)
            assert record["headers"] == {"source": "librdkafka"}
            assert record["timestamp"] == message.timestamp_ms
        # keys land where HTTP puts them (murmur2 both ways)
        placed = {m.key: m.partition for m in reports}
        for key, partition in list(placed.items())[:10]:
            answer = client.post("/v1/topics/orders/records",
                                 json={"records": [{"key": key.decode(), "value": 0}]})  # fmt: skip
            assert answer.json()["offsets"][0]["partition"] == partition


def test_kcat_produces_and_consumes_alongside_http(kafka_gateway: KafkaGateway) -> None:
    kcat = require_kcat()
    bootstrap = kafka_gateway.bootstrap
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "events", 2)
        lines = "".join(f'key-{i}:{{"n": {i}}}\n' for i in range(20)) + "key-x:plain text\n"
        subprocess.run(
            [kcat, "-b", bootstrap, "-P", "-t", "events", "-K:", "-H", "origin=kcat",
             "-z", "lz4", "-X", "enable.idempotence=true", "-X", "partitioner=murmur2_random"],
            input=lines.encode(), check=True, timeout=TIMEOUT_S,
        )  # fmt: skip
        client.post("/v1/topics/events/records",
                    json={"records": [{"key": "from-http", "value": [1, 2], "headers": {"a": "b"}}]})  # fmt: skip
        consumed = subprocess.run(
            [kcat, "-b", bootstrap, "-C", "-t", "events", "-o", "beginning", "-e", "-J"],
            capture_output=True, check=True, timeout=TIMEOUT_S,
        ).stdout.decode()  # fmt: skip
        messages = [json.loads(line) for line in consumed.splitlines() if line.strip()]
        stored = _by_offset(client, "events", 2)
    assert len(messages) == len(stored) == 22
    for message in messages:
        record = stored[(message["partition"], message["offset"])]
        assert record["key"] == message["key"]
        assert record["timestamp"] == message["ts"]
        headers = message.get("headers") or []
        assert dict(zip(headers[::2], headers[1::2], strict=True)) == record["headers"]
        if "value" in record:
            assert json.loads(message["payload"]) == record["value"]
        else:
            assert base64.b64decode(record["value_base64"]).decode() == message["payload"]
    plain = next(m for m in messages if m["key"] == "key-x")
    assert "value_base64" in stored[(plain["partition"], plain["offset"])]  # not JSON: bytes


def _http_records(client: httpx.Client) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [
        {"key": "a", "value": {"n": 1}, "headers": {"h": "1"}},
        {"key": None, "value_base64": base64.b64encode(b"\x00\xffraw").decode()},
        {"key": "c", "value": "text", "headers": {"x": "y", "z": ""}},
    ]
    answer = client.post("/v1/topics/mixed/records", json={"records": records}).json()
    offsets: list[dict[str, int]] = answer["offsets"]
    return [{**r, **o} for r, o in zip(records, offsets, strict=True)]


def _expected(written: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    def value(record: dict[str, Any]) -> bytes:
        if "value" in record:
            return json.dumps(record["value"], separators=(",", ":")).encode()
        return base64.b64decode(record["value_base64"])

    return [
        (r["offset"], r["timestamp"], None if r["key"] is None else r["key"].encode(), value(r),
         sorted((k, v.encode()) for k, v in r.get("headers", {}).items()))
        for r in written
    ]  # fmt: skip


def test_kafka_python_reads_what_http_wrote_and_writes_what_http_streams(
    kafka_gateway: KafkaGateway,
) -> None:
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "mixed", 1)
        written = _http_records(client)
        consumer = KafkaConsumer(bootstrap_servers=kafka_gateway.bootstrap,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 consumer_timeout_ms=int(TIMEOUT_S * 1000))  # fmt: skip
        try:
            consumer.assign([KafkaPythonPartition("mixed", 0)])
            got = [next(consumer) for _ in written]
        finally:
            consumer.close()
        assert [
            (m.offset, m.timestamp, m.key, m.value, sorted(m.headers)) for m in got
        ] == _expected(written)

        producer = KafkaProducer(bootstrap_servers=kafka_gateway.bootstrap, acks="all")
        try:
            futures = [producer.send("mixed", key=b"kp", value=b'{"from":"kafka-python"}',
                                     headers=[("via", b"kafka")]) for _ in range(3)]  # fmt: skip
            metadata = [f.get(timeout=TIMEOUT_S) for f in futures]
        finally:
            producer.close()
        with client.stream(
            "GET", "/v1/topics/mixed/events",
            params={"from": "earliest"}, headers={"Accept": "application/x-ndjson"},
        ) as stream:  # fmt: skip
            streamed = []
            for line in stream.iter_lines():
                if line.strip():
                    streamed.append(json.loads(line))
                if len(streamed) == len(written) + 3:
                    break
    for record, sent in zip(streamed[len(written) :], metadata, strict=True):
        assert (record["offset"], record["timestamp"]) == (sent.offset, sent.timestamp)
        assert (record["key"], record["value"], record["headers"]) == (
            "kp",
            {"from": "kafka-python"},
            {"via": "kafka"},
        )


async def test_aiokafka_reads_what_http_wrote(kafka_gateway: KafkaGateway) -> None:
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "mixed", 1)
        written = _http_records(client)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_gateway.bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        consumer.assign([TopicPartition("mixed", 0)])
        got: list[Any] = []
        async with asyncio.timeout(TIMEOUT_S):
            while len(got) < len(written):
                batches = await consumer.getmany(timeout_ms=1000)
                got += [m for batch in batches.values() for m in batch]
    finally:
        await consumer.stop()
    assert [(m.offset, m.timestamp, m.key, m.value, sorted(m.headers)) for m in got] == _expected(
        written
    )


def test_sigterm_with_kafka_consumers_waiting_exits_cleanly(kafka_gateway: KafkaGateway) -> None:
    """A consumer long-polling a Fetch does not hold the shutdown up or end it in error."""
    kcat = require_kcat()
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "idle", 1)
    consumer = subprocess.Popen(
        [kcat, "-b", kafka_gateway.bootstrap, "-C", "-t", "idle", "-o", "beginning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert consumer.stderr is not None
        ready, _, _ = select.select([consumer.stderr], [], [], TIMEOUT_S)
        assert ready, "kcat never fetched"
        assert b"Reached end of topic idle" in consumer.stderr.readline()  # now long-polling
        assert kafka_gateway.gateway.terminate() == 0
    finally:
        consumer.kill()
        consumer.communicate(timeout=TIMEOUT_S)
    log = kafka_gateway.gateway.log()
    assert "Traceback" not in log
    assert " ERROR " not in log
