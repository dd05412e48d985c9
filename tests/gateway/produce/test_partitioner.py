"""murmur2 against Kafka's own vectors, keyed placement, and the round-robin spread."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.produce.partitioner import Partitioner, murmur2, partition_for_key, to_positive

# Kafka's UtilsTest.testMurmur2.
KAFKA_UTILS_TEST_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

# librdkafka's murmur2 unit test, which pins the Java client's values.
LIBRDKAFKA_VECTORS = {
    b"kafka": -798503068,
    b"giberish123456789": -1890243828,
    b"1234": -1614185708,
    b"234": -406844982,
    b"34": -2026295078,
    b"4": 1514888353,
    b"": 275646681,
}

# Bytes >= 0x80 are negative Java bytes; Utils.murmur2 masks them with & 0xff. These values
# were computed by running Kafka's Utils.murmur2 code on a JVM.
HIGH_BIT_VECTORS = {
    b"\xff": -311467685,
    b"\x80\xff": -80095470,
    b"\xff\xfe\xfd": 998637092,
    b"\xff\xfe\xfd\xfc": 2136149935,
    b"\x80\x00\x80\x00\x80": -63275332,
    "café".encode(): -1358007374,
    "üñîçødé".encode(): -1015128564,
    "🚀 rocket".encode(): -1710445744,
    "日本語のキー".encode(): -734675706,
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [*KAFKA_UTILS_TEST_VECTORS.items(), *LIBRDKAFKA_VECTORS.items(), *HIGH_BIT_VECTORS.items()],
)
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def _java_murmur2(data: bytes) -> int:
    """A byte-at-a-time transcription of Utils.murmur2 with Java's signed bytes and ints."""

    def int32(n: int) -> int:
        n &= 0xFFFFFFFF
        return n - (1 << 32) if n & 0x80000000 else n

    def ushr(n: int, bits: int) -> int:
        return (n & 0xFFFFFFFF) >> bits

    signed = [b - 256 if b > 127 else b for b in data]
    length = len(signed)
    m = 0x5BD1E995
    h = int32(0x9747B28C ^ length)
    for i in range(length // 4):
        i4 = i * 4
        k = int32(
            (signed[i4] & 0xFF)
            + ((signed[i4 + 1] & 0xFF) << 8)
            + ((signed[i4 + 2] & 0xFF) << 16)
            + ((signed[i4 + 3] & 0xFF) << 24)
        )
        k = int32(k * m)
        k = int32(k ^ ushr(k, 24))
        k = int32(k * m)
        h = int32(h * m)
        h = int32(h ^ k)
    base = length & ~3
    rest = length % 4
    if rest == 3:
        h = int32(h ^ ((signed[base + 2] & 0xFF) << 16))
    if rest >= 2:
        h = int32(h ^ ((signed[base + 1] & 0xFF) << 8))
    if rest >= 1:
        h = int32(h ^ (signed[base] & 0xFF))
        h = int32(h * m)
    h = int32(h ^ ushr(h, 13))
    h = int32(h * m)
    return int32(h ^ ushr(h, 15))


def test_the_java_transcription_reproduces_the_published_vectors() -> None:
    for data, expected in {**KAFKA_UTILS_TEST_VECTORS, **LIBRDKAFKA_VECTORS}.items():
        assert _java_murmur2(data) == expected


@given(st.binary(max_size=64))
def test_murmur2_agrees_with_java_semantics_on_any_bytes(data: bytes) -> None:
    assert murmur2(data) == _java_murmur2(data)


def test_to_positive_clears_the_sign_bit_like_java() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


def test_partition_for_key_is_the_java_clients_choice() -> None:
    # toPositive(murmur2(key)) % 12, computed with Kafka's code on a JVM.
    expected = {
        b"21": 0,
        b"foobar": 6,
        b"a-little-bit-longer-string": 11,
        b"": 9,
        "café".encode(): 6,
        "日本語のキー".encode(): 2,
    }
    for key, partition in expected.items():
        assert partition_for_key(key, 12) == partition
    assert partition_for_key(b"anything", 1) == 0
    with pytest.raises(ValueError, match="at least 1"):
        partition_for_key(b"k", 0)


def test_keyed_records_ignore_the_round_robin() -> None:
    partitioner = Partitioner()
    assert {partitioner.partition("t", 12, b"foobar") for _ in range(10)} == {6}
    assert partitioner.partition("t", 12, b"") == 9


def test_records_without_key_spread_round_robin_per_topic() -> None:
    partitioner = Partitioner()
    orders = [partitioner.partition("orders", 5, None) for _ in range(50)]
    assert Counter(orders) == dict.fromkeys(range(5), 10)
    assert all((b - a) % 5 == 1 for a, b in pairwise(orders))

    # Another topic has its own counter: interleaving does not skew either.
    interleaved: dict[str, list[int]] = {"a": [], "b": []}
    for _ in range(30):
        for topic in ("a", "b"):
            interleaved[topic].append(partitioner.partition(topic, 3, None))
    for placed in interleaved.values():
        assert Counter(placed) == dict.fromkeys(range(3), 10)

    with pytest.raises(ValueError, match="at least 1"):
        partitioner.partition("orders", 0, None)
