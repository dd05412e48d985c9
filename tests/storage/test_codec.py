"""The batch codec on bytes alone: round trips, limits, and every kind of damage detected."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import codec
from storage.errors import CorruptRecord
from storage.types import NewRecord, Record, ValueFormat

header_names = st.text(max_size=20)
new_records = st.builds(
    NewRecord,
    value=st.binary(max_size=300),
    key=st.none() | st.binary(max_size=50),
    headers=st.lists(st.tuples(header_names, st.binary(max_size=30)), max_size=3).map(tuple),
    value_format=st.sampled_from(ValueFormat),
)


def _expected(records: list[NewRecord], base_offset: int, timestamp_ms: int) -> list[object]:
    return [
        (base_offset + i, timestamp_ms, r.value, r.key, r.headers, r.value_format)
        for i, r in enumerate(records)
    ]


def _as_tuples(records: list[Record]) -> list[object]:
    return [(r.offset, r.timestamp_ms, r.value, r.key, r.headers, r.value_format) for r in records]


@given(
    st.lists(new_records, min_size=1, max_size=20),
    st.integers(0, 2**62),
    st.integers(-(2**62), 2**62),
)
def test_batch_round_trip(records: list[NewRecord], base_offset: int, timestamp_ms: int) -> None:
    data = codec.encode_batch(base_offset, timestamp_ms, records)
    header = codec.read_header(data, 0)
    assert header is not None
    assert (header.size, header.base_offset, header.record_count) == (
        len(data),
        base_offset,
        len(records),
    )
    codec.check_batch(data, header)
    decoded = codec.decode_batch(data, header)
    assert _as_tuples(decoded) == _expected(records, base_offset, timestamp_ms)
    assert isinstance(decoded[0].value_format, ValueFormat)


@given(st.lists(st.lists(new_records, min_size=1, max_size=5), min_size=1, max_size=8))
def test_scan_and_decode_many_batches(batches: list[list[NewRecord]]) -> None:
    buf = b""
    offset = 10
    expected: list[object] = []
    for i, records in enumerate(batches):
        buf += codec.encode_batch(offset, 1000 + i, records)
        expected += _expected(records, offset, 1000 + i)
        offset += len(records)
    result = codec.scan(buf, 0, 10)
    assert result.error is None
    assert result.valid_end == len(buf)
    assert [b.base_offset for b in result.batches] == sorted(
        {b.base_offset for b in result.batches}
    )
    assert result.batches[0].base_offset == 10
    decoded = codec.decode(buf, 0, 10**9, 10**12)
    assert _as_tuples(decoded.records) == expected
    assert not decoded.full
    assert decoded.next_position == len(buf)


def _batches(count: int, per_batch: int = 3, value_size: int = 10) -> bytes:
    return b"".join(
        codec.encode_batch(
            i * per_batch,
            i,
            [NewRecord(bytes([i]) * value_size, key=b"k") for _ in range(per_batch)],
        )
        for i in range(count)
    )


def test_decode_limits() -> None:
    buf = _batches(4)  # offsets 0..11, each record 11 bytes of key + value
    by_count = codec.decode(buf, 4, 5, 10**9)
    assert [r.offset for r in by_count.records] == [4, 5, 6, 7, 8]
    assert by_count.full
    by_bytes = codec.decode(buf, 0, 100, 33)
    assert [r.offset for r in by_bytes.records] == [0, 1, 2]
    one = codec.decode(buf, 0, 100, 1)
    assert [r.offset for r in one.records] == [0]  # at least one record
    none = codec.decode(buf, 0, 100, 1, at_least_one=False)
    assert none.records == []
    assert none.full


def test_decode_leaves_a_cut_batch_for_the_caller() -> None:
    buf = _batches(3)
    second = codec.read_header(buf, 0)
    assert second is not None
    cut = codec.decode(buf[: second.end_position + 5], 0, 100, 10**9)
    assert [r.offset for r in cut.records] == [0, 1, 2]
    assert cut.next_position == second.end_position
    assert not cut.full


def test_every_flipped_byte_is_detected() -> None:
    data = codec.encode_batch(7, 123, [NewRecord(b"value", key=b"key", headers=(("h", b"1"),))])
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x41
        result = codec.scan(bytes(damaged), 0, 7)
        assert result.error is not None, f"flip at {i} went unnoticed"
        assert result.valid_end == 0
        assert result.batches == []
        try:
            decoded = codec.decode(bytes(damaged), 0, 10, 10**9)
        except CorruptRecord:
            continue
        assert decoded.records == []  # a damaged length reads as "not all here yet"


def test_scan_cuts_at_the_batch_before_damage() -> None:
    buf = _batches(5)
    boundaries = [b.position for b in codec.scan(buf).batches] + [len(buf)]
    for cut in range(len(buf)):
        result = codec.scan(buf[:cut], 0, 0)
        expected_end = max(b for b in boundaries if b <= cut)
        assert result.valid_end == expected_end
        assert (result.error is None) == (cut == expected_end)


def test_scan_refuses_offsets_out_of_sequence() -> None:
    buf = codec.encode_batch(0, 1, [NewRecord(b"a")]) + codec.encode_batch(5, 1, [NewRecord(b"b")])
    result = codec.scan(buf, 0, 0)
    assert len(result.batches) == 1
    assert result.error is not None
    assert "expected 1" in result.error


def test_impossible_length_is_corrupt_not_a_huge_read() -> None:
    data = bytearray(codec.encode_batch(0, 1, [NewRecord(b"a")]))
    struct.pack_into("<I", data, 0, 2**31)
    with pytest.raises(CorruptRecord):
        codec.read_header(bytes(data), 0)
    assert codec.scan(bytes(data)).valid_end == 0


def test_checksummed_but_malformed_records_are_corrupt() -> None:
    """A batch whose checksum matches but whose records overrun it is refused, not served."""
    good = codec.encode_batch(0, 1, [NewRecord(b"abc")])
    body = bytearray(good[8:])
    struct.pack_into("<I", body, 24 + 5, 1000)  # value_length of the first record
    forged = struct.pack("<II", len(body) + 4, zlib.crc32(body)) + bytes(body)
    header = codec.read_header(forged, 0)
    assert header is not None
    codec.check_batch(forged, header)
    with pytest.raises(CorruptRecord):
        codec.decode_batch(forged, header)


def test_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        codec.encode_batch(0, 0, [])


def test_what_the_format_cannot_hold_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        codec.encode_batch(0, 0, [NewRecord(b"", headers=(("n" * 70_000, b""),))])
    with pytest.raises(UnicodeEncodeError):  # a ValueError
        codec.encode_batch(0, 0, [NewRecord(b"", headers=(("\ud800", b""),))])


@given(
    st.lists(st.lists(new_records, min_size=1, max_size=3), max_size=4),
    st.integers(4, 5000),
    st.none() | st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
)
def test_zeros_after_the_data_end_the_scan(
    batches: list[list[NewRecord]], zeros: int, stray: tuple[int, int] | None
) -> None:
    """Zeros after the last batch are the end of the data, not damage; one non-zero byte
    anywhere in them is damage, cut at the end of the data."""
    data = b""
    offset = 0
    for records in batches:
        data += codec.encode_batch(offset, 1, records)
        offset += len(records)
    buf = bytearray(data + bytes(zeros))
    if stray is not None:
        buf[len(data) + stray[0] % zeros] = stray[1]
    result = codec.scan(bytes(buf))
    assert result.valid_end == len(data)
    assert len(result.batches) == len(batches)
    assert (result.error is None) == (stray is None)


def test_zeros_inside_a_batch_are_a_torn_batch() -> None:
    data = _batches(3)
    first = codec.read_header(data, 0)
    assert first is not None
    torn = data[: first.end_position + 10] + bytes(len(data))
    result = codec.scan(torn, 0, 0)
    assert result.valid_end == first.end_position
    assert result.error is not None


def test_records_sharing_one_headers_tuple_encode_as_if_each_had_its_own() -> None:
    shared = (("logway-schema-version", b"3"), ("h\u00e9", b""))
    records = [NewRecord(b"%d" % i, None if i % 2 else b"k", shared) for i in range(4)]
    own = [NewRecord(r.value, r.key, tuple((n, v) for n, v in shared)) for r in records]
    own.insert(2, NewRecord(b"x", None, (("other", b"1"),)))
    records.insert(2, own[2])
    assert all(r.headers is shared for i, r in enumerate(records) if i != 2)
    data = codec.encode_batch(0, 0, records)
    assert data == codec.encode_batch(0, 0, own)
    header = codec.read_header(data, 0)
    assert header is not None
    assert [r.headers for r in codec.decode_batch(data, header)] == [r.headers for r in own]
