"""Recovery on open: damage in the active segment is cut at the batch boundary before it;
damage in a sealed segment is a read error; indexes are rebuilt when missing or wrong."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import pytest

from storage import codec
from storage.errors import CorruptRecord
from storage.log import LogEngine
from storage.types import DurabilityPolicy, NewRecord, Record, TopicConfig

CONFIG = TopicConfig(segment_bytes=8192, retention_ms=None)


def _value(i: int) -> bytes:
    return b"record-%05d|" % i + bytes(range(i % 50, i % 50 + 150))


async def _write(directory: Path, appends: int) -> list[Record]:
    """Appends of 1-3 records each; returns everything read back after a clean close."""
    engine = await LogEngine.open(directory, DurabilityPolicy(), 3600)
    await engine.open_topic("t", 1, CONFIG)
    for i in range(appends):
        await engine.append(
            "t", 0, [NewRecord(_value(i), key=b"k%d" % j) for j in range(1 + i % 3)]
        )
    records = await engine.read("t", 0, 0, 10**6, 10**9)
    await engine.close()
    return records


async def _read_all(directory: Path) -> tuple[list[Record], int]:
    engine = await LogEngine.open(directory, DurabilityPolicy(), 3600)
    try:
        await engine.open_topic("t", 1, CONFIG)
        end_offset = engine.partition_info("t", 0).end_offset
        records = await engine.read("t", 0, 0, 10**6, 10**9)
        # The log stays dense: the next append continues right at the cut.
        result = await engine.append("t", 0, [NewRecord(b"after")])
        assert result.base_offset == end_offset
        return records, end_offset
    finally:
        await engine.close()


def _segment_files(directory: Path) -> list[Path]:
    return sorted((directory / "t" / "0").glob("*.log"))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    import asyncio

    directory = tmp_path_factory.mktemp("original")
    records = asyncio.run(_write(directory, 120))
    assert len(_segment_files(directory)) >= 3
    return directory, records


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
async def test_damage_in_active_segment_is_cut_at_the_batch_before_it(
    written: tuple[Path, list[Record]],
    damage: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original, records = written
    rng = random.Random(f"active-{damage}")
    for round_ in range(12):
        directory = tmp_path / str(round_)
        shutil.copytree(original, directory)
        active = _segment_files(directory)[-1]
        data = active.read_bytes()
        base_offset = int(active.stem)
        batches = codec.scan(data, 0, base_offset).batches
        point = rng.randrange(len(data))
        if damage == "flip":
            damaged = bytearray(data)
            damaged[point] ^= 1 << rng.randrange(8)
            active.write_bytes(bytes(damaged))
        elif damage == "truncate":
            active.write_bytes(data[:point])
        else:
            active.write_bytes(data + rng.randbytes(rng.randrange(1, 200)))
            point = len(data)
        kept = [b for b in batches if b.end_position <= point]
        expected_end = kept[-1].next_offset if kept else base_offset
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            recovered, end_offset = await _read_all(directory)
        assert end_offset == expected_end
        assert recovered == [r for r in records if r.offset < expected_end]
        cut_at = kept[-1].end_position if kept else 0
        if not (damage == "truncate" and point == cut_at):
            assert any("recovery cut" in m for m in caplog.messages), caplog.messages


async def test_corrupt_batch_in_sealed_segment_is_a_read_error(
    written: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    original, records = written
    directory = tmp_path / "d"
    shutil.copytree(original, directory)
    sealed = _segment_files(directory)[1]
    data = bytearray(sealed.read_bytes())
    batches = codec.scan(bytes(data), 0, int(sealed.stem)).batches
    victim = batches[len(batches) // 2]
    data[victim.end_position - 3] ^= 0xFF  # inside the last record's value
    sealed.write_bytes(bytes(data))
    engine = await LogEngine.open(directory, DurabilityPolicy(), 3600)
    try:
        await engine.open_topic("t", 1, CONFIG)
        with pytest.raises(CorruptRecord):
            await engine.read("t", 0, victim.base_offset, 10, 10**6)
        with pytest.raises(CorruptRecord):
            await engine.read("t", 0, 0, 10**6, 10**9)
        # Data before the bad batch, and after it in other segments, still reads.
        before = await engine.read("t", 0, 0, victim.base_offset, 10**9)
        assert before == records[: victim.base_offset]
        after_segment = int(_segment_files(directory)[2].stem)
        assert await engine.read("t", 0, after_segment, 10**6, 10**9) == records[after_segment:]
    finally:
        await engine.close()


async def test_sealed_segment_with_a_torn_tail_is_a_read_error(
    written: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    original, _ = written
    directory = tmp_path / "d"
    shutil.copytree(original, directory)
    sealed = _segment_files(directory)[0]
    data = sealed.read_bytes()
    sealed.write_bytes(data[:-10])
    next_base = int(_segment_files(directory)[1].stem)
    engine = await LogEngine.open(directory, DurabilityPolicy(), 3600)
    try:
        await engine.open_topic("t", 1, CONFIG)
        with pytest.raises(CorruptRecord):
            await engine.read("t", 0, next_base - 1, 10, 10**6)
    finally:
        await engine.close()


@pytest.mark.parametrize("damage", ["missing", "garbage", "shifted", "empty"])
async def test_sealed_index_is_rebuilt(
    written: tuple[Path, list[Record]], tmp_path: Path, damage: str
) -> None:
    original, records = written
    directory = tmp_path / "d"
    shutil.copytree(original, directory)
    for sealed in _segment_files(directory)[:-1]:
        index = sealed.with_suffix(".index")
        good = index.read_bytes()
        if damage == "missing":
            index.unlink()
        elif damage == "garbage":
            index.write_bytes(random.Random(1).randbytes(len(good)))
        elif damage == "shifted":
            # Plausible entries that point into the middle of batches.
            entries = bytearray(good)
            for i in range(16 + 8, len(entries), 16):
                entries[i] = (entries[i] + 7) % 256
            index.write_bytes(bytes(entries))
        else:
            index.write_bytes(b"")
    assert (await _read_all(directory))[0] == records
    for start in range(0, len(records), 7):
        engine = await LogEngine.open(directory, DurabilityPolicy(), 3600)
        try:
            await engine.open_topic("t", 1, CONFIG)
            count = min(3, len(records) - start)
            assert await engine.read("t", 0, start, count, 10**9) == records[start : start + count]
            stamp = records[start].timestamp_ms
            first = next(r.offset for r in records if r.timestamp_ms >= stamp)
            assert await engine.offset_for_timestamp("t", 0, stamp) == first
        finally:
            await engine.close()
    if damage in ("missing", "empty"):
        assert all(p.with_suffix(".index").stat().st_size for p in _segment_files(directory)[:-1])


async def test_orphan_index_files_are_removed(
    written: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    original, records = written
    directory = tmp_path / "d"
    shutil.copytree(original, directory)
    orphan = directory / "t" / "0" / f"{99999:020d}.index"
    orphan.write_bytes(b"\0" * 16)
    assert (await _read_all(directory))[0] == records
    assert not orphan.exists()
