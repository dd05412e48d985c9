"""kill -9 one nats-server under a produce load: every acknowledged record stays readable
at its acknowledged offset, offsets stay dense, and the backend keeps serving once the
cluster has a leader again. The node is restarted afterwards (the cluster is shared)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from storage.errors import StorageError
from storage.jetstream import JetStreamBackend
from storage.types import NewRecord, Record, TopicConfig
from tests.nats_cluster import NatsCluster, fresh_namespace

pytestmark = pytest.mark.nats

MiB = 1024 * 1024
PARTITIONS = 2
PRODUCERS_PER_PARTITION = 3
ACKS_BEFORE_KILL = 150
ACKS_AFTER_KILL = 150
LOAD_DEADLINE_S = 60.0


@dataclass
class Load:
    acked: dict[int, dict[int, bytes]] = field(default_factory=dict)  # partition -> offset -> value
    failures: list[str] = field(default_factory=list)
    count: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def produce(self, backend: JetStreamBackend, partition: int, producer: int) -> None:
        n = 0
        while not self.stop.is_set():
            size = 1 + n % 4
            values = [f"{partition}/{producer}/{n}/{i}".encode() for i in range(size)]
            n += 1
            try:
                result = await backend.append("load", partition, [NewRecord(v) for v in values])
            except StorageError as exc:  # no leader for a moment: retry, as a client would
                self.failures.append(type(exc).__name__)
                await asyncio.sleep(0.05)
                continue
            acked = self.acked.setdefault(partition, {})
            for i, value in enumerate(values):
                acked[result.base_offset + i] = value
            self.count += 1

    async def until(self, count: int) -> None:
        deadline = time.monotonic() + LOAD_DEADLINE_S
        while self.count < count:
            assert time.monotonic() < deadline, (
                f"load stalled at {self.count} acks: {self.failures[-5:]}"
            )
            await asyncio.sleep(0.01)


def assert_whole_appends(records: list[Record]) -> None:
    """Every append in the log, acknowledged or not (a lost ack leaves an unknown outcome),
    is there whole: all its records, contiguous and in order, never a part of it."""
    appends: dict[tuple[bytes, bytes], list[tuple[int, int]]] = {}
    for record in records:
        _, producer, n, i = record.value.split(b"/")
        appends.setdefault((producer, n), []).append((record.offset, int(i)))
    for (producer, n), parts in appends.items():
        size = 1 + int(n) % 4
        first = parts[0][0]
        assert parts == [(first + i, i) for i in range(size)], f"append {producer!r}/{n!r} torn"


@pytest.fixture
async def backend(nats_cluster: NatsCluster) -> AsyncIterator[JetStreamBackend]:
    opened = await JetStreamBackend.open(nats_cluster.urls, replicas=3, namespace=fresh_namespace())
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.slow
async def test_kill_a_node_under_load_loses_no_acknowledged_record(
    nats_cluster: NatsCluster, backend: JetStreamBackend
) -> None:
    await backend.create_topic("load", PARTITIONS, TopicConfig())
    await backend.append("load", 0, [NewRecord(b"warm-up")])  # so the leader is settled
    load = Load(acked={0: {0: b"warm-up"}})
    producers = [
        asyncio.create_task(load.produce(backend, p, i))
        for p in range(PARTITIONS)
        for i in range(PRODUCERS_PER_PARTITION)
    ]
    info = await backend._js.call(f"STREAM.INFO.{backend.namespace.upper()}_load_0")
    victim = nats_cluster.index_of(info["cluster"]["leader"])  # partition 0's stream leader
    try:
        await load.until(ACKS_BEFORE_KILL)
        await asyncio.to_thread(nats_cluster.kill, victim)
        killed_at = load.count
        await load.until(killed_at + ACKS_AFTER_KILL)
    finally:
        load.stop.set()
        await asyncio.gather(*producers)
        # records written in the meantime must still be there after the node is back
        try:
            await asyncio.to_thread(nats_cluster.restart, victim)
            await asyncio.to_thread(nats_cluster.wait_healthy)
        except BaseException:
            print(nats_cluster.logs())
            raise

    for partition in range(PARTITIONS):
        acked = load.acked.get(partition, {})
        end_offset = (await backend.partition_info("load", partition)).end_offset
        records: list[Record] = []
        while len(records) < end_offset:
            records += await backend.read("load", partition, len(records), 1000, 16 * MiB)
        assert [r.offset for r in records] == list(range(end_offset))
        by_offset = {r.offset: r.value for r in records}
        missing = {o: v for o, v in acked.items() if by_offset.get(o) != v}
        assert not missing, f"partition {partition}: acknowledged records lost or moved"
        assert_whole_appends(records[1:] if partition == 0 else records)
    # the backend keeps serving, on the restarted cluster
    result = await backend.append("load", 0, [NewRecord(b"after")])
    [after] = await backend.read("load", 0, result.base_offset, 1, MiB)
    assert after.value == b"after"
    await backend.check_writable()


@pytest.mark.slow
async def test_waiters_wake_when_the_connection_moves_to_another_node(
    nats_cluster: NatsCluster, backend: JetStreamBackend
) -> None:
    """RePublish notifications sent while reconnecting are lost, so a reconnect wakes every
    waiter (the caller re-reads); waits after it are woken by appends again."""
    await backend.create_topic("t", 1, TopicConfig())
    waiter = asyncio.create_task(backend.wait_for_records("t", {0: 0}, None))
    await asyncio.sleep(0.05)
    connected = backend._js.connected_url
    assert connected is not None
    victim = next(i for i, n in enumerate(nats_cluster.nodes) if n.client_port == connected.port)
    try:
        await asyncio.to_thread(nats_cluster.kill, victim)
        assert await asyncio.wait_for(waiter, 30) is True
        waiter = asyncio.create_task(backend.wait_for_records("t", {0: 0}, None))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        deadline = time.monotonic() + LOAD_DEADLINE_S
        while True:  # the streams may still be electing a leader
            try:
                await backend.append("t", 0, [NewRecord(b"after reconnect")])
                break
            except StorageError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert await asyncio.wait_for(waiter, 30) is True
    finally:
        await asyncio.to_thread(nats_cluster.restart, victim)
        await asyncio.to_thread(nats_cluster.wait_healthy)
