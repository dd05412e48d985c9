"""Record batch v2 both ways, checked against kafka-python's encoder and parser."""

from __future__ import annotations

import struct

import crc32c
import pytest
from kafka.record.default_records import DefaultRecordBatch

from gateway.kafka.errors import ErrorCode
from gateway.kafka.records import InvalidBatch, decode_produced, encode_batch, value_format_of
from storage.types import Record, ValueFormat
from tests.gateway.kafka.batches import CODECS, produced_batch
from tests.gateway.kafka.batches import Record as KafkaRecord

MiB = 1024 * 1024
RECORDS: list[KafkaRecord] = [
    (b"order-1", b'{"total": 12.5}', [("trace", b"abc"), ("trace", b"def")]),
    (None, b"\x00\x01binary", []),
    (b"", b"", [("empty", b"")]),
    (b"k" * 300, b"v" * 70_000, [("\u00e9", b"\xff")]),
    (b"tomb", None, [("null", None)]),
]


@pytest.mark.parametrize("compression", sorted(CODECS))
def test_a_producers_batch_decodes_exactly(compression: str) -> None:
    data = produced_batch(RECORDS, compression=compression, producer_id=7, producer_epoch=1,
                          base_sequence=40)  # fmt: skip
    batch = decode_produced(data, 16 * MiB)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (7, 1, 40)
    assert batch.last_sequence == 44
    got = [(r.key, r.value, list(r.headers)) for r in batch.records]
    assert got == [
        (b"order-1", b'{"total": 12.5}', [("trace", b"abc"), ("trace", b"def")]),
        (None, b"\x00\x01binary", []),
        (b"", b"", [("empty", b"")]),
        (b"k" * 300, b"v" * 70_000, [("\u00e9", b"\xff")]),
        (b"tomb", b"", [("null", b"")]),  # null value and header value: stored empty
    ]
    assert [r.value_format for r in batch.records] == [
        ValueFormat.JSON, ValueFormat.BYTES, ValueFormat.BYTES, ValueFormat.BYTES,
        ValueFormat.BYTES,
    ]  # fmt: skip


def test_java_xerial_snappy_framing_decodes() -> None:
    import cramjam

    plain = produced_batch(RECORDS[:2])
    records = plain[61:]
    block = bytes(cramjam.snappy.compress_raw(records))
    framed = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1) + struct.pack(">i", len(block)) + block
    attributes_and_rest = bytearray(plain[21:61])
    attributes_and_rest[1] |= 2  # snappy
    body = bytes(attributes_and_rest) + framed
    data = struct.pack(">qiibI", 0, len(body) + 9, -1, 2, crc32c.crc32c(body)) + body
    assert [r.value for r in decode_produced(data, MiB).records] == [b'{"total": 12.5}',
                                                                      b"\x00\x01binary"]  # fmt: skip


def _refused(data: bytes, max_bytes: int = MiB) -> InvalidBatch:
    with pytest.raises(InvalidBatch) as caught:
        decode_produced(data, max_bytes)
    return caught.value


def _with_attributes(data: bytes, attributes: int) -> bytes:
    body = struct.pack(">h", attributes) + data[23:]
    return data[:17] + struct.pack(">I", crc32c.crc32c(body)) + body


def test_bad_batches_get_the_brokers_error_codes() -> None:
    good = produced_batch(RECORDS[:1])
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    assert _refused(flipped).error_code is ErrorCode.CORRUPT_MESSAGE
    assert _refused(good[:40]).error_code is ErrorCode.CORRUPT_MESSAGE
    assert _refused(good + good).error_code is ErrorCode.INVALID_RECORD  # two batches
    magic_1 = good[:16] + b"\x01" + good[17:]
    assert _refused(magic_1).error_code is ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
    assert _refused(_with_attributes(good, 5)).error_code is ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
    transactional = produced_batch(RECORDS[:1], transactional=True, producer_id=1,
                                   producer_epoch=0, base_sequence=0)  # fmt: skip
    assert _refused(transactional).error_code is ErrorCode.INVALID_RECORD
    bomb = produced_batch([(None, bytes(1_000_000), [])], compression="gzip")
    assert _refused(bomb, max_bytes=100_000).error_code is ErrorCode.CORRUPT_MESSAGE
    garbage_gzip = _with_attributes(good, 1)
    assert _refused(garbage_gzip).error_code is ErrorCode.CORRUPT_MESSAGE


def test_served_batches_parse_with_kafka_python() -> None:
    stored = [
        Record(100, 1_700_000_000_123, b'{"a":1}', b"k", (("h", b"v"),), ValueFormat.JSON),
        Record(101, 1_700_000_000_123, b"x" * 20_000, None, (), ValueFormat.BYTES),
        Record(102, 1_700_000_000_123, b"", b"", (("", b""), ("b", b"\x00")), ValueFormat.BYTES),
    ]
    batch = DefaultRecordBatch(encode_batch(100, 1_700_000_000_123, stored))
    assert batch.validate_crc()
    assert (batch.base_offset, batch.next_offset, batch.timestamp_type) == (100, 103, 1)
    got = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in batch]
    assert got == [
        (100, 1_700_000_000_123, b"k", b'{"a":1}', [("h", b"v")]),
        (101, 1_700_000_000_123, None, b"x" * 20_000, []),
        (102, 1_700_000_000_123, b"", b"", [("", b""), ("b", b"\x00")]),
    ]


def test_json_values_are_json_and_the_rest_bytes() -> None:
    assert value_format_of(b'{"a": [1, 2]}') is ValueFormat.JSON
    assert value_format_of(b"42") is ValueFormat.JSON
    assert value_format_of(b'"text"') is ValueFormat.JSON
    assert value_format_of(b"text") is ValueFormat.BYTES
    assert value_format_of(b"") is ValueFormat.BYTES
    assert value_format_of(b"\x00\x00\x00\x00\x01avro") is ValueFormat.BYTES
    assert value_format_of(b"NaN") is ValueFormat.BYTES
