"""Partitions on real files: appends, group commit, rolls, reads, timestamps and waiters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import codec
from storage.errors import OffsetOutOfRange, PartitionNotFound, StorageClosed, TopicNotFound
from storage.log import LogEngine
from storage.partition import (
    PREFILL_AHEAD_S,
    PREFILL_MAX_BYTES,
    PREFILL_MIN_BYTES,
    TAIL_CACHE_BYTES,
    Partition,
    PrefillSizer,
    TailCacheBudget,
)
from storage.segment import PREPARED_SUFFIX, parse_segment_name
from storage.types import Durability, DurabilityPolicy, NewRecord, TopicConfig, ValueFormat

SMALL = TopicConfig(segment_bytes=4096, retention_ms=None)


@pytest.fixture(params=list(Durability), ids=lambda d: d.value)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogEngine]:
    engine = await LogEngine.open(tmp_path, DurabilityPolicy(request.param, 20), 3600)
    await engine.open_topic("t", 2, SMALL)
    yield engine
    await engine.close()


def _value(i: int) -> bytes:
    return b"value-%06d-" % i + b"x" * 80


async def test_append_and_read_back(engine: LogEngine) -> None:
    result = await engine.append(
        "t",
        0,
        [
            NewRecord(b'{"a": 1}', key=b"k", headers=(("h", b"v"),), value_format=ValueFormat.JSON),
            NewRecord(b"", key=None),
        ],
    )
    assert (result.base_offset, result.count) == (0, 2)
    records = await engine.read("t", 0, 0, 10, 10**6)
    assert [(r.offset, r.value, r.key, r.headers, r.value_format) for r in records] == [
        (0, b'{"a": 1}', b"k", (("h", b"v"),), ValueFormat.JSON),
        (1, b"", None, (), ValueFormat.BYTES),
    ]
    assert records[0].timestamp_ms == result.timestamp_ms
    assert await engine.read("t", 0, 2, 10, 10**6) == []
    assert await engine.read("t", 1, 0, 10, 10**6) == []
    info = engine.partition_info("t", 0)
    assert (info.log_start_offset, info.end_offset) == (0, 2)
    assert info.size_bytes > 0


async def test_concurrent_appends_get_dense_offsets(engine: LogEngine) -> None:
    results = await asyncio.gather(
        *(engine.append("t", 0, [NewRecord(_value(i))] * (1 + i % 3)) for i in range(300))
    )
    covered = sorted(o for r in results for o in range(r.base_offset, r.base_offset + r.count))
    assert covered == list(range(len(covered)))
    timestamps = [r.timestamp_ms for r in sorted(results, key=lambda r: r.base_offset)]
    assert timestamps == sorted(timestamps)
    records = await engine.read("t", 0, 0, 10**6, 10**9)
    assert [r.offset for r in records] == covered
    by_offset = {r.base_offset: i for i, r in enumerate(results)}
    for record in records:
        base = max(b for b in by_offset if b <= record.offset)
        assert record.value == _value(by_offset[base])


async def _reopened(engine: LogEngine) -> LogEngine:
    """The same data through a fresh engine: empty tail cache, so reads go to the files."""
    await engine.close()
    fresh = await LogEngine.open(engine.topics_dir, engine.durability, 3600)
    await fresh.open_topic("t", 2, SMALL)
    return fresh


async def test_segments_roll_and_reads_cross_them(engine: LogEngine, tmp_path: Path) -> None:
    for i in range(200):
        await engine.append("t", 0, [NewRecord(_value(i))])
    bases = sorted(
        b
        for b in (parse_segment_name(p.name) for p in (tmp_path / "t" / "0").iterdir())
        if b is not None
    )
    assert len(bases) > 3
    assert bases[0] == 0
    current = engine
    for reopen in (False, True):
        if reopen:
            current = await _reopened(current)
        for start in (0, 1, 37, bases[1], bases[1] - 1, bases[-1], 199):
            records = await current.read("t", 0, start, 1000, 10**9)
            assert [r.offset for r in records] == list(range(start, 200))
            assert [r.value for r in records] == [_value(i) for i in range(start, 200)]
    await current.close()


async def test_read_limits(engine: LogEngine) -> None:
    for i in range(50):
        await engine.append("t", 0, [NewRecord(_value(i), key=b"kk")] * 2)
    per_record = len(_value(0)) + 2
    current = engine
    for reopen in (False, True):
        if reopen:
            current = await _reopened(current)
        assert [r.offset for r in await current.read("t", 0, 5, 7, 10**9)] == list(range(5, 12))
        limited = await current.read("t", 0, 5, 1000, per_record * 3 + 1)
        assert [r.offset for r in limited] == [5, 6, 7]
        assert len(await current.read("t", 0, 5, 1000, 1)) == 1  # at least one record
        with pytest.raises(OffsetOutOfRange) as info:
            await current.read("t", 0, 101, 1, 1)
        assert (info.value.log_start_offset, info.value.end_offset) == (0, 100)
        with pytest.raises(OffsetOutOfRange):
            await current.read("t", 0, -1, 1, 1)
    await current.close()


async def test_large_batches_beyond_the_read_chunk(engine: LogEngine) -> None:
    big = [NewRecord(bytes([i]) * 100_000) for i in range(5)]
    await engine.append("t", 1, big)
    await engine.append("t", 1, [NewRecord(b"after")])
    # Push the batches out of the tail cache so the read goes to the file.
    for _ in range(TAIL_CACHE_BYTES // 100_000 + 2):
        await engine.append("t", 1, [NewRecord(b"y" * 100_000)])
    records = await engine.read("t", 1, 2, 4, 10**9)
    assert [r.value for r in records] == [
        bytes([2]) * 100_000,
        bytes([3]) * 100_000,
        bytes([4]) * 100_000,
        b"after",
    ]
    assert [r.offset for r in await engine.read("t", 1, 0, 10, 250_000)] == [0, 1]


async def test_offset_for_timestamp(engine: LogEngine) -> None:
    stamps = []
    for i in range(120):
        result = await engine.append("t", 0, [NewRecord(_value(i))] * 2)
        stamps.append((result.timestamp_ms, result.base_offset))
        if i % 30 == 0:
            await asyncio.sleep(0.003)
    current = engine
    for reopen in (False, True):
        if reopen:
            current = await _reopened(current)
        for timestamp, _ in stamps[::7]:
            expected = min(o for t, o in stamps if t >= timestamp)
            assert await current.offset_for_timestamp("t", 0, timestamp) == expected
        assert await current.offset_for_timestamp("t", 0, 0) == 0
        assert await current.offset_for_timestamp("t", 0, stamps[-1][0] + 1) == 240
        assert await current.offset_for_timestamp("t", 1, 0) == 0
    await current.close()


async def test_wait_for_records(engine: LogEngine) -> None:
    assert not await engine.wait_for_records("t", {0: 0, 1: 0}, 0.01)
    waiter = asyncio.ensure_future(engine.wait_for_records("t", {0: 0, 1: 0}, None))
    await asyncio.sleep(0)
    assert not waiter.done()
    await engine.append("t", 1, [NewRecord(b"x")])
    assert await asyncio.wait_for(waiter, 5)
    assert await engine.wait_for_records("t", {1: 0}, 0)  # already beyond
    assert not await engine.wait_for_records("t", {1: 1}, 0)
    with pytest.raises(PartitionNotFound):
        await engine.wait_for_records("t", {5: 0}, 0)
    # No waiter stays parked once its call returned.
    assert all(not p._waiters for p in (engine.partition("t", 0), engine.partition("t", 1)))


async def test_waiters_wake_on_topic_removal_and_close(engine: LogEngine) -> None:
    await engine.open_topic("u", 1, SMALL)
    removed = asyncio.ensure_future(engine.wait_for_records("u", {0: 0}, None))
    closed = asyncio.ensure_future(engine.wait_for_records("t", {0: 0}, None))
    await asyncio.sleep(0)
    await engine.remove_topic("u")
    assert await asyncio.wait_for(removed, 5)
    with pytest.raises(TopicNotFound):
        await engine.read("u", 0, 0, 1, 1)
    await engine.close()
    assert await asyncio.wait_for(closed, 5)
    with pytest.raises(StorageClosed):
        await engine.append("t", 0, [NewRecord(b"x")])


async def test_segment_ms_rolls_by_time(tmp_path: Path) -> None:
    engine = await LogEngine.open(tmp_path, DurabilityPolicy(), 3600)
    try:
        await engine.open_topic("t", 1, TopicConfig(segment_ms=1, retention_ms=None))
        for i in range(3):
            await engine.append("t", 0, [NewRecord(b"v%d" % i)])
            await asyncio.sleep(0.005)
        logs = sorted(p.name for p in (tmp_path / "t" / "0").glob("*.log"))
        assert logs == [f"{i:020d}.log" for i in range(3)]
        assert [r.value for r in await engine.read("t", 0, 0, 10, 10**6)] == [b"v0", b"v1", b"v2"]
    finally:
        await engine.close()


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    engine = await LogEngine.open(tmp_path, DurabilityPolicy(), 3600)
    await engine.open_topic("t", 1, SMALL)
    await asyncio.gather(*(engine.append("t", 0, [NewRecord(_value(i))]) for i in range(150)))
    before = await engine.read("t", 0, 0, 1000, 10**9)
    await engine.close()
    engine = await LogEngine.open(tmp_path, DurabilityPolicy(), 3600)
    try:
        await engine.open_topic("t", 1, SMALL)
        assert await engine.read("t", 0, 0, 1000, 10**9) == before
        result = await engine.append("t", 0, [NewRecord(b"next")])
        assert result.base_offset == 150
        assert result.timestamp_ms >= before[-1].timestamp_ms
    finally:
        await engine.close()


async def test_interval_policy_fsyncs_in_the_background(tmp_path: Path) -> None:
    engine = await LogEngine.open(tmp_path, DurabilityPolicy(Durability.INTERVAL, 10), 3600)
    try:
        await engine.open_topic("t", 1, SMALL)
        await engine.append("t", 0, [NewRecord(b"x")])
        partition = engine.partition("t", 0)
        assert partition._dirty
        for _ in range(500):
            if not partition._dirty:
                break
            await asyncio.sleep(0.01)
        assert not partition._dirty
    finally:
        await engine.close()


def test_tail_cache_budget_is_shared_among_partitions() -> None:
    budget = TailCacheBudget(limit_bytes=4 * 1024 * 1024)
    budget.resize(+2)
    assert budget.per_partition == TAIL_CACHE_BYTES
    budget.resize(+98)
    assert budget.per_partition == 4 * 1024 * 1024 // 100
    budget.resize(+10_000)
    assert budget.per_partition == TailCacheBudget.MIN_PER_PARTITION
    budget.resize(-10_099)
    assert budget.per_partition == TAIL_CACHE_BYTES


async def _prefilled(partition: Partition) -> None:
    """Wait for the zero-filling job the last write started, if any."""
    while partition._prefilling is not None:
        await asyncio.wait([partition._prefilling])


@pytest.mark.parametrize("mode", list(Durability), ids=lambda d: d.value)
async def test_segments_are_zero_filled_ahead_under_fsync_always(
    tmp_path: Path, mode: Durability
) -> None:
    """Under fsync=always the active segment ends in zeros and the next segment's file is
    prepared before the roll that renames it; `bytes` counts data only; the other policies
    leave files at their data."""
    engine = await LogEngine.open(tmp_path, DurabilityPolicy(mode), 3600)
    try:
        await engine.open_topic("t", 1, SMALL)
        partition = engine.partition("t", 0)
        directory = tmp_path / "t" / "0"
        prepared_inode = None
        rolls = 0
        for i in range(120):
            before = sorted(directory.glob("*.log"))
            await engine.append("t", 0, [NewRecord(_value(i))])
            files = sorted(directory.glob("*.log"))
            if len(files) > len(before) and prepared_inode is not None:
                # the roll renamed the prepared file: its first append grew nothing
                assert files[-1].stat().st_ino == prepared_inode
                rolls += 1
            await _prefilled(partition)
            active = files[-1]
            data = active.read_bytes()
            scanned = codec.scan(data, 0, int(active.stem))
            assert scanned.error is None
            info = engine.partition_info("t", 0)
            sealed_bytes = sum(f.stat().st_size for f in files[:-1])
            assert info.size_bytes == sealed_bytes + scanned.valid_end
            prepared = list(directory.glob("*" + PREPARED_SUFFIX))
            if mode is Durability.ALWAYS:
                assert len(data) == SMALL.segment_bytes  # zeros up to segment.bytes
                assert len(prepared) == 1
                assert prepared[0].stat().st_size == SMALL.segment_bytes
                prepared_inode = prepared[0].stat().st_ino
            else:
                assert len(data) == scanned.valid_end
                assert not prepared
        assert len(files) > 3
        assert rolls == (len(files) - 1 if mode is Durability.ALWAYS else 0)
        # Sealed segments were trimmed to their data (they scan to their very end).
        for sealed in files[:-1]:
            assert codec.scan(sealed.read_bytes(), 0, int(sealed.stem)).valid_end == (
                sealed.stat().st_size
            )
        assert [r.value for r in await engine.read("t", 0, 0, 1000, 10**9)] == [
            _value(i) for i in range(120)
        ]
    finally:
        await engine.close()
    assert not list(directory.glob("*" + PREPARED_SUFFIX))  # close removes it


def test_prefill_follows_the_append_rate_within_bounds() -> None:
    sizer = PrefillSizer(now_s=0.0)
    assert sizer.chunk_bytes == PREFILL_MIN_BYTES
    sizer.appended_bytes = 1000
    assert sizer.next_chunk(now_s=60.0) == PREFILL_MIN_BYTES  # a slow partition
    sizer.appended_bytes = 400_000  # 200 KB/s for 2 s
    assert sizer.next_chunk(now_s=62.0) == -(-2_000_000 // PREFILL_MIN_BYTES) * PREFILL_MIN_BYTES
    assert sizer.chunk_bytes >= 200_000 * PREFILL_AHEAD_S
    sizer.appended_bytes = 10**9
    assert sizer.next_chunk(now_s=63.0) == PREFILL_MAX_BYTES
