"""Kafka's record batch v2 (magic 2) to and from logway's records: pure, no I/O.

    batch (big-endian):
        base_offset(8) batch_length(4)  batch_length counts the bytes after itself
        partition_leader_epoch(4) magic(1) = 2
        crc(4)                          CRC-32C of every byte after this field
        attributes(2)                   bits 0-2 compression, 3 timestamp type
                                        (1 = log-append time), 4 transactional, 5 control
        last_offset_delta(4) base_timestamp(8) max_timestamp(8)
        producer_id(8) producer_epoch(2) base_sequence(4) record_count(4)
        records                         compressed as one block when bits 0-2 are set
    record (zigzag varints):
        length, attributes(1), timestamp_delta, offset_delta,
        key_length (-1 null), key, value_length (-1 null), value,
        header_count, then per header: key_length, key (UTF-8), value_length (-1 null), value

logway stamps every batch with its log-append time (one timestamp per stored batch), so
batches it serves say so in bit 3 and carry that time as base and max timestamp; clients
then report it for every record, as they do for a Kafka topic with
`message.timestamp.type=LogAppendTime`. A producer's own timestamps are not kept.

Values: a null value (a tombstone) and a null header value are stored as empty bytes (the
log has no null value). A value that is valid JSON is stored as JSON, so HTTP readers get
it as `value`; anything else as bytes (`value_base64`): docs/kafka.md says why.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import crc32c
import orjson

from gateway.kafka.compression import (
    BadCompressedData,
    UnsupportedCompression,
    decompress,
)
from gateway.kafka.errors import ErrorCode
from gateway.kafka.schema import uvarint
from storage.types import NewRecord, Record, ValueFormat

_PREFIX = struct.Struct(">qiibI")  # base_offset batch_length leader_epoch magic crc
_AFTER_CRC = struct.Struct(">hiqqqhii")  # attributes .. record_count
BATCH_OVERHEAD = _PREFIX.size + _AFTER_CRC.size  # 61
_CRC_START = _PREFIX.size  # 21
MAGIC = 2
COMPRESSION_MASK = 0x07
LOG_APPEND_TIME = 0x08
TRANSACTIONAL = 0x10
CONTROL = 0x20
NO_PRODUCER_ID = -1

_JSON_ERROR = orjson.JSONDecodeError
_loads = orjson.loads


class InvalidBatch(ValueError):
    """A produced batch that logway refuses, with the error code to answer."""

    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass(frozen=True, slots=True)
class ProducedBatch:
    """One batch of a produce request, checked and decoded."""

    records: list[NewRecord]
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def last_sequence(self) -> int:
        return (self.base_sequence + len(self.records) - 1) & 0x7FFF_FFFF


# The bytes a JSON document can start with (RFC 8259: whitespace, then a value). Any other
# first byte (text, Avro's and Protobuf's zero magic byte) is BYTES without a parse, which
# matters: a failed orjson.loads costs a raised exception per record.
_JSON_FIRST_BYTES = frozenset(b' \t\r\n{["-0123456789tfn')


def value_format_of(value: bytes) -> ValueFormat:
    """JSON when the bytes are one JSON document (RFC 8259, as orjson reads it), else BYTES."""
    if not value or value[0] not in _JSON_FIRST_BYTES:
        return ValueFormat.BYTES
    try:
        _loads(value)
    except _JSON_ERROR:
        return ValueFormat.BYTES
    return ValueFormat.JSON


def _varint(buf: bytes, position: int) -> tuple[int, int]:
    """A zigzag varint (up to 64 bits) at `position`, and the position after it."""
    byte = buf[position]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), position + 1
    result = byte & 0x7F
    shift = 7
    while True:
        position += 1
        byte = buf[position]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), position + 1
        shift += 7
        if shift > 63:
            raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, "a varint longer than 10 bytes")


def decode_produced(data: bytes | memoryview, max_batch_bytes: int) -> ProducedBatch:
    """Check and decode the records of one partition in a produce request.

    Raises InvalidBatch: not exactly one magic-2 batch, a CRC or structure that does not
    add up, an unknown compression codec, a transactional or control batch (logway has
    no transactions yet), or records that decompress to more than `max_batch_bytes`.
    """
    if len(data) < BATCH_OVERHEAD:
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, "a record batch is at least 61 bytes")
    _base, batch_length, _epoch, magic, crc = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise InvalidBatch(
            ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
            f"record batches must be magic 2 (message format v2), not {magic}",
        )
    if batch_length + 12 != len(data):
        raise InvalidBatch(
            ErrorCode.INVALID_RECORD,
            "a produce request carries exactly one record batch per partition",
        )
    view = memoryview(data)
    if crc32c.crc32c(view[_CRC_START:]) != crc:
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, "the record batch fails its CRC-32C")
    (
        attributes,
        last_offset_delta,
        _base_timestamp,
        _max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    ) = _AFTER_CRC.unpack_from(data, _CRC_START)
    if attributes & (TRANSACTIONAL | CONTROL):
        raise InvalidBatch(
            ErrorCode.INVALID_RECORD, "transactional and control batches are not supported yet"
        )
    if count <= 0 or last_offset_delta != count - 1:
        raise InvalidBatch(
            ErrorCode.INVALID_RECORD,
            f"a batch of {count} records with last offset delta {last_offset_delta}",
        )
    body = view[BATCH_OVERHEAD:]
    codec_id = attributes & COMPRESSION_MASK
    try:
        buf = decompress(codec_id, body, max_batch_bytes) if codec_id else bytes(body)
    except UnsupportedCompression as exc:
        raise InvalidBatch(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, str(exc)) from None
    except BadCompressedData as exc:
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, str(exc)) from None
    try:
        records = _decode_records(buf, count)
    except (IndexError, UnicodeDecodeError) as exc:
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, f"malformed record: {exc}") from None
    return ProducedBatch(records, producer_id, producer_epoch, base_sequence)


_ONE_BYTE = [(b >> 1) ^ -(b & 1) for b in range(0x80)]  # zigzag varints that fit one byte


def _decode_records(buf: bytes, count: int) -> list[NewRecord]:
    """The records of a batch. Varints of one byte (most lengths and deltas of small
    records) are read inline from a table: a call per field was a third of the cost."""
    records: list[NewRecord] = []
    append = records.append
    position = 0
    varint = _varint
    one = _ONE_BYTE
    value_format = value_format_of
    for expected_delta in range(count):
        byte = buf[position]
        if byte < 0x80:
            length, position = one[byte], position + 1
        elif buf[position + 1] < 0x80:  # two bytes: records of 64 B to 8 KiB
            raw = (byte & 0x7F) | buf[position + 1] << 7
            length, position = (raw >> 1) ^ -(raw & 1), position + 2
        else:
            length, position = varint(buf, position)
        end = position + length
        if length <= 0 or end > len(buf):
            raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, "a record overruns its batch")
        position += 1  # the attributes byte (unused in v2); then skip the timestamp delta,
        while buf[position] >= 0x80:  # unused: logway stamps log-append time
            position += 1
        position += 1
        byte = buf[position]
        if byte < 0x80:
            offset_delta, position = one[byte], position + 1
        else:
            offset_delta, position = varint(buf, position)
        if offset_delta != expected_delta:
            raise InvalidBatch(
                ErrorCode.INVALID_RECORD,
                f"record {expected_delta} has offset delta {offset_delta}",
            )
        byte = buf[position]
        if byte < 0x80:
            key_length, position = one[byte], position + 1
        else:
            key_length, position = varint(buf, position)
        key: bytes | None = None
        if key_length >= 0:
            key = buf[position : position + key_length]
            position += key_length
        byte = buf[position]
        if byte < 0x80:
            value_length, position = one[byte], position + 1
        elif buf[position + 1] < 0x80:
            raw = (byte & 0x7F) | buf[position + 1] << 7
            value_length, position = (raw >> 1) ^ -(raw & 1), position + 2
        else:
            value_length, position = varint(buf, position)
        value = b""
        if value_length >= 0:
            value = buf[position : position + value_length]
            position += value_length
        headers: tuple[tuple[str, bytes], ...] = ()
        if buf[position] == 0:  # no headers
            position += 1
        else:
            headers, position = _headers(buf, position)
        if position != end:
            raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, "a record's length does not add up")
        append(NewRecord(value, key, headers, value_format(value)))
    if position != len(buf):
        raise InvalidBatch(ErrorCode.CORRUPT_MESSAGE, "bytes after the last record")
    return records


def _headers(buf: bytes, position: int) -> tuple[tuple[tuple[str, bytes], ...], int]:
    count, position = _varint(buf, position)
    parsed = []
    for _ in range(count):
        name_length, position = _varint(buf, position)
        name = str(buf[position : position + name_length], "utf-8")
        position += name_length
        value_length, position = _varint(buf, position)
        value = b""
        if value_length >= 0:
            value = buf[position : position + value_length]
            position += value_length
        parsed.append((name, value))
    return tuple(parsed), position


def _zigzag(number: int) -> bytes:
    return uvarint((number << 1) ^ (number >> 63))


_SMALL_COUNT = 1 << 14
_SMALL = [_zigzag(n) for n in range(_SMALL_COUNT)]  # lengths and deltas below 16 KiB
_NULL = _zigzag(-1)


def encode_batch(base_offset: int, timestamp_ms: int, records: Sequence[Record]) -> bytes:
    """A record batch v2 of `records` (consecutive offsets from `base_offset`), uncompressed,
    stamped with log-append time `timestamp_ms`."""
    small = _SMALL
    limit = _SMALL_COUNT
    zigzag = _zigzag
    parts: list[bytes] = []
    append = parts.append
    for delta, record in enumerate(records):
        key = record.key
        value = record.value
        size = len(value)
        head = b"\x00\x00" + (small[delta] if delta < limit else zigzag(delta))
        if key is None:
            head += _NULL
        else:
            head += (small[len(key)] if len(key) < limit else zigzag(len(key))) + key
        head += small[size] if size < limit else zigzag(size)
        headers = record.headers
        if headers:
            tail = [small[len(headers)] if len(headers) < limit else zigzag(len(headers))]
            for name, header_value in headers:
                name_bytes = name.encode()
                tail += (zigzag(len(name_bytes)), name_bytes)
                tail += (zigzag(len(header_value)), header_value)
            trailer = b"".join(tail)
        else:
            trailer = b"\x00"
        length = len(head) + size + len(trailer)
        append(small[length] if length < limit else zigzag(length))
        append(head)
        append(value)
        append(trailer)
    body = _AFTER_CRC.pack(
        LOG_APPEND_TIME,
        len(records) - 1,
        timestamp_ms,
        timestamp_ms,
        NO_PRODUCER_ID,
        -1,
        -1,
        len(records),
    ) + b"".join(parts)
    return _PREFIX.pack(base_offset, len(body) + 9, 0, MAGIC, crc32c.crc32c(body)) + body
