"""What only the jetstream backend has: the atomic batch limit, JetStream retention, and
several backends ("gateways") sharing one cluster namespace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from storage.errors import (
    AppendTooLarge,
    OffsetOutOfRange,
    PartitionNotFound,
    StorageWriteError,
    TopicNotFound,
)
from storage.jetstream import JetStreamBackend
from storage.jetstream.api import MAX_ATOMIC_BATCH
from storage.types import NewRecord, TopicConfig, TopicPartition
from tests.nats_cluster import NatsCluster, fresh_namespace

pytestmark = pytest.mark.nats

MiB = 1024 * 1024


@pytest.fixture
async def gateways(nats_cluster: NatsCluster) -> AsyncIterator[list[JetStreamBackend]]:
    """Two backends on one namespace, each with its own connection, like two gateways."""
    namespace = fresh_namespace()
    opened = [
        await JetStreamBackend.open(nats_cluster.urls, replicas=3, namespace=namespace)
        for _ in range(2)
    ]
    try:
        yield opened
    finally:
        for backend in opened:
            await backend.close()


async def test_appends_beyond_one_atomic_batch_are_refused_whole(
    gateways: list[JetStreamBackend],
) -> None:
    backend = gateways[0]
    await backend.create_topic("t", 1, TopicConfig())
    too_many = [NewRecord(b"%d" % i) for i in range(MAX_ATOMIC_BATCH + 1)]
    with pytest.raises(AppendTooLarge) as exc_info:
        await backend.append("t", 0, too_many)
    assert exc_info.value.max_records == MAX_ATOMIC_BATCH
    assert (await backend.partition_info("t", 0)).end_offset == 0
    result = await backend.append("t", 0, too_many[:MAX_ATOMIC_BATCH])
    assert (result.base_offset, result.count) == (0, MAX_ATOMIC_BATCH)
    records = await backend.read("t", 0, 990, 100, MiB)
    assert [r.value for r in records] == [b"%d" % i for i in range(990, MAX_ATOMIC_BATCH)]


async def test_retention_by_bytes_advances_log_start_and_never_reuses_offsets(
    gateways: list[JetStreamBackend],
) -> None:
    backend = gateways[0]
    await backend.create_topic("t", 1, TopicConfig(retention_bytes=4000))
    for i in range(60):
        await backend.append("t", 0, [NewRecord(bytes(100) + b"%d" % i)])
    info = await backend.partition_info("t", 0)
    assert info.end_offset == 60
    assert 0 < info.log_start_offset < 60
    with pytest.raises(OffsetOutOfRange) as exc_info:
        await backend.read("t", 0, 0, 10, MiB)
    assert exc_info.value.log_start_offset == info.log_start_offset
    [first] = await backend.read("t", 0, info.log_start_offset, 1, MiB)
    assert first.offset == info.log_start_offset
    assert first.value.endswith(b"%d" % info.log_start_offset)
    assert await backend.offset_for_timestamp("t", 0, 0) == info.log_start_offset
    assert (await backend.append("t", 0, [NewRecord(b"next")])).base_offset == 60


async def test_retention_by_time_expires_old_records(gateways: list[JetStreamBackend]) -> None:
    backend = gateways[0]
    await backend.create_topic("t", 1, TopicConfig(retention_ms=500))
    await backend.append("t", 0, [NewRecord(b"old"), NewRecord(b"older")])
    deadline = time.monotonic() + 30
    while (await backend.partition_info("t", 0)).log_start_offset < 2:
        assert time.monotonic() < deadline, "JetStream never applied max_age"
        await asyncio.sleep(0.1)
    info = await backend.partition_info("t", 0)
    assert (info.log_start_offset, info.end_offset) == (2, 2)
    assert await backend.read("t", 0, 2, 10, MiB) == []
    assert (await backend.append("t", 0, [NewRecord(b"new")])).base_offset == 2


async def test_two_gateways_share_topics_offsets_and_wakeups(
    gateways: list[JetStreamBackend],
) -> None:
    a, b = gateways
    await a.create_topic("shared", 1, TopicConfig())
    assert [t.name for t in await b.list_topics()] == ["shared"]
    assert await b.create_topic("shared", 1, TopicConfig()) is False

    waiter = asyncio.create_task(b.wait_for_records("shared", {0: 0}, None))
    await asyncio.sleep(0.05)
    batches = [
        [NewRecord(f"{g}:{n}:{i}".encode()) for i in range(3)] for n in range(20) for g in "ab"
    ]
    results = await asyncio.gather(
        *(
            (a if batch[0].value.startswith(b"a") else b).append("shared", 0, batch)
            for batch in batches
        )
    )
    assert await asyncio.wait_for(waiter, 10) is True
    records = await a.read("shared", 0, 0, 1000, MiB)
    assert [r.offset for r in records] == list(range(3 * len(batches)))
    for batch, result in zip(batches, results, strict=True):
        got = records[result.base_offset : result.base_offset + result.count]
        assert [r.value for r in got] == [r.value for r in batch]

    # b waits (and has the topic cached); a deletes it and re-creates it bigger
    waiter = asyncio.create_task(b.wait_for_records("shared", {0: len(records)}, None))
    await asyncio.sleep(0.05)
    await a.delete_topic("shared")
    assert await asyncio.wait_for(waiter, 10) is True
    with pytest.raises(TopicNotFound):
        await b.append("shared", 0, [NewRecord(b"late")])
    await a.create_topic("shared", 2, TopicConfig())
    assert (await b.append("shared", 1, [NewRecord(b"new")])).base_offset == 0
    with pytest.raises(PartitionNotFound):
        await b.append("shared", 2, [NewRecord(b"x")])


async def test_waiters_cancelled_at_any_point_leave_the_connection_serving(
    gateways: list[JetStreamBackend],
) -> None:
    """An SSE stream that ends (client gone, woken for a rebalance) cancels its waiter
    wherever it is, also while a new notifier is being started; the connection must keep
    answering afterwards (nats-py's read loop died on a PONG for a cancelled flush)."""
    backend = gateways[0]
    partitions = 24
    await backend.create_topic("t", partitions, TopicConfig())
    for partition in range(partitions):
        waiter = asyncio.create_task(backend.wait_for_records("t", {partition: 0}, 5))
        for _ in range(partition):
            await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.sleep(0.1)  # the PONGs of anything cancelled mid-way arrive
    for partition in range(partitions):
        assert (await backend.partition_info("t", partition)).end_offset == 0


async def test_group_commits_from_two_gateways_merge(gateways: list[JetStreamBackend]) -> None:
    a, b = gateways
    await asyncio.gather(
        *(
            (a if p % 2 else b).commit_offsets("g", {TopicPartition("t", p): 10 + p})
            for p in range(12)
        )
    )
    assert await a.committed_offsets("g") == {TopicPartition("t", p): 10 + p for p in range(12)}
    await b.delete_group("g")
    assert await a.list_groups() == []


async def test_racing_creates_agree_on_one_topic(gateways: list[JetStreamBackend]) -> None:
    a, b = gateways
    created = await asyncio.gather(
        a.create_topic("same", 2, TopicConfig()), b.create_topic("same", 2, TopicConfig())
    )
    assert sorted(created) == [False, True]
    outcomes = await asyncio.gather(
        a.create_topic("differ", 2, TopicConfig()),
        b.create_topic("differ", 3, TopicConfig()),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["TopicExists", "bool"]
    winner = await a.get_topic("differ")
    assert (await b.get_topic("differ")) == winner
    for p in range(winner.partitions):
        assert (await b.append("differ", p, [NewRecord(b"x")])).base_offset == 0


async def test_large_records_and_records_beyond_max_payload(
    gateways: list[JetStreamBackend],
) -> None:
    backend = gateways[0]
    await backend.create_topic("big", 1, TopicConfig())
    value = bytes(range(256)) * 4096  # 1 MiB, the gateway's default record limit
    await backend.append("big", 0, [NewRecord(value, key=b"k" * 1000), NewRecord(value)])
    records = await backend.read("big", 0, 0, 10, 4 * MiB)
    assert [r.value for r in records] == [value, value]
    assert len(await backend.read("big", 0, 0, 10, MiB)) == 1  # at least one, then max_bytes
    too_big = bytes(9 * MiB)  # the test cluster's max_payload is 8 MiB
    with pytest.raises(StorageWriteError):
        await backend.append("big", 0, [NewRecord(too_big)])
    with pytest.raises(StorageWriteError):
        await backend.append("big", 0, [NewRecord(b"a"), NewRecord(too_big), NewRecord(b"c")])
    assert (await backend.partition_info("big", 0)).end_offset == 2
