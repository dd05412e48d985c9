"""The on-disk record batch format: pure functions over bytes, no I/O.

A segment file is a sequence of batches. One append writes one batch, so one checksum
covers all records of the append and a torn write is detected as a whole. Integers are
little-endian; lengths are unsigned unless marked signed.

    batch:
        batch_length(4)    bytes after this field (so a batch is 4 + batch_length bytes)
        crc32(4)           zlib.crc32 of every byte after this field
        base_offset(8)     offset of the first record
        record_count(4)    bits 0-30: >= 1, records get base_offset .. base_offset + count - 1;
                           bit 31 (TAGGED): a produce tag follows the timestamp
        timestamp_ms(8)    signed; log-append time shared by the batch's records
        tag(64)            only when TAGGED: idempotency_key(32) request_digest(32), the
                           Idempotency-Key (scoped, hashed) of the produce request that
                           wrote the batch and the request's fingerprint (storage.types
                           ProduceTag). Under the batch's checksum, so it is stored
                           exactly when the records are.
        records(...)       record_count records

    record:
        attributes(1)      the ValueFormat
        key_length(4)      signed; -1 for a null key
        value_length(4)
        header_count(2)
        key(key_length)
        value(value_length)
        headers(...)       header_count times: name_length(2) name(utf-8) value_length(4) value

The fixed part of a record is unpacked with one struct call, so decoding a batch of small
records costs a few C calls per record and no per-byte Python loop.

A segment file may end in zeros after its last batch (segments are zero-filled ahead of the
writer, storage.segment). A batch never starts with a zero length, so four zero bytes where a
batch would start mark the end of the data when every byte after them is zero too; any
other byte there is damage, cut like a torn batch.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from storage.errors import CorruptRecord
from storage.types import AppendResult, NewRecord, ProduceTag, Record, ValueFormat

BATCH_HEADER = struct.Struct("<IIqIq")
BATCH_HEADER_SIZE = BATCH_HEADER.size  # 28
_LENGTH_AND_CRC_SIZE = 8
_RECORD_HEADER = struct.Struct("<BiIH")
_HEADER_NAME_LENGTH = struct.Struct("<H")
_HEADER_VALUE_LENGTH = struct.Struct("<I")
_LENGTH_AND_CRC = struct.Struct("<II")
_AFTER_CRC = struct.Struct("<qIq")
_LENGTH = struct.Struct("<I")
_ZEROS = bytes(1024 * 1024)
TAGGED = 1 << 31
TAG_SIZE = 64
_TAG_HALF = TAG_SIZE // 2

# A batch may not be larger than this (a sanity bound that stops a corrupt length field
# from making recovery read gigabytes).
MAX_BATCH_BYTES = 256 * 1024 * 1024

_VALUE_FORMATS = {int(f): f for f in ValueFormat}
# `new_tuple(Record, (fields...))` builds a NamedTuple without its Python-level __new__:
# 0.7 k instead of about 2 k instructions, for the Record of every record read.
new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """Where a batch sits in a buffer and what it holds."""

    position: int
    size: int  # total bytes, length field included
    base_offset: int
    record_count: int
    timestamp_ms: int
    tagged: bool = False

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.record_count

    @property
    def records_position(self) -> int:
        return self.position + BATCH_HEADER_SIZE + (TAG_SIZE if self.tagged else 0)

    @property
    def end_position(self) -> int:
        return self.position + self.size


def encode_batch(
    base_offset: int,
    timestamp_ms: int,
    records: Sequence[NewRecord],
    tag: ProduceTag | None = None,
) -> bytes:
    """Encode `records` as one checksummed batch (layout in the module docstring), with
    the produce tag of the request that writes it, if any.

    Raises ValueError for what the format cannot hold (no records, a header name over
    65535 bytes or not encodable as UTF-8, a batch over MAX_BATCH_BYTES). Records are
    unpacked as tuples, not read by field name: a third fewer instructions per record.
    """
    if not records:
        raise ValueError("a batch needs at least one record")
    pack_record = _RECORD_HEADER.pack
    if tag is None:
        parts: list[bytes] = [_AFTER_CRC.pack(base_offset, len(records), timestamp_ms)]
    else:
        if len(tag.key) != _TAG_HALF or len(tag.request) != _TAG_HALF:
            raise ValueError(f"a produce tag is two {_TAG_HALF}-byte digests")
        parts = [_AFTER_CRC.pack(base_offset, len(records) | TAGGED, timestamp_ms), *tag]
    append = parts.append
    last_headers: tuple[tuple[str, bytes], ...] = ()
    last_encoded = b""
    try:
        for value, key, headers, value_format in records:
            if key is None and not headers:  # the common case, kept short
                append(pack_record(value_format, -1, len(value), 0))
                append(value)
                continue
            if key is None:
                append(pack_record(value_format, -1, len(value), len(headers)))
            else:
                append(pack_record(value_format, len(key), len(value), len(headers)))
                append(key)
            append(value)
            if headers is not last_headers:  # records often share one tuple (a schema stamp)
                last_headers, last_encoded = headers, _encode_headers(headers)
            append(last_encoded)
    except struct.error as exc:
        raise ValueError(f"record does not fit the batch format: {exc}") from exc
    body = b"".join(parts)
    if len(body) + 4 > MAX_BATCH_BYTES:
        raise ValueError(f"a batch may hold at most {MAX_BATCH_BYTES} bytes")
    return _LENGTH_AND_CRC.pack(len(body) + 4, zlib.crc32(body)) + body


def _encode_headers(headers: tuple[tuple[str, bytes], ...]) -> bytes:
    """A record's headers as the format lays them out (name_length name value_length value)."""
    parts: list[bytes] = []
    for name, header_value in headers:
        name_bytes = name.encode()
        parts += (
            _HEADER_NAME_LENGTH.pack(len(name_bytes)),
            name_bytes,
            _HEADER_VALUE_LENGTH.pack(len(header_value)),
            header_value,
        )
    return b"".join(parts)


def read_header(buf: bytes | memoryview | mmap.mmap, position: int) -> BatchHeader | None:
    """The header of the batch at `position`, or None if the buffer ends before it does.

    Only the header is checked (a plausible length); the checksum is checked by
    `check_batch`. Raises CorruptRecord for an impossible length.
    """
    if len(buf) - position < BATCH_HEADER_SIZE:
        return None
    length, _crc, base_offset, count, timestamp_ms = BATCH_HEADER.unpack_from(buf, position)
    tagged = count >= TAGGED
    if tagged:
        count -= TAGGED
    fixed = BATCH_HEADER_SIZE - 4 + (TAG_SIZE if tagged else 0)
    if length < fixed or length > MAX_BATCH_BYTES or count == 0:
        raise CorruptRecord(f"impossible batch header at position {position}")
    return BatchHeader(position, length + 4, base_offset, count, timestamp_ms, tagged)


def batch_tag(buf: bytes | memoryview | mmap.mmap, header: BatchHeader) -> ProduceTag | None:
    """The produce tag a batch carries (None if it has none)."""
    if not header.tagged:
        return None
    start = header.position + BATCH_HEADER_SIZE
    return ProduceTag(
        bytes(buf[start : start + _TAG_HALF]), bytes(buf[start + _TAG_HALF : start + TAG_SIZE])
    )


def check_batch(buf: bytes | memoryview | mmap.mmap, header: BatchHeader) -> None:
    """Raise CorruptRecord unless the batch's checksum matches its bytes."""
    (crc,) = _LENGTH.unpack_from(buf, header.position + 4)
    body = memoryview(buf)[header.position + _LENGTH_AND_CRC_SIZE : header.end_position]
    if zlib.crc32(body) != crc:
        raise CorruptRecord(
            f"checksum mismatch in batch at offset {header.base_offset} "
            f"(position {header.position})"
        )


def tagged_batches(
    buf: bytes | memoryview, since_ms: int
) -> tuple[list[tuple[ProduceTag, AppendResult]], int]:
    """The produce tags (with each batch's offsets and time) of the batches whose headers
    lie whole in `buf`, written at or after `since_ms`, and the position after the last
    batch walked (beyond `buf` when its records run past the end).

    Reads headers only, with no object per untagged batch and no checksum: for batches
    recovery already accepted. Raises CorruptRecord for an impossible header.
    """
    found: list[tuple[ProduceTag, AppendResult]] = []
    unpack = BATCH_HEADER.unpack_from
    end = len(buf)
    position = 0
    while position + BATCH_HEADER_SIZE <= end:
        length, _crc, base_offset, count, timestamp_ms = unpack(buf, position)
        if length < BATCH_HEADER_SIZE - 4 or length > MAX_BATCH_BYTES or count & ~TAGGED == 0:
            raise CorruptRecord(f"impossible batch header at position {position}")
        if count & TAGGED:
            start = position + BATCH_HEADER_SIZE
            if start + TAG_SIZE > end:
                break
            if timestamp_ms >= since_ms:
                tag = ProduceTag(
                    bytes(buf[start : start + _TAG_HALF]),
                    bytes(buf[start + _TAG_HALF : start + TAG_SIZE]),
                )
                found.append((tag, AppendResult(base_offset, count & ~TAGGED, timestamp_ms)))
        position += length + 4
    return found, position


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The valid prefix of a buffer: its batches, where it ends, and why it stops."""

    batches: list[BatchHeader]  # empty when the caller visited them instead
    last: BatchHeader | None  # the last valid batch
    valid_end: int  # position just after the last valid batch
    # None when the buffer ends at a batch boundary, or only zeros follow valid_end
    error: str | None


def scan(
    buf: bytes | memoryview | mmap.mmap,
    start: int = 0,
    expected_offset: int | None = None,
    visit: Callable[[BatchHeader], None] | None = None,
) -> ScanResult:
    """Walk batches from `start`, checking length, checksum and offset continuity.

    Stops at the first torn, corrupt or out-of-sequence batch; that is the recovery cut
    point. Zeros from a batch boundary to the end of `buf` are the unwritten rest of a
    zero-filled file: the scan ends there without an error. `expected_offset` is the base offset the first batch must have (the next ones
    must follow densely). With `visit`, each valid batch goes to it instead of into
    `batches`, so a whole segment scans in constant memory.
    """
    batches: list[BatchHeader] = []
    keep = batches.append if visit is None else visit
    last: BatchHeader | None = None
    position = start
    end = len(buf)
    error: str | None = None
    while position < end:
        # a zero length, or fewer than its 4 bytes left and all zero: the zeros after the data
        if (
            _LENGTH.unpack_from(buf, position)[0] == 0
            if end - position >= 4
            else not any(buf[position:end])
        ):
            if not is_zero(buf, position, end):
                error = f"non-zero bytes after the end of the data at position {position}"
            break
        try:
            header = read_header(buf, position)
        except CorruptRecord as exc:
            error = str(exc)
            break
        if header is None or header.end_position > end:
            error = f"torn batch at position {position}"
            break
        try:
            check_batch(buf, header)
        except CorruptRecord as exc:
            error = str(exc)
            break
        if expected_offset is not None and header.base_offset != expected_offset:
            error = (
                f"batch at position {position} has base offset {header.base_offset}, "
                f"expected {expected_offset}"
            )
            break
        keep(header)
        last = header
        expected_offset = header.next_offset
        position = header.end_position
    return ScanResult(batches, last, position, error)


def is_zero(buf: bytes | memoryview | mmap.mmap, start: int, end: int) -> bool:
    """Whether buf[start:end] holds only zero bytes (compared a MiB at a time, in C)."""
    view = memoryview(buf)
    for position in range(start, end, len(_ZEROS)):
        piece = bytes(view[position : min(end, position + len(_ZEROS))])
        if piece != _ZEROS[: len(piece)]:
            return False
    return True


def decode_batch(
    buf: bytes | memoryview,
    header: BatchHeader,
    first_offset: int = 0,
    max_records: int | None = None,
) -> list[Record]:
    """Decode the records of a checked batch, skipping those below `first_offset`.

    Raises CorruptRecord if the record structure does not fill the batch exactly (which a
    matching checksum makes a bug or a forged batch, never a torn write).
    """
    view = memoryview(buf)
    unpack_record = _RECORD_HEADER.unpack_from
    unpack_name = _HEADER_NAME_LENGTH.unpack_from
    unpack_value = _HEADER_VALUE_LENGTH.unpack_from
    formats = _VALUE_FORMATS
    timestamp_ms = header.timestamp_ms
    position = header.records_position
    end = header.end_position
    offset = header.base_offset
    records: list[Record] = []
    limit = header.record_count if max_records is None else max_records
    try:
        for _ in range(header.record_count):
            attributes, key_length, value_length, header_count = unpack_record(view, position)
            position += 11
            if key_length < 0:
                key = None
            else:
                key = bytes(view[position : position + key_length])
                position += key_length
            value = bytes(view[position : position + value_length])
            position += value_length
            headers: tuple[tuple[str, bytes], ...] = ()
            if header_count:
                parsed = []
                for _h in range(header_count):
                    (name_length,) = unpack_name(view, position)
                    position += 2
                    name = str(view[position : position + name_length], "utf-8")
                    position += name_length
                    (header_value_length,) = unpack_value(view, position)
                    position += 4
                    parsed.append((name, bytes(view[position : position + header_value_length])))
                    position += header_value_length
                headers = tuple(parsed)
            if position > end:
                break
            if offset >= first_offset:
                records.append(
                    new_tuple(
                        Record, (offset, timestamp_ms, value, key, headers, formats[attributes])
                    )
                )
                if len(records) >= limit:
                    return records
            offset += 1
    except (struct.error, KeyError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"malformed record in batch at offset {header.base_offset}") from exc
    if position != end:
        raise CorruptRecord(f"malformed record in batch at offset {header.base_offset}")
    return records


@dataclass(frozen=True, slots=True)
class Decoded:
    records: list[Record]
    next_position: int  # the batch holding the offset after the last record, or where bytes ran out
    used_bytes: int  # key and value bytes of `records`
    full: bool  # stopped by max_records or max_bytes rather than by the end of the buffer


def decode(
    buf: bytes | memoryview,
    first_offset: int,
    max_records: int,
    max_bytes: int,
    *,
    at_least_one: bool = True,
    verify: bool = True,
) -> Decoded:
    """Decode checked batches from the start of `buf` until a limit or the buffer's end.

    Returns the records with offset >= `first_offset`: at most `max_records`, stopping
    before keys and values exceed `max_bytes` (though the first record always fits when
    `at_least_one`). A batch cut by the end of `buf` is left for the caller to read in
    full; a corrupt batch raises CorruptRecord. `verify=False` skips the checksum, for
    batches that never left memory.
    """
    records: list[Record] = []
    used_bytes = 0
    position = 0
    end = len(buf)
    while position < end:
        header = read_header(buf, position)
        if header is None or header.end_position > end:
            break
        if header.next_offset <= first_offset:
            position = header.end_position
            continue
        if verify:
            check_batch(buf, header)
        for record in decode_batch(buf, header, first_offset, max_records - len(records)):
            size = len(record.value) + (len(record.key) if record.key is not None else 0)
            if used_bytes + size > max_bytes and (records or not at_least_one):
                return Decoded(records, position, used_bytes, True)
            used_bytes += size
            records.append(record)
        if len(records) >= max_records:
            full_batch = records[-1].offset + 1 == header.next_offset
            next_position = header.end_position if full_batch else position
            return Decoded(records, next_position, used_bytes, True)
        position = header.end_position
    return Decoded(records, position, used_bytes, False)


def encode_records(records: Sequence[Record]) -> list[bytes]:
    """Records read back (offsets and timestamps already assigned) as stored batches: one
    per run of consecutive records sharing a timestamp, so a backend that keeps records
    one by one (JetStream) can answer `Backend.read_batches` in this format too."""
    out: list[bytes] = []
    start = 0
    for i in range(1, len(records) + 1):
        if i == len(records) or records[i].timestamp_ms != records[start].timestamp_ms:
            run = records[start:i]
            first = run[0]
            out.append(
                encode_batch(
                    first.offset,
                    first.timestamp_ms,
                    [NewRecord(r.value, r.key, r.headers, r.value_format) for r in run],
                )
            )
            start = i
    return out


def take_batches(batches: Sequence[bytes], max_bytes: int) -> bytes:
    """The leading batches that fit in `max_bytes` (always the first, if any), joined."""
    size = 0
    count = 0
    for batch in batches:
        if count and size + len(batch) > max_bytes:
            break
        size += len(batch)
        count += 1
    return b"".join(batches[:count])
