"""Record batches built by kafka-python's own encoder (an implementation nobody here wrote),
for tests that feed the listener what a producer sends. kafka-python compresses gzip itself;
snappy, lz4 and zstd would need three more libraries, so those records are compressed with
cramjam here (the end-to-end tests have librdkafka compress them)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import cramjam
import crc32c
from kafka.record.default_records import DefaultRecordBatchBuilder

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]


def produced_batch(
    records: Sequence[Record],
    *,
    compression: str = "none",
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    timestamp_ms: int = 1_700_000_000_000,
) -> bytes:
    codec = CODECS[compression]
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec if codec <= 1 else 0,
        is_transactional=transactional,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=1 << 30,
    )
    for offset, (key, value, headers) in enumerate(records):
        builder.append(offset, timestamp_ms + offset, key, value, list(headers))
    data = bytes(builder.build())
    if codec <= 1:
        return data
    section = data[61:]
    compressed = {
        2: lambda: cramjam.snappy.compress_raw(section),
        3: lambda: cramjam.lz4.compress(section),
        4: lambda: cramjam.zstd.compress(section),
    }[codec]()
    body = struct.pack(">h", struct.unpack_from(">h", data, 21)[0] | codec)
    body += data[23:61] + bytes(compressed)
    return data[:8] + struct.pack(">iibI", len(body) + 9, -1, 2, crc32c.crc32c(body)) + body
