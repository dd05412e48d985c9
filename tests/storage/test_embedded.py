"""EmbeddedBackend end to end on a real data directory, through the Backend protocol."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from storage.backend import Backend
from storage.embedded import EmbeddedBackend
from storage.errors import (
    DataDirInUse,
    GroupNotFound,
    InvalidTopicName,
    PartitionNotFound,
    StorageClosed,
    TopicExists,
    TopicNotFound,
)
from storage.types import DurabilityPolicy, NewRecord, TopicConfig, TopicInfo, TopicPartition

CONFIG = TopicConfig(segment_bytes=4096)
HOSTILE_NAMES = ["../x", ".", "..", "a/b", "", "x" * 250, "a\0b", "/abs", "a\\b", "ü", "a b"]


async def _open(data_dir: Path) -> EmbeddedBackend:
    return await EmbeddedBackend.open(data_dir, DurabilityPolicy(), retention_interval_s=3600)


async def test_topics_create_idempotent_conflict_delete(tmp_path: Path) -> None:
    backend: Backend = await _open(tmp_path)
    try:
        assert await backend.create_topic("orders", 3, CONFIG) is True
        assert await backend.create_topic("orders", 3, CONFIG) is False
        with pytest.raises(TopicExists) as conflict:
            await backend.create_topic("orders", 4, CONFIG)
        assert conflict.value.existing == TopicInfo("orders", 3, CONFIG)
        assert await backend.create_topic("a.b-c_1", 1, TopicConfig()) is True
        assert [t.name for t in await backend.list_topics()] == ["a.b-c_1", "orders"]
        assert await backend.get_topic("orders") == TopicInfo("orders", 3, CONFIG)
        assert [p.is_dir() for p in sorted((tmp_path / "topics" / "orders").iterdir())] == [
            True
        ] * 3
        await backend.delete_topic("orders")
        assert not (tmp_path / "topics" / "orders").exists()
        with pytest.raises(TopicNotFound):
            await backend.get_topic("orders")
        with pytest.raises(TopicNotFound):
            await backend.delete_topic("orders")
        with pytest.raises(TopicNotFound):
            await backend.append("orders", 0, [NewRecord(b"x")])
        # Re-created after a delete, a topic starts from offset 0 again.
        await backend.create_topic("orders", 1, CONFIG)
        assert (await backend.append("orders", 0, [NewRecord(b"x")])).base_offset == 0
    finally:
        await backend.close()


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_hostile_topic_names_touch_nothing(tmp_path: Path, name: str) -> None:
    backend = await _open(tmp_path / "data")
    try:
        with pytest.raises(InvalidTopicName):
            await backend.create_topic(name, 1, CONFIG)
        with pytest.raises(InvalidTopicName):
            await backend.delete_topic(name)
        with pytest.raises(TopicNotFound):
            await backend.append(name, 0, [NewRecord(b"x")])
        assert list((tmp_path / "data" / "topics").iterdir()) == []
        assert os.listdir(tmp_path) == ["data"]
    finally:
        await backend.close()


async def test_longest_legal_name_works(tmp_path: Path) -> None:
    backend = await _open(tmp_path)
    try:
        name = "n" * 249
        assert await backend.create_topic(name, 1, CONFIG)
        assert (await backend.append(name, 0, [NewRecord(b"x")])).base_offset == 0
    finally:
        await backend.close()


async def test_records_and_topics_survive_reopen(tmp_path: Path) -> None:
    backend = await _open(tmp_path)
    await backend.create_topic("t", 2, CONFIG)
    await asyncio.gather(
        *(backend.append("t", i % 2, [NewRecord(b"v%d" % i, key=b"k")]) for i in range(100))
    )
    before = [await backend.read("t", p, 0, 1000, 10**6) for p in (0, 1)]
    await backend.commit_offsets("g", {TopicPartition("t", 0): 7, TopicPartition("t", 1): 3})
    await backend.close()
    with pytest.raises(StorageClosed):
        await backend.list_topics()

    backend = await _open(tmp_path)
    try:
        assert await backend.list_topics() == [TopicInfo("t", 2, CONFIG)]
        assert [await backend.read("t", p, 0, 1000, 10**6) for p in (0, 1)] == before
        info = await backend.partition_info("t", 0)
        assert (info.log_start_offset, info.end_offset) == (0, 50)
        assert await backend.committed_offsets("g") == {
            TopicPartition("t", 0): 7,
            TopicPartition("t", 1): 3,
        }
        assert await backend.list_groups() == ["g"]
        await backend.delete_group("g")
        with pytest.raises(GroupNotFound):
            await backend.delete_group("g")
        with pytest.raises(PartitionNotFound):
            await backend.partition_info("t", 2)
    finally:
        await backend.close()


async def test_wait_for_records_wakes_on_append_and_times_out(tmp_path: Path) -> None:
    backend = await _open(tmp_path)
    try:
        await backend.create_topic("t", 2, CONFIG)
        assert await backend.wait_for_records("t", {0: 0, 1: 0}, 0.05) is False
        waiter = asyncio.ensure_future(backend.wait_for_records("t", {0: 0, 1: 0}, 30))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await backend.append("t", 1, [NewRecord(b"x")])
        assert await asyncio.wait_for(waiter, 5) is True
        deleted = asyncio.ensure_future(backend.wait_for_records("t", {0: 0}, 30))
        await asyncio.sleep(0.01)
        await backend.delete_topic("t")
        assert await asyncio.wait_for(deleted, 5) is True
        with pytest.raises(TopicNotFound):
            await backend.read("t", 0, 0, 1, 1)
    finally:
        await backend.close()


async def test_close_wakes_waiters(tmp_path: Path) -> None:
    backend = await _open(tmp_path)
    await backend.create_topic("t", 1, CONFIG)
    waiter = asyncio.ensure_future(backend.wait_for_records("t", {0: 0}, None))
    await asyncio.sleep(0.01)
    await backend.close()
    assert await asyncio.wait_for(waiter, 5) is True


async def test_reconcile_catalog_and_directories(tmp_path: Path) -> None:
    backend = await _open(tmp_path)
    await backend.create_topic("kept", 2, CONFIG)
    await backend.append("kept", 0, [NewRecord(b"x")])
    await backend.close()
    # A directory without a catalog row (a crash between the two steps of create/delete).
    stray = tmp_path / "topics" / "stray" / "0"
    stray.mkdir(parents=True)
    (stray / f"{0:020d}.log").write_bytes(b"")
    # A catalog row whose directories are gone.
    shutil.rmtree(tmp_path / "topics" / "kept" / "1")
    backend = await _open(tmp_path)
    try:
        assert not (tmp_path / "topics" / "stray").exists()
        assert [t.name for t in await backend.list_topics()] == ["kept"]
        assert (await backend.partition_info("kept", 1)).end_offset == 0
        assert (await backend.partition_info("kept", 0)).end_offset == 1
        assert (await backend.append("kept", 1, [NewRecord(b"y")])).base_offset == 0
    finally:
        await backend.close()


async def test_idempotent_results_and_group_metadata(tmp_path: Path) -> None:
    backend = await _open(tmp_path)
    try:
        assert await backend.load_idempotent_result("k") is None
        await backend.save_idempotent_result("k", b"result", 60_000)
        assert await backend.load_idempotent_result("k") == b"result"
        await backend.save_idempotent_result("gone", b"old", 1)
        await asyncio.sleep(0.01)
        assert await backend.load_idempotent_result("gone") is None
        await backend.save_group_metadata("g", b"meta")
        assert await backend.load_group_metadata("g") == b"meta"
        await backend.check_writable()
    finally:
        await backend.close()
    with pytest.raises(StorageClosed):
        await backend.check_writable()


async def test_delete_while_appending_and_reading(tmp_path: Path) -> None:
    backend = await _open(tmp_path)
    try:
        await backend.create_topic("t", 2, CONFIG)

        async def produce(partition: int) -> int:
            done = 0
            for i in range(200):
                try:
                    await backend.append("t", partition, [NewRecord(b"%d" % i)])
                except (TopicNotFound, StorageClosed):
                    return done
                done += 1
            return done

        async def consume() -> None:
            offset = 0
            while True:
                try:
                    records = await backend.read("t", 0, offset, 10, 10**6)
                except (TopicNotFound, StorageClosed):
                    return
                offset += len(records)
                await backend.wait_for_records("t", {0: offset}, 1)

        tasks = [asyncio.ensure_future(produce(p)) for p in (0, 1)]
        reader = asyncio.ensure_future(consume())
        await asyncio.sleep(0.02)
        await backend.delete_topic("t")
        await asyncio.wait_for(asyncio.gather(*tasks, reader), 10)
        assert not (tmp_path / "topics" / "t").exists()
        await backend.create_topic("t", 1, CONFIG)
        assert (await backend.append("t", 0, [NewRecord(b"fresh")])).base_offset == 0
    finally:
        await backend.close()


async def test_a_cancelled_append_does_not_break_the_partition(tmp_path: Path) -> None:
    backend = await _open(tmp_path)
    try:
        await backend.create_topic("t", 1, CONFIG)
        appends = [
            asyncio.ensure_future(backend.append("t", 0, [NewRecord(b"%d" % i)])) for i in range(50)
        ]
        await asyncio.sleep(0)
        for append in appends[::2]:
            append.cancel()
        await asyncio.gather(*appends, return_exceptions=True)
        # Cancelled callers stop waiting; their records were already queued with offsets,
        # so the log stays dense and later appends continue after them.
        result = await backend.append("t", 0, [NewRecord(b"last")])
        records = await backend.read("t", 0, 0, 1000, 10**6)
        assert [r.offset for r in records] == list(range(result.base_offset + 1))
    finally:
        await backend.close()


async def test_a_data_dir_is_served_by_one_backend_at_a_time(tmp_path: Path) -> None:
    """Two writers in one data dir would interleave appends in the same segments: the
    second open is refused, naming the holder, until the first closes."""
    first = await _open(tmp_path)
    try:
        with pytest.raises(
            DataDirInUse, match=f"in use by another process \\(pid {os.getpid()}\\)"
        ):
            await _open(tmp_path)
        assert await first.create_topic("orders", 1, CONFIG) is True  # the holder goes on
    finally:
        await first.close()
    second = await _open(tmp_path)
    try:
        assert [t.name for t in await second.list_topics()] == ["orders"]
    finally:
        await second.close()
