"""Recovery on open: damage in the active segment is cut at the batch boundary before it;
zeros after the data are the zero-filled room ahead of the writer and stay, but anything
else written into them is cut; damage in a sealed segment is a read error; a sealed
segment with zeros after its data is trimmed; indexes are rebuilt when missing or wrong."""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    async with _opened(directory) as engine:
        end_offset = engine.partition_info("t", 0).end_offset
        records = await engine.read("t", 0, 0, 10**6, 10**9)
        # The log stays dense: the next append continues right at the cut.
        result = await engine.append("t", 0, [NewRecord(b"after")])
        assert result.base_offset == end_offset
        return records, end_offset


@asynccontextmanager
async def _opened(directory: Path) -> AsyncIterator[LogEngine]:
    engine = await LogEngine.open(directory, DurabilityPolicy(), 3600)
    try:
        await engine.open_topic("t", 1, CONFIG)
        yield engine
    finally:
        await engine.close()


def _copy(original: Path, tmp_path: Path) -> Path:
    """A copy of the written log for one test to damage."""
    directory = tmp_path / "d"
    shutil.copytree(original, directory)
    return directory


def _segment_files(directory: Path) -> list[Path]:
    return sorted((directory / "t" / "0").glob("*.log"))


def _data_end(path: Path) -> int:
    """Where the batches in a segment file end; only zeros may follow."""
    scanned = codec.scan(path.read_bytes(), 0, int(path.stem))
    assert scanned.error is None, scanned.error
    return scanned.valid_end


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    import asyncio

    directory = tmp_path_factory.mktemp("original")
    records = asyncio.run(_write(directory, 120))
    files = _segment_files(directory)
    assert len(files) >= 3
    # Sealed segments were trimmed to their data; the active one ends in zeros.
    assert all(_data_end(f) == f.stat().st_size for f in files[:-1])
    assert 0 < _data_end(files[-1]) < files[-1].stat().st_size
    return directory, records


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "torn"])
async def test_damage_in_active_segment_is_cut_at_the_batch_before_it(
    written: tuple[Path, list[Record]],
    damage: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Damage to the data, and torn writes into the zeros after it: "garbage" is random
    bytes written over the start of the zeros, "torn" a batch whose first page never
    reached the disk while a later one did."""
    original, records = written
    rng = random.Random(f"active-{damage}")
    for round_ in range(12):
        directory = tmp_path / str(round_)
        shutil.copytree(original, directory)
        active = _segment_files(directory)[-1]
        data = active.read_bytes()
        base_offset = int(active.stem)
        scanned = codec.scan(data, 0, base_offset)
        batches, data_end = scanned.batches, scanned.valid_end
        point = rng.randrange(data_end)
        damaged = bytearray(data)
        if damage == "flip":
            damaged[point] ^= 1 << rng.randrange(8)
        elif damage == "truncate":
            del damaged[point:]
        else:
            point = data_end
            written_at = data_end + (rng.randrange(1, 100) if damage == "torn" else 0)
            garbage = rng.randbytes(rng.randrange(1, 200))
            damaged[written_at : written_at + len(garbage)] = garbage
            assert len(damaged) == len(data)  # inside the zeros
        active.write_bytes(bytes(damaged))
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
        # What was cut is gone from the file, so no later recovery can bring it back.
        assert _data_end(active) == cut_at + len(codec.encode_batch(0, 0, [NewRecord(b"after")]))


@pytest.mark.parametrize("tail", ["whole", "partly filled"])
async def test_zeros_after_the_data_are_kept_and_written_over(
    written: tuple[Path, list[Record]],
    tail: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A crash leaves the active segment's zeros as they were (or, killed while they
    were being written, fewer of them): recovery cuts nothing, the next append overwrites
    them and the zeros are topped up to segment.bytes again."""
    original, records = written
    directory = _copy(original, tmp_path)
    active = _segment_files(directory)[-1]
    data_end = _data_end(active)
    if tail == "partly filled":
        with active.open("r+b") as file:
            file.truncate(data_end + 1234)
    with caplog.at_level(logging.WARNING):
        recovered, end_offset = await _read_all(directory)
    assert recovered == records
    assert end_offset == len(records)
    assert not caplog.messages
    assert active.stat().st_size == CONFIG.segment_bytes
    assert _data_end(active) > data_end


@pytest.mark.parametrize("zeros", [5000, 1, 2, 3])
async def test_sealed_segment_with_zeros_after_its_data_is_trimmed(
    written: tuple[Path, list[Record]], tmp_path: Path, zeros: int
) -> None:
    """A crash between a roll and its (unsynced) trim leaves zeros after a sealed
    segment's data: they are neither read nor counted, and the segment is trimmed.

    1-3 zeros (the power-loss simulation found it: data ending 1-3 bytes short of the
    zero-filled size) were taken for a torn batch's header, so the sealed segment was
    "damaged" and every read through it failed."""
    original, records = written
    directory = _copy(original, tmp_path)
    sealed = _segment_files(directory)[1]
    data_size = sealed.stat().st_size
    with sealed.open("ab") as file:
        file.write(bytes(zeros))
    async with _opened(directory) as engine:
        assert await engine.read("t", 0, 0, 10**6, 10**9) == records
        files = _segment_files(directory)
        data_bytes = sum(_data_end(f) for f in files)
        assert engine.partition_info("t", 0).size_bytes == data_bytes
        assert sealed.stat().st_size == data_size


async def test_a_prepared_segment_file_left_by_a_crash_is_removed(
    written: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    original, records = written
    directory = _copy(original, tmp_path)
    leftover = directory / "t" / "0" / "tmpk2j4h1.prepared"
    leftover.write_bytes(bytes(3000))
    assert (await _read_all(directory))[0] == records
    assert not leftover.exists()


async def test_a_segment_file_lost_in_a_power_cut_cuts_the_log_at_the_gap(
    written: tuple[Path, list[Record]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the power-loss simulation (test_powerloss.py): a roll renamed the prepared
    file into segment B and created segment C after it, and the power cut came before the
    directory fsync; the entry of C reached the disk, that of B did not. Nothing in B or C
    was acknowledged yet, but the partition read 0..B-1, then raised "offsets B..C-1 are
    missing" on every read through the gap, the acknowledged records before it included,
    and took appends after C. Now recovery removes what follows the gap (durably) and
    continues at B."""
    original, records = written
    directory = _copy(original, tmp_path)
    segments = _segment_files(directory)
    lost = segments[1]
    lost.unlink()
    lost.with_suffix(".index").unlink(missing_ok=True)
    lost.with_suffix(".timeindex").unlink(missing_ok=True)
    gap_start = int(lost.stem)
    with caplog.at_level(logging.WARNING):
        recovered, end_offset = await _read_all(directory)
    assert end_offset == gap_start
    assert recovered == records[:gap_start]
    # segment 0 was full, so the append after recovery rolled to a new segment at the gap
    assert [int(p.stem) for p in _segment_files(directory)] == [0, gap_start]
    assert any("missing" in m and "removed" in m for m in caplog.messages), caplog.messages
    assert (await _read_all(directory))[0][gap_start].value == b"after"


async def test_corrupt_batch_in_sealed_segment_is_a_read_error(
    written: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    original, records = written
    directory = _copy(original, tmp_path)
    sealed = _segment_files(directory)[1]
    data = bytearray(sealed.read_bytes())
    batches = codec.scan(bytes(data), 0, int(sealed.stem)).batches
    victim = batches[len(batches) // 2]
    data[victim.end_position - 3] ^= 0xFF  # inside the last record's value
    sealed.write_bytes(bytes(data))
    async with _opened(directory) as engine:
        with pytest.raises(CorruptRecord):
            await engine.read("t", 0, victim.base_offset, 10, 10**6)
        with pytest.raises(CorruptRecord):
            await engine.read("t", 0, 0, 10**6, 10**9)
        # Data before the bad batch, and after it in other segments, still reads.
        before = await engine.read("t", 0, 0, victim.base_offset, 10**9)
        assert before == records[: victim.base_offset]
        after_segment = int(_segment_files(directory)[2].stem)
        assert await engine.read("t", 0, after_segment, 10**6, 10**9) == records[after_segment:]


async def test_sealed_segment_with_a_torn_tail_is_a_read_error(
    written: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    original, _ = written
    directory = _copy(original, tmp_path)
    sealed = _segment_files(directory)[0]
    data = sealed.read_bytes()
    sealed.write_bytes(data[:-10])
    next_base = int(_segment_files(directory)[1].stem)
    async with _opened(directory) as engine:
        with pytest.raises(CorruptRecord):
            await engine.read("t", 0, next_base - 1, 10, 10**6)


@pytest.mark.parametrize("damage", ["missing", "garbage", "shifted", "empty"])
async def test_sealed_index_is_rebuilt(
    written: tuple[Path, list[Record]], tmp_path: Path, damage: str
) -> None:
    original, records = written
    directory = _copy(original, tmp_path)
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
        async with _opened(directory) as engine:
            count = min(3, len(records) - start)
            assert await engine.read("t", 0, start, count, 10**9) == records[start : start + count]
            stamp = records[start].timestamp_ms
            first = next(r.offset for r in records if r.timestamp_ms >= stamp)
            assert await engine.offset_for_timestamp("t", 0, stamp) == first
    if damage in ("missing", "empty"):
        assert all(p.with_suffix(".index").stat().st_size for p in _segment_files(directory)[:-1])


async def test_orphan_index_files_are_removed(
    written: tuple[Path, list[Record]], tmp_path: Path
) -> None:
    original, records = written
    directory = _copy(original, tmp_path)
    orphan = directory / "t" / "0" / f"{99999:020d}.index"
    orphan.write_bytes(b"\0" * 16)
    assert (await _read_all(directory))[0] == records
    assert not orphan.exists()
