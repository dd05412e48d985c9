"""Stored batches as Kafka record batches, converted once and shared by every fetch.

A stored batch (one append: an HTTP produce request or a Kafka producer's batch) becomes
one Kafka batch with the same base offset and records. Converting costs Python work per
record (Kafka's varint framing cannot be produced from the stored layout in bulk), so each
converted batch is kept in a byte-bounded LRU and served again to every other consumer
and every re-fetch: a topic read by N consumer groups is converted once. The key includes
the stored batch's checksum, so a topic deleted and written again never serves stale
batches.
"""

from __future__ import annotations

from collections import OrderedDict

from gateway.kafka.records import encode_batch
from storage import codec

MiB = 1024 * 1024
_Key = tuple[str, int, int, int]  # topic, partition, base offset, stored checksum


class BatchCache:
    """Converted batches, least recently used dropped first beyond `max_bytes`."""

    def __init__(self, max_bytes: int = 64 * MiB) -> None:
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._batches: OrderedDict[_Key, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._batches)

    def kafka_batches(self, topic: str, partition: int, stored: bytes) -> list[bytes]:
        """The Kafka batches of consecutive stored batches (Backend.read_batches' answer)."""
        out: list[bytes] = []
        position = 0
        while position < len(stored):
            header = codec.read_header(stored, position)
            if header is None:
                raise ValueError("stored batches end inside a header")
            checksum = codec.BATCH_HEADER.unpack_from(stored, position)[1]
            key = (topic, partition, header.base_offset, checksum)
            batch = self._batches.get(key)
            if batch is None:
                records = codec.decode_batch(stored, header)
                batch = encode_batch(header.base_offset, header.timestamp_ms, records)
                self._put(key, batch)
            else:
                self._batches.move_to_end(key)
            out.append(batch)
            position = header.end_position
        return out

    def _put(self, key: _Key, batch: bytes) -> None:
        if len(batch) > self.max_bytes:
            return
        self._batches[key] = batch
        self.size_bytes += len(batch)
        while self.size_bytes > self.max_bytes:
            _key, dropped = self._batches.popitem(last=False)
            self.size_bytes -= len(dropped)
