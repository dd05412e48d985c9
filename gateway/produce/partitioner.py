"""Kafka's partitioner: the partition a record goes to when the request does not name one.

A keyed record goes where the Kafka Java client would send it, so logway and Kafka
producers agree on which partition holds a key:
`toPositive(murmur2(key)) % partitions`, with murmur2 exactly as
`org.apache.kafka.common.utils.Utils.murmur2` (seed 0x9747b28c, little-endian 4-byte words,
Java's wrapping 32-bit int arithmetic, a signed result). An empty key is a key (it hashes);
only a missing key (None) is spread.
"""

from __future__ import annotations

import random
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` as Java's signed 32-bit int.

    Java masks every byte with `& 0xff`, so bytes with the high bit set count as 128..255
    here too. The whole words are unpacked in one struct call; the per-word loop keeps
    Python ints within 64 bits by masking after each multiplication.
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    word_count = length >> 2
    for k in struct.unpack_from(f"<{word_count}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) ^ (k * _M)) & _MASK

    tail = length & 3
    if tail:
        start = length & ~3
        h ^= int.from_bytes(data[start:length], "little")
        h = (h * _M) & _MASK

    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x1_0000_0000 if h & 0x8000_0000 else h


def to_positive(number: int) -> int:
    """Kafka's Utils.toPositive: clears the sign bit (not abs, which overflows at MIN_VALUE)."""
    return number & 0x7FFF_FFFF


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition the Kafka Java client picks for `key` among `partitions`."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return to_positive(murmur2(key)) % partitions


class Partitioner:
    """Places records that name no partition: by key if they have one, else round-robin.

    Records without a key go round-robin over the topic's partitions, one counter per
    topic. Kafka's sticky partitioner exists to fill one producer batch per linger window;
    here the HTTP request already is the batch and is written with group commit, so
    stickiness would buy nothing and would let one large request load a single partition.
    Round-robin spreads exactly evenly whatever the request sizes, and each counter starts
    at a random partition (as Kafka's round-robin partitioner does) so that many gateways,
    or one that restarts often, do not all start on partition 0.

    Keyed placement is remembered per partition count (up to `MAX_REMEMBERED_KEYS` keys,
    then forgotten at once): producers reuse a few hot keys (customer ids), and a dict
    lookup costs a fraction of murmur2 in Python.
    """

    MAX_REMEMBERED_KEYS = 65_536

    __slots__ = ("_by_key", "_next_by_topic")

    def __init__(self) -> None:
        self._next_by_topic: dict[str, int] = {}
        self._by_key: dict[int, dict[bytes, int]] = {}

    def partition(self, topic: str, partitions: int, key: bytes | None) -> int:
        if key is not None:
            return self.partition_for_key(key, partitions)
        return self.round_robin(topic, partitions, 1)

    def partition_for_key(self, key: bytes, partitions: int) -> int:
        """`partition_for_key`, remembered."""
        known = self._by_key.get(partitions)
        if known is None:
            known = self._by_key[partitions] = {}
        partition = known.get(key)
        if partition is None:
            partition = partition_for_key(key, partitions)
            if len(known) >= self.MAX_REMEMBERED_KEYS:
                known.clear()
            known[key] = partition
        return partition

    def round_robin(self, topic: str, partitions: int, count: int) -> int:
        """The partition of the first of `count` keyless records; the i-th goes to
        `(first + i) % partitions`. Advances the topic's counter past all of them."""
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        counter = self._next_by_topic.get(topic)
        if counter is None:
            counter = random.randrange(partitions)
        self._next_by_topic[topic] = (counter + count) % partitions
        return counter % partitions
