"""The Backend contract, run against every backend (`backend` is parametrized in conftest):
embedded on tmp_path, and jetstream on the shared 3-node cluster with R3 streams."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from storage import codec
from storage.errors import (
    AppendTooLarge,
    GroupNotFound,
    InvalidTopicName,
    OffsetOutOfRange,
    PartitionNotFound,
    SchemaVersionConflict,
    SchemaVersionNotFound,
    TopicExists,
    TopicNotFound,
)
from storage.types import NewRecord, Record, TopicConfig, TopicPartition, ValueFormat
from tests.storage.conftest import AnyBackend

CONFIG = TopicConfig()
MiB = 1024 * 1024
WAIT_S = 30.0  # a guard against hanging only; nothing asserts a duration

# Keys and headers NATS headers cannot carry as text: they must round-trip byte for byte.
HOSTILE_RECORDS = [
    NewRecord(b"plain", key=b"order-17"),
    NewRecord(b"colons", key=b"a:b  c: d"),
    NewRecord(b"", key=b""),
    NewRecord(b"\x00\xff\r\n", key=b"\x00\r\n:\xff"),
    NewRecord(b"{}", key=b" padded ", value_format=ValueFormat.JSON),
    NewRecord(b"x", key="ключ: é".encode()),
    NewRecord(
        b"[1,2]",
        headers=(("a", b"1"), ("a", b"2"), ("", b""), ("Name: x\r\n", b"\r\n\x00"), ("é", b" ")),
        value_format=ValueFormat.JSON,
    ),
    NewRecord(b"no key", key=None, headers=(("Logway-Key", b"not the key"),)),
]


async def test_create_topic_is_idempotent_and_refuses_other_settings(backend: AnyBackend) -> None:
    assert await backend.create_topic("orders.v1", 3, CONFIG) is True
    assert await backend.create_topic("orders.v1", 3, CONFIG) is False
    with pytest.raises(TopicExists) as exc_info:
        await backend.create_topic("orders.v1", 4, CONFIG)
    assert exc_info.value.existing.partitions == 3
    with pytest.raises(TopicExists):
        await backend.create_topic("orders.v1", 3, TopicConfig(retention_ms=60_000))
    info = await backend.get_topic("orders.v1")
    assert (info.name, info.partitions, info.config) == ("orders.v1", 3, CONFIG)


async def test_topic_names_with_dots_and_underscores_stay_distinct(backend: AnyBackend) -> None:
    names = ["a.b", "a_b", "a_2Eb", "a-b", "_", "..a", "A.b"]
    for name in names:
        assert await backend.create_topic(name, 1, CONFIG)
    for i, name in enumerate(names):
        await backend.append(name, 0, [NewRecord(str(i).encode())])
    assert sorted(t.name for t in await backend.list_topics()) == sorted(names)
    for i, name in enumerate(names):
        [record] = await backend.read(name, 0, 0, 10, MiB)
        assert record.value == str(i).encode()


async def test_longest_legal_names_work(backend: AnyBackend) -> None:
    for name in ("n" * 249, "." * 249, "_" * 249, "." * 248 + "_"):
        assert await backend.create_topic(name, 1, CONFIG)
        assert (await backend.append(name, 0, [NewRecord(name.encode()[-3:])])).base_offset == 0
    for topic in await backend.list_topics():
        [record] = await backend.read(topic.name, 0, 0, 10, MiB)
        assert record.value == topic.name.encode()[-3:]


async def test_invalid_topic_names_are_refused(backend: AnyBackend) -> None:
    for name in ["", ".", "..", "a/b", "a b", "x" * 250, "a*", "a>"]:
        with pytest.raises(InvalidTopicName):
            await backend.create_topic(name, 1, CONFIG)


async def test_delete_topic_then_unknown_and_recreated_from_zero(backend: AnyBackend) -> None:
    await backend.create_topic("t", 2, CONFIG)
    await backend.append("t", 1, [NewRecord(b"a"), NewRecord(b"b")])
    await backend.delete_topic("t")
    assert await backend.list_topics() == []
    with pytest.raises(TopicNotFound):
        await backend.get_topic("t")
    with pytest.raises(TopicNotFound):
        await backend.delete_topic("t")
    with pytest.raises(TopicNotFound):
        await backend.append("t", 0, [NewRecord(b"x")])
    with pytest.raises(TopicNotFound):
        await backend.read("t", 0, 0, 10, MiB)
    with pytest.raises(TopicNotFound):
        await backend.partition_info("t", 0)
    assert await backend.create_topic("t", 3, CONFIG) is True
    result = await backend.append("t", 1, [NewRecord(b"again")])
    assert result.base_offset == 0
    assert [r.value for r in await backend.read("t", 1, 0, 10, MiB)] == [b"again"]


async def test_delete_while_appending_and_reading(backend: AnyBackend) -> None:
    await backend.create_topic("t", 2, CONFIG)

    async def produce(partition: int) -> None:
        for i in itertools.count():
            try:
                await backend.append("t", partition, [NewRecord(b"%d" % i)] * (1 + i % 3))
            except TopicNotFound:
                return

    async def consume() -> None:
        offset = 0
        while True:
            try:
                records = await backend.read("t", 0, offset, 10, MiB)
            except TopicNotFound:
                return
            offset += len(records)
            await backend.wait_for_records("t", {0: offset}, 1)

    tasks = [asyncio.ensure_future(produce(p)) for p in (0, 1)]
    reader = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    await backend.delete_topic("t")
    await asyncio.wait_for(asyncio.gather(*tasks, reader), 30)
    await backend.create_topic("t", 1, CONFIG)
    assert (await backend.append("t", 0, [NewRecord(b"fresh")])).base_offset == 0


async def test_cancelled_appends_leave_the_log_dense(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, CONFIG)
    appends = [
        asyncio.ensure_future(backend.append("t", 0, [NewRecord(b"%d" % i)] * (1 + i % 3)))
        for i in range(50)
    ]
    await asyncio.sleep(0)
    for append in appends[::2]:
        append.cancel()
    await asyncio.gather(*appends, return_exceptions=True)
    # Cancelled callers stop waiting, but what they sent is written whole or not at all
    # (jetstream finishes an open batch rather than leave it to the server's timeout).
    result = await backend.append("t", 0, [NewRecord(b"last")])
    records = await backend.read("t", 0, 0, 1000, MiB)
    assert [r.offset for r in records] == list(range(len(records)))
    assert records[result.base_offset].value == b"last"


async def test_started_appends_finish_when_their_caller_is_cancelled(
    backend: AnyBackend,
) -> None:
    await backend.create_topic("t", 2, CONFIG)

    async def produce() -> None:
        started = [backend.start_append("t", p, [NewRecord(b"a"), NewRecord(b"b")]) for p in (0, 1)]
        for future in started:
            await future

    caller = asyncio.ensure_future(produce())
    await asyncio.sleep(0)  # the caller started both appends and awaits the first
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    for p in (0, 1):
        assert await backend.wait_for_records("t", {p: 1}, WAIT_S)
        assert [r.value for r in await backend.read("t", p, 0, 10, MiB)] == [b"a", b"b"]


async def test_started_appends_resolve_like_appends(backend: AnyBackend) -> None:
    await backend.create_topic("t", 2, CONFIG)
    started = [backend.start_append("t", p, [NewRecord(b"x")] * (p + 1)) for p in (0, 1, 0)]
    results = [await future for future in started]
    assert [(r.base_offset, r.count) for r in results] == [(0, 1), (0, 2), (1, 1)]
    with pytest.raises(TopicNotFound):
        await backend.start_append("missing", 0, [NewRecord(b"x")])
    with pytest.raises(PartitionNotFound):
        await backend.start_append("t", 2, [NewRecord(b"x")])


async def test_max_append_records_is_the_largest_whole_append(backend: AnyBackend) -> None:
    """None: no limit of the backend's own (the embedded log takes 1,500 records, more
    than one JetStream atomic batch, as one append); else that many and no more."""
    await backend.create_topic("t", 1, CONFIG)
    limit = backend.max_append_records
    size = 1500 if limit is None else limit
    result = await backend.append("t", 0, [NewRecord(b"%d" % i) for i in range(size)])
    assert (result.base_offset, result.count) == (0, size)
    if limit is not None:
        with pytest.raises(AppendTooLarge):
            await backend.append("t", 0, [NewRecord(b"x")] * (limit + 1))
    assert (await backend.partition_info("t", 0)).end_offset == size


async def test_records_round_trip_exactly(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, CONFIG)
    first = await backend.append("t", 0, HOSTILE_RECORDS[:1])
    rest = await backend.append("t", 0, HOSTILE_RECORDS[1:])
    assert (first.base_offset, first.count) == (0, 1)
    assert (rest.base_offset, rest.count) == (1, len(HOSTILE_RECORDS) - 1)
    records = await backend.read("t", 0, 0, 100, MiB)
    assert [r.offset for r in records] == list(range(len(HOSTILE_RECORDS)))
    for record, sent in zip(records, HOSTILE_RECORDS, strict=True):
        assert (record.value, record.key, record.headers, record.value_format) == (
            sent.value,
            sent.key,
            sent.headers,
            sent.value_format,
        )
    assert records[0].timestamp_ms == first.timestamp_ms
    assert {r.timestamp_ms for r in records[1:]} == {rest.timestamp_ms}


async def test_offsets_are_dense_across_concurrent_batches(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, CONFIG)
    batches = [[NewRecord(f"{b}:{i}".encode()) for i in range(1 + b % 7)] for b in range(40)]
    results = await asyncio.gather(*(backend.append("t", 0, batch) for batch in batches))
    records = await backend.read("t", 0, 0, 1000, 16 * MiB)
    assert [r.offset for r in records] == list(range(sum(map(len, batches))))
    for batch, result in zip(batches, results, strict=True):
        # each append is contiguous and in order: nothing interleaved inside it
        got = records[result.base_offset : result.base_offset + result.count]
        assert [r.value for r in got] == [r.value for r in batch]
    info = await backend.partition_info("t", 0)
    assert (info.log_start_offset, info.end_offset) == (0, len(records))


async def test_read_limits_and_ranges(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, CONFIG)
    await backend.append("t", 0, [NewRecord(bytes(100), key=b"k") for _ in range(10)])
    assert len(await backend.read("t", 0, 0, 3, MiB)) == 3
    assert [r.offset for r in await backend.read("t", 0, 4, 100, MiB)] == list(range(4, 10))
    # max_bytes counts keys and values, stops before exceeding, and returns at least one
    assert len(await backend.read("t", 0, 0, 100, 303)) == 3
    assert len(await backend.read("t", 0, 0, 100, 302)) == 2
    assert len(await backend.read("t", 0, 2, 100, 1)) == 1
    assert await backend.read("t", 0, 10, 100, MiB) == []
    with pytest.raises(OffsetOutOfRange) as exc_info:
        await backend.read("t", 0, 11, 100, MiB)
    assert (exc_info.value.log_start_offset, exc_info.value.end_offset) == (0, 10)
    with pytest.raises(OffsetOutOfRange):
        await backend.read("t", 0, -1, 100, MiB)
    with pytest.raises(PartitionNotFound):
        await backend.read("t", 1, 0, 100, MiB)
    with pytest.raises(PartitionNotFound):
        await backend.append("t", -1, [NewRecord(b"x")])


async def test_offset_for_timestamp(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, CONFIG)
    assert await backend.offset_for_timestamp("t", 0, 0) == 0
    first = await backend.append("t", 0, [NewRecord(b"a"), NewRecord(b"b")])
    second = first
    while second.timestamp_ms == first.timestamp_ms:  # the log's clock must move on
        await asyncio.sleep(0.002)
        second = await backend.append("t", 0, [NewRecord(b"c")])
    assert await backend.offset_for_timestamp("t", 0, 0) == 0
    assert await backend.offset_for_timestamp("t", 0, first.timestamp_ms) == 0
    assert await backend.offset_for_timestamp("t", 0, first.timestamp_ms + 1) == second.base_offset
    assert await backend.offset_for_timestamp("t", 0, second.timestamp_ms + 1) == (
        second.base_offset + 1
    )


async def test_wait_for_records_wakes_on_append_and_times_out(backend: AnyBackend) -> None:
    await backend.create_topic("t", 3, CONFIG)
    assert await backend.wait_for_records("t", {0: 0, 2: 0}, 0.05) is False
    waiter = asyncio.create_task(backend.wait_for_records("t", {0: 0, 2: 0}, None))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await backend.append("t", 1, [NewRecord(b"elsewhere")])
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await backend.append("t", 2, [NewRecord(b"here")])
    assert await asyncio.wait_for(waiter, 10) is True
    # already past the position: returns at once; at the end: waits
    assert await backend.wait_for_records("t", {2: 0}, None) is True
    assert await backend.wait_for_records("t", {2: 1}, 0) is False
    with pytest.raises(PartitionNotFound):
        await backend.wait_for_records("t", {3: 0}, 0)
    assert await backend.wait_for_records("missing", {0: 0}, None) is True


async def test_wait_for_records_wakes_when_the_topic_is_deleted(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, CONFIG)
    waiter = asyncio.create_task(backend.wait_for_records("t", {0: 0}, None))
    await asyncio.sleep(0.05)
    await backend.delete_topic("t")
    assert await asyncio.wait_for(waiter, 10) is True
    with pytest.raises(TopicNotFound):
        await backend.read("t", 0, 0, 1, MiB)


async def test_wait_for_records_wakes_on_close(backend: AnyBackend) -> None:
    await backend.create_topic("t", 1, CONFIG)
    waiter = asyncio.create_task(backend.wait_for_records("t", {0: 0}, None))
    await asyncio.sleep(0.05)
    await backend.close()
    assert await asyncio.wait_for(waiter, 10) is True


async def test_groups_offsets_and_metadata_survive_reopen(
    backend: AnyBackend, reopen_backend: Callable[[], Awaitable[AnyBackend]]
) -> None:
    await backend.create_topic("t", 2, CONFIG)
    await backend.append("t", 0, [NewRecord(b"x")])
    group = "billing service / ünïcode ✓"
    await backend.commit_offsets(group, {TopicPartition("t", 0): 1, TopicPartition("t", 1): 0})
    await backend.commit_offsets(group, {TopicPartition("t", 1): 5})
    await backend.commit_offsets("other", {TopicPartition("t", 0): 0})
    await backend.save_group_metadata(group, b"\x00generation 7")
    await backend.save_group_metadata("meta-only", b"m")
    reopened = await reopen_backend()
    assert await reopened.committed_offsets(group) == {
        TopicPartition("t", 0): 1,
        TopicPartition("t", 1): 5,
    }
    assert await reopened.committed_offsets("never") == {}
    assert await reopened.load_group_metadata(group) == b"\x00generation 7"
    assert await reopened.load_group_metadata("never") is None
    assert await reopened.list_groups() == sorted([group, "other", "meta-only"])
    assert [t.name for t in await reopened.list_topics()] == ["t"]
    assert [r.value for r in await reopened.read("t", 0, 0, 10, MiB)] == [b"x"]
    await reopened.delete_group(group)
    assert await reopened.committed_offsets(group) == {}
    assert await reopened.load_group_metadata(group) is None
    assert await reopened.list_groups() == ["meta-only", "other"]
    with pytest.raises(GroupNotFound):
        await reopened.delete_group(group)


async def test_deleting_a_topic_forgets_its_committed_offsets(backend: AnyBackend) -> None:
    await backend.create_topic("gone", 1, CONFIG)
    await backend.create_topic("kept", 1, CONFIG)
    await backend.commit_offsets(
        "both", {TopicPartition("gone", 0): 3, TopicPartition("kept", 0): 4}
    )
    await backend.commit_offsets("only-gone", {TopicPartition("gone", 0): 1})
    with pytest.raises(ValueError, match=r"negative|>= 0"):  # and nothing is stored
        await backend.commit_offsets("bad", {TopicPartition("kept", 0): -1})
    await backend.delete_topic("gone")
    assert await backend.committed_offsets("both") == {TopicPartition("kept", 0): 4}
    assert await backend.committed_offsets("only-gone") == {}
    assert await backend.list_groups() == ["both"]
    await backend.commit_offsets("only-gone", {TopicPartition("kept", 0): 0})
    assert await backend.list_groups() == ["both", "only-gone"]


async def test_concurrent_commits_to_one_group_all_land(backend: AnyBackend) -> None:
    await asyncio.gather(
        *(backend.commit_offsets("g", {TopicPartition("t", p): p + 1}) for p in range(20))
    )
    assert await backend.committed_offsets("g") == {
        TopicPartition("t", p): p + 1 for p in range(20)
    }


async def test_idempotent_results(backend: AnyBackend) -> None:
    assert await backend.load_idempotent_result("k") is None
    await backend.save_idempotent_result("k", b"first", ttl_ms=60_000)
    await backend.save_idempotent_result("k", b"second", ttl_ms=60_000)
    assert await backend.load_idempotent_result("k") == b"second"  # save replaces
    long_key = "x" * 5000 + "\u2603 with spaces"
    await backend.save_idempotent_result(long_key, b"", ttl_ms=60_000)
    assert await backend.load_idempotent_result(long_key) == b""
    await backend.save_idempotent_result("short", b"gone", ttl_ms=1)
    await asyncio.sleep(0.01)
    assert await backend.load_idempotent_result("short") is None
    await backend.save_idempotent_result("short", b"new", ttl_ms=60_000)
    assert await backend.load_idempotent_result("short") == b"new"


async def test_check_writable(backend: AnyBackend) -> None:
    await backend.check_writable()


# -- topic schemas ----------------------------------------------------------------------------


async def test_schema_versions_are_numbered_kept_and_survive_reopen(
    backend: AnyBackend, reopen_backend: Callable[[], Awaitable[AnyBackend]]
) -> None:
    await backend.create_topic("orders", 1, CONFIG)
    assert await backend.schema_versions("orders") == []
    assert await backend.latest_schema("orders") is None
    first = await backend.add_schema_version("orders", b'{"schema":true}', 0)
    second = await backend.add_schema_version("orders", b'{"schema":{}}', 1)
    assert (first.version, second.version) == (1, 2)
    with pytest.raises(SchemaVersionConflict):  # a check made against version 1 is stale
        await backend.add_schema_version("orders", b'{"schema":false}', 1)
    await backend.set_schema_compatibility("orders", "FULL")
    reopened = await reopen_backend()
    assert await reopened.schema_versions("orders") == [first, second]
    assert await reopened.latest_schema("orders") == second
    assert await reopened.schema_compatibility("orders") == "FULL"


async def test_only_the_newest_schema_version_is_deleted_and_its_number_stays_used(
    backend: AnyBackend,
) -> None:
    await backend.create_topic("orders", 1, CONFIG)
    for latest in (0, 1):
        await backend.add_schema_version("orders", b"{}", latest)
    with pytest.raises(SchemaVersionConflict):
        await backend.delete_schema_version("orders", 1)
    with pytest.raises(SchemaVersionNotFound):
        await backend.delete_schema_version("orders", 7)
    await backend.delete_schema_version("orders", 2)
    assert [v.version for v in await backend.schema_versions("orders")] == [1]
    assert (await backend.latest_schema("orders")).version == 1  # type: ignore[union-attr]
    assert (await backend.add_schema_version("orders", b"{}", 1)).version == 3


async def test_schemas_belong_to_an_existing_topic_and_go_with_it(backend: AnyBackend) -> None:
    with pytest.raises(TopicNotFound):
        await backend.add_schema_version("nope", b"{}", 0)
    with pytest.raises(TopicNotFound):
        await backend.schema_versions("nope")
    with pytest.raises(TopicNotFound):
        await backend.set_schema_compatibility("nope", "NONE")
    assert await backend.latest_schema("nope") is None
    await backend.create_topic("orders", 1, CONFIG)
    await backend.add_schema_version("orders", b"{}", 0)
    await backend.set_schema_compatibility("orders", "NONE")
    await backend.delete_topic("orders")
    await backend.create_topic("orders", 1, CONFIG)
    assert await backend.schema_versions("orders") == []
    assert await backend.latest_schema("orders") is None
    assert await backend.schema_compatibility("orders") is None
    assert (await backend.add_schema_version("orders", b"{}", 0)).version == 1


async def test_concurrent_registrations_against_one_version_let_one_win(
    backend: AnyBackend,
) -> None:
    await backend.create_topic("orders", 1, CONFIG)
    outcomes = await asyncio.gather(
        *(backend.add_schema_version("orders", f'{{"n":{i}}}'.encode(), 0) for i in range(5)),
        return_exceptions=True,
    )
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(won) == 1
    assert all(isinstance(o, SchemaVersionConflict) for o in outcomes if o not in won)
    assert await backend.schema_versions("orders") == won


def _batches(data: bytes) -> list[tuple[int, list[Record]]]:
    """(base offset, records) of each stored batch in `data`, checksums checked."""
    out = []
    position = 0
    while position < len(data):
        header = codec.read_header(data, position)
        assert header is not None
        codec.check_batch(data, header)
        out.append((header.base_offset, codec.decode_batch(data, header)))
        position = header.end_position
    return out


@pytest.mark.parametrize("reopen", [False, True], ids=["fresh", "reopened"])
async def test_read_batches_returns_whole_batches_from_the_one_holding_the_offset(
    backend: AnyBackend, reopen_backend: Callable[[], Awaitable[AnyBackend]], reopen: bool
) -> None:
    """Fresh, the embedded log answers from its tail cache; reopened, from its segments
    (small segments, so batches span several files)."""
    await backend.create_topic("t", 1, TopicConfig(segment_bytes=1024))
    appended = [
        await backend.append("t", 0, [NewRecord(bytes([b]) * 100, key=b"k")] * (1 + b % 3))
        for b in range(12)
    ]
    if reopen:
        backend = await reopen_backend()
    everything = _batches(await backend.read_batches("t", 0, 0, MiB))
    records = [r for _base, batch in everything for r in batch]
    assert [r.offset for r in records] == list(range(sum(a.count for a in appended)))
    assert records == await backend.read("t", 0, 0, 1000, MiB)
    # from inside the fourth append: its whole batch first (JetStream: the run of records
    # sharing its timestamp), then as many as fit
    inside = appended[3].base_offset + 1
    found = _batches(await backend.read_batches("t", 0, inside, 1))
    assert len(found) == 1
    base, batch = found[0]
    assert base <= inside < base + len(batch)
    some = await backend.read_batches("t", 0, appended[5].base_offset, 500)
    assert len(_batches(some)) == 1 or len(some) <= 500  # what fits, or one whole batch
    assert _batches(some)[0][0] == appended[5].base_offset
    end = appended[-1].base_offset + appended[-1].count
    assert await backend.read_batches("t", 0, end, MiB) == b""
    with pytest.raises(OffsetOutOfRange):
        await backend.read_batches("t", 0, end + 1, MiB)
