"""The sparse offset/time index on values alone: lookups, persistence and damage refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage import codec
from storage.index import SparseIndex
from storage.types import NewRecord


def _segment(
    batch_sizes: list[int], base_offset: int = 100
) -> tuple[bytes, list[codec.BatchHeader]]:
    data = b""
    offset = base_offset
    for i, count in enumerate(batch_sizes):
        data += codec.encode_batch(offset, 1000 + 10 * i, [NewRecord(b"x" * 500)] * count)
        offset += count
    return data, codec.scan(data, 0, base_offset).batches


@given(st.lists(st.integers(1, 12), min_size=1, max_size=60), st.data())
def test_lookup_lands_on_a_batch_at_or_before_the_offset(
    batch_sizes: list[int], data: st.DataObject
) -> None:
    _, batches = _segment(batch_sizes)
    index = SparseIndex.build(batches)
    positions = {b.position: b for b in batches}
    offset = data.draw(st.integers(100, batches[-1].next_offset - 1))
    indexed_offset, position = index.lookup(offset)
    batch = positions[position]
    assert batch.base_offset == indexed_offset <= offset
    # Sparse, but never more than one interval (plus one batch) before the target.
    target = next(b for b in batches if b.base_offset <= offset < b.next_offset)
    assert target.position - position < index.interval_bytes + batch.size


@given(st.lists(st.integers(1, 12), min_size=1, max_size=60), st.integers(900, 1700))
def test_lookup_time_starts_before_the_first_match(batch_sizes: list[int], wanted: int) -> None:
    _, batches = _segment(batch_sizes)
    index = SparseIndex.build(batches)
    _, start = index.lookup_time(wanted)
    first_match = next((b for b in batches if b.timestamp_ms >= wanted), None)
    if first_match is not None:
        assert start <= first_match.position


def test_entries_are_sparse() -> None:
    _, batches = _segment([1] * 100)  # ~540 bytes each
    index = SparseIndex.build(batches)
    assert 10 <= len(index) <= 15
    assert index.positions[0] == 0


def test_files_round_trip_and_damage_is_refused() -> None:
    data, batches = _segment([3] * 50)
    index = SparseIndex.build(batches)
    offset_bytes, time_bytes = index.encode()
    loaded = SparseIndex.from_files(offset_bytes, time_bytes, 100, len(data))
    assert loaded is not None
    assert (loaded.offsets, loaded.positions, loaded.timestamps) == (
        index.offsets,
        index.positions,
        index.timestamps,
    )
    assert SparseIndex.from_files(offset_bytes[:-3], time_bytes[:-3], 100, len(data)) is None
    assert SparseIndex.from_files(offset_bytes, time_bytes[:-16], 100, len(data)) is None
    assert SparseIndex.from_files(offset_bytes, time_bytes, 101, len(data)) is None
    assert SparseIndex.from_files(offset_bytes, time_bytes, 100, 100) is None  # past the end
    assert SparseIndex.from_files(b"", b"", 100, len(data)) is None
    swapped = offset_bytes[16:32] + offset_bytes[:16] + offset_bytes[32:]
    assert SparseIndex.from_files(swapped, time_bytes, 100, len(data)) is None
    assert SparseIndex.from_files(b"", b"", 100, 0) is not None  # an empty segment


def test_truncate_forgets_entries_of_a_failed_write() -> None:
    _, batches = _segment([3] * 50)
    index = SparseIndex.build(batches)
    cut = index.positions[5]
    index.truncate(cut)
    assert index.positions[-1] < cut
    assert len(index) == 5
    index.maybe_add(999, cut, 5000)
    assert index.positions[-1] == cut
