"""Retention deletes whole segments by time and by size; offsets keep counting, forever."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import codec
from storage.embedded import EmbeddedBackend
from storage.errors import OffsetOutOfRange
from storage.log import LogEngine
from storage.segment import parse_segment_name
from storage.types import DurabilityPolicy, NewRecord, TopicConfig

VALUE = b"v" * 1000  # about four records per 4 KiB segment


def _bases(directory: Path) -> list[int]:
    return sorted(
        b for b in (parse_segment_name(p.name) for p in directory.iterdir()) if b is not None
    )


async def _engine(directory: Path, config: TopicConfig) -> LogEngine:
    engine = await LogEngine.open(directory, DurabilityPolicy(), 3600)
    await engine.open_topic("t", 1, config)
    return engine


async def test_retention_by_time_deletes_old_sealed_segments(tmp_path: Path) -> None:
    retention_ms = 60_000
    engine = await _engine(tmp_path, TopicConfig(segment_bytes=4096, retention_ms=retention_ms))
    try:
        for _phase in range(3):
            for _ in range(9):
                await engine.append("t", 0, [NewRecord(VALUE)])
            await asyncio.sleep(0.01)
        records = await engine.read("t", 0, 0, 1000, 10**9)
        bases = _bases(tmp_path / "t" / "0")
        max_ts = {
            base: max(r.timestamp_ms for r in records if r.offset >= base and r.offset < nxt)
            for base, nxt in zip(bases, [*bases[1:], 10**9], strict=True)
        }
        cutoff = records[9].timestamp_ms  # the first record of the second phase
        now = cutoff + retention_ms
        expected_start = next(b for b in bases if not now - max_ts[b] > retention_ms)
        assert expected_start > 0
        deleted = await engine.run_retention(now)
        assert deleted == bases.index(expected_start)
        info = engine.partition_info("t", 0)
        assert (info.log_start_offset, info.end_offset) == (expected_start, 27)
        assert _bases(tmp_path / "t" / "0") == [b for b in bases if b >= expected_start]
        with pytest.raises(OffsetOutOfRange) as below:
            await engine.read("t", 0, expected_start - 1, 10, 10**6)
        assert below.value.log_start_offset == expected_start
        assert await engine.read("t", 0, expected_start, 1000, 10**9) == records[expected_start:]
        assert await engine.offset_for_timestamp("t", 0, 0) == expected_start
        assert (await engine.append("t", 0, [NewRecord(b"x")])).base_offset == 27
    finally:
        await engine.close()


async def test_everything_expired_keeps_the_offsets_across_restarts(tmp_path: Path) -> None:
    config = TopicConfig(segment_bytes=4096, retention_ms=1000)
    engine = await _engine(tmp_path, config)
    for _ in range(10):
        await engine.append("t", 0, [NewRecord(VALUE)])
    far_future = 2**62
    assert await engine.run_retention(far_future) > 0
    info = engine.partition_info("t", 0)
    assert (info.log_start_offset, info.end_offset) == (10, 10)
    # The idle active segment was rolled to an empty one that carries the count.
    assert _bases(tmp_path / "t" / "0") == [10]
    assert await engine.read("t", 0, 10, 10, 10**6) == []
    with pytest.raises(OffsetOutOfRange):
        await engine.read("t", 0, 9, 10, 10**6)
    assert await engine.run_retention(far_future) == 0
    await engine.close()

    engine = await _engine(tmp_path, config)
    try:
        info = engine.partition_info("t", 0)
        assert (info.log_start_offset, info.end_offset) == (10, 10)
        assert (await engine.append("t", 0, [NewRecord(b"next")])).base_offset == 10
        assert [r.offset for r in await engine.read("t", 0, 10, 10, 10**6)] == [10]
    finally:
        await engine.close()


async def test_retention_by_bytes(tmp_path: Path) -> None:
    retention_bytes = 3 * 4096
    engine = await _engine(
        tmp_path,
        TopicConfig(segment_bytes=4096, retention_ms=None, retention_bytes=retention_bytes),
    )
    try:
        for i in range(60):
            await engine.append("t", 0, [NewRecord(VALUE + b"%d" % i)])
        before = await engine.read("t", 0, 0, 1000, 10**9)
        assert await engine.run_retention() > 0
        directory = tmp_path / "t" / "0"
        bases = _bases(directory)
        # The data in each file: the active one is zero-filled ahead of it.
        sizes = [
            codec.scan((directory / f"{b:020d}.log").read_bytes(), 0, b).valid_end for b in bases
        ]
        assert sum(sizes) <= retention_bytes
        assert sum(sizes) + 4096 > retention_bytes  # nothing deleted beyond what it must
        info = engine.partition_info("t", 0)
        assert info.log_start_offset == bases[0] > 0
        assert info.size_bytes == sum(sizes)
        assert await engine.read("t", 0, bases[0], 1000, 10**9) == before[bases[0] :]
        assert (await engine.append("t", 0, [NewRecord(b"x")])).base_offset == 60
    finally:
        await engine.close()


async def test_the_active_segment_is_never_deleted_by_size(tmp_path: Path) -> None:
    engine = await _engine(
        tmp_path, TopicConfig(segment_bytes=1 << 20, retention_ms=None, retention_bytes=1)
    )
    try:
        for _ in range(5):
            await engine.append("t", 0, [NewRecord(VALUE)])
        assert await engine.run_retention() == 0
        assert len(await engine.read("t", 0, 0, 100, 10**9)) == 5
    finally:
        await engine.close()


async def test_background_retention_runs_by_itself(tmp_path: Path) -> None:
    backend = await EmbeddedBackend.open(tmp_path, DurabilityPolicy(), retention_interval_s=0.02)
    try:
        await backend.create_topic("t", 1, TopicConfig(segment_bytes=4096, retention_ms=1))
        for _ in range(10):
            await backend.append("t", 0, [NewRecord(VALUE)])
        for _ in range(500):
            if (await backend.partition_info("t", 0)).log_start_offset == 10:
                break
            await asyncio.sleep(0.01)
        info = await backend.partition_info("t", 0)
        assert (info.log_start_offset, info.end_offset) == (10, 10)
        assert (await backend.append("t", 0, [NewRecord(b"x")])).base_offset == 10
    finally:
        await backend.close()


async def test_reads_racing_retention_get_whole_data_or_out_of_range(tmp_path: Path) -> None:
    engine = await _engine(tmp_path, TopicConfig(segment_bytes=4096, retention_ms=1000))
    try:
        for round_ in range(5):
            start = engine.partition_info("t", 0).end_offset
            for i in range(20):
                await engine.append("t", 0, [NewRecord(VALUE + b"%d" % (start + i))])
            await engine.close()  # empty the tail cache so reads go through the files
            engine = await _engine(tmp_path, TopicConfig(segment_bytes=4096, retention_ms=1000))
            reads = [engine.read("t", 0, start + i, 100, 10**9) for i in range(0, 20, 3)]
            results = await asyncio.gather(
                *reads, engine.run_retention(2**62), return_exceptions=True
            )
            for i, result in zip(range(0, 20, 3), results, strict=False):
                if isinstance(result, OffsetOutOfRange):
                    continue
                assert isinstance(result, list), result
                assert [r.value for r in result] == [
                    VALUE + b"%d" % o for o in range(start + i, start + 20)
                ], round_
            assert engine.partition_info("t", 0).log_start_offset == start + 20
    finally:
        await engine.close()
