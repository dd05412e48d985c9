"""Produce tags (an Idempotency-Key and a request fingerprint stored with the records): on
both backends a tagged append is stored once, also when retried concurrently and after the
backend is reopened; on bytes, the tag round-trips in the batch format."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from storage import codec
from storage.embedded import EmbeddedBackend
from storage.errors import ProduceTagConflict
from storage.produce_tags import TaggedAppend, TagIndex
from storage.types import (
    AppendResult,
    DurabilityPolicy,
    IdempotencyWindow,
    NewRecord,
    ProduceTag,
    TopicConfig,
)
from tests.storage.conftest import AnyBackend


def _tag(key: str, request: str = "request") -> ProduceTag:
    return ProduceTag(
        hashlib.sha256(key.encode()).digest(), hashlib.sha256(request.encode()).digest()
    )


async def _values(backend: AnyBackend, topic: str, partition: int) -> list[bytes]:
    return [r.value for r in await backend.read(topic, partition, 0, 10_000, 1 << 30)]


@pytest.mark.parametrize("count", [1, 3])
async def test_a_tagged_append_is_stored_once_across_retries_and_reopen(
    backend: AnyBackend, reopen_backend: Callable[[], Awaitable[AnyBackend]], count: int
) -> None:
    await backend.create_topic("t", 1, TopicConfig())
    await backend.append("t", 0, [NewRecord(b"before")])
    records = [NewRecord(b"r%d" % i) for i in range(count)]
    first = await backend.append("t", 0, records, _tag("k"))
    assert await backend.append("t", 0, records, _tag("k")) == first
    other = await backend.append("t", 0, [NewRecord(b"other")], _tag("k2"))
    assert other.base_offset == first.base_offset + count
    reopened = await reopen_backend()
    assert await reopened.append("t", 0, records, _tag("k")) == first
    values = await _values(reopened, "t", 0)
    assert values == [b"before", *(r.value for r in records), b"other"]


async def test_concurrent_appends_with_one_tag_store_one_copy(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, TopicConfig())
    records = [NewRecord(b"a"), NewRecord(b"b"), NewRecord(b"c")]
    results = await asyncio.gather(
        *(backend.start_append("t", 0, records, _tag("k")) for _ in range(4))
    )
    assert len(set(results)) == 1
    assert await _values(backend, "t", 0) == [b"a", b"b", b"c"]


async def test_a_key_reused_for_another_request_writes_nothing(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, TopicConfig())
    await backend.append("t", 0, [NewRecord(b"a"), NewRecord(b"b")], _tag("k", "first"))
    with pytest.raises(ProduceTagConflict):
        await backend.append("t", 0, [NewRecord(b"x"), NewRecord(b"y")], _tag("k", "second"))
    assert await _values(backend, "t", 0) == [b"a", b"b"]


def test_the_tag_round_trips_in_the_batch_and_untagged_batches_are_unchanged() -> None:
    records = [NewRecord(b"v", key=b"k"), NewRecord(b"w")]
    tag = _tag("k")
    tagged = codec.encode_batch(5, 7, records, tag)
    plain = codec.encode_batch(5, 7, records)
    assert len(tagged) == len(plain) + codec.TAG_SIZE
    for data, expected in ((tagged, tag), (plain, None)):
        header = codec.read_header(data, 0)
        assert header is not None
        assert (header.record_count, header.tagged) == (2, expected is not None)
        codec.check_batch(data, header)
        assert codec.batch_tag(data, header) == expected
        assert [r.value for r in codec.decode_batch(data, header)] == [b"v", b"w"]
    scanned = codec.scan(tagged + plain, 0, 5)  # the second batch repeats offset 5
    assert scanned.error == f"batch at position {len(tagged)} has base offset 5, expected 7"
    damaged = bytearray(tagged)
    damaged[codec.BATCH_HEADER_SIZE + 3] ^= 1  # a bit of the tag: the checksum covers it
    assert codec.scan(bytes(damaged), 0, 5).batches == []


def test_the_tag_index_keeps_the_window_by_time_and_count() -> None:
    index = TagIndex(IdempotencyWindow(window_ms=1000, max_keys=2))
    for i in range(3):
        index.add(b"k%d" % i, TaggedAppend(b"r", AppendResult(i, 1, 10_000 + i)))
    assert index.get(b"k0", 10_000) is None  # beyond the count
    assert index.get(b"k1", 10_500) is not None
    assert index.get(b"k1", 11_002) is None  # beyond the time
    assert len(index) == 1


@pytest.mark.parametrize("backend_factory", ["embedded"], indirect=True)
async def test_tags_are_read_back_past_batches_larger_than_a_read_chunk(
    backend: AnyBackend, reopen_backend: Callable[[], Awaitable[AnyBackend]]
) -> None:
    await backend.create_topic("t", 1, TopicConfig())
    large = await backend.append("t", 0, [NewRecord(b"x" * 100_000)] * 4, _tag("large"))
    small = [await backend.append("t", 0, [NewRecord(b"%d" % i)], _tag(f"s{i}")) for i in range(50)]
    reopened = await reopen_backend()
    assert await reopened.append("t", 0, [NewRecord(b"x" * 100_000)] * 4, _tag("large")) == large
    for i, first in enumerate(small):
        assert await reopened.append("t", 0, [NewRecord(b"%d" % i)], _tag(f"s{i}")) == first
    assert (await reopened.partition_info("t", 0)).end_offset == 54


async def test_the_partitions_holding_a_key_are_known_before_an_append(tmp_path: Path) -> None:
    backend = await EmbeddedBackend.open(tmp_path, DurabilityPolicy())
    await backend.create_topic("t", 3, TopicConfig())
    held = {p: await backend.append("t", p, [NewRecord(b"%d" % p)], _tag("k")) for p in (0, 2)}
    await backend.close()
    reopened = await EmbeddedBackend.open(tmp_path, DurabilityPolicy())  # read back from the log
    try:
        assert await reopened.tagged_appends("t", _tag("k")) == held
        assert await reopened.tagged_appends("t", _tag("k2")) == {}
        with pytest.raises(ProduceTagConflict):
            await reopened.tagged_appends("t", _tag("k", "another request"))
    finally:
        await reopened.close()
