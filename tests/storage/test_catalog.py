"""The catalog against real sqlite files: persistence, atomicity, expiry and kill -9 durability."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.catalog import PURGE_EVERY_SAVES, SCHEMA_VERSION, Catalog
from storage.errors import (
    GroupNotFound,
    StorageClosed,
    StorageError,
    TopicExists,
    TopicNotFound,
)
from storage.types import DAY_MS, MiB, TopicConfig, TopicInfo, TopicPartition

ROOT = Path(__file__).resolve().parents[2]

UNLIMITED = TopicConfig(retention_ms=None, retention_bytes=None, segment_bytes=1024, segment_ms=1)
BOUNDED = TopicConfig(
    retention_ms=3 * DAY_MS, retention_bytes=5 * MiB, segment_bytes=2 * MiB, segment_ms=60_000
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.sqlite"


@pytest.fixture
async def catalog(path: Path) -> AsyncIterator[Catalog]:
    catalog = await Catalog.open(path)
    try:
        yield catalog
    finally:
        await catalog.close()


async def reopen(catalog: Catalog, path: Path) -> Catalog:
    await catalog.close()
    return await Catalog.open(path)


def tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


async def test_topics_round_trip_exactly_across_reopen(catalog: Catalog, path: Path) -> None:
    topics = [
        TopicInfo("orders", 12, BOUNDED),
        TopicInfo("a.b-c_d", 1, UNLIMITED),
        TopicInfo("defaults", 3, TopicConfig()),
    ]
    for info in topics:
        await catalog.add_topic(info)

    catalog = await reopen(catalog, path)
    try:
        assert await catalog.list_topics() == sorted(topics, key=lambda info: info.name)
        for info in topics:
            assert await catalog.get_topic(info.name) == info
        assert await catalog.get_topic("missing") is None
    finally:
        await catalog.close()


async def test_add_topic_with_a_taken_name_raises_with_the_existing_info(
    catalog: Catalog,
) -> None:
    existing = TopicInfo("orders", 4, BOUNDED)
    await catalog.add_topic(existing)

    with pytest.raises(TopicExists) as raised:
        await catalog.add_topic(TopicInfo("orders", 8, UNLIMITED))
    assert raised.value.existing == existing
    with pytest.raises(TopicExists):
        await catalog.add_topic(existing)
    assert await catalog.list_topics() == [existing]


async def test_remove_topic_drops_its_committed_offsets(catalog: Catalog, path: Path) -> None:
    await catalog.add_topic(TopicInfo("gone", 2, BOUNDED))
    await catalog.add_topic(TopicInfo("kept", 1, BOUNDED))
    await catalog.commit_offsets("g", {tp("gone", 0): 5, tp("gone", 1): 6, tp("kept", 0): 7})
    await catalog.commit_offsets("h", {tp("gone", 0): 1})

    await catalog.remove_topic("gone")

    catalog = await reopen(catalog, path)
    try:
        assert await catalog.get_topic("gone") is None
        assert await catalog.committed_offsets("g") == {tp("kept", 0): 7}
        assert await catalog.committed_offsets("h") == {}
        assert await catalog.list_groups() == ["g"]
        with pytest.raises(TopicNotFound):
            await catalog.remove_topic("gone")
    finally:
        await catalog.close()


async def test_committed_offsets_persist_and_are_overwritten(catalog: Catalog, path: Path) -> None:
    assert await catalog.committed_offsets("g") == {}
    await catalog.commit_offsets("g", {tp("t", 1): 10, tp("t", 0): 20, tp("s", 3): 0})
    await catalog.commit_offsets("g", {tp("t", 1): 11})
    await catalog.commit_offsets("other", {tp("t", 0): 99})
    await catalog.commit_offsets("g", {})

    catalog = await reopen(catalog, path)
    try:
        offsets = await catalog.committed_offsets("g")
        assert offsets == {tp("t", 1): 11, tp("t", 0): 20, tp("s", 3): 0}
        assert list(offsets) == [tp("s", 3), tp("t", 0), tp("t", 1)]
        assert await catalog.committed_offsets("other") == {tp("t", 0): 99}
    finally:
        await catalog.close()


async def test_a_commit_failing_halfway_stores_nothing(catalog: Catalog, path: Path) -> None:
    await catalog.commit_offsets("g", {tp("t", 0): 3})

    # Rows are written in order: t/0 and t/1 are already in the transaction when the
    # CHECK constraint refuses t/2.
    with pytest.raises(ValueError, match="catalog refused"):
        await catalog.commit_offsets("g", {tp("t", 0): 5, tp("t", 1): 7, tp("t", 2): -1})
    assert await catalog.committed_offsets("g") == {tp("t", 0): 3}

    catalog = await reopen(catalog, path)
    try:
        assert await catalog.committed_offsets("g") == {tp("t", 0): 3}
        await catalog.commit_offsets("g", {tp("t", 0): 4, tp("t", 1): 8})
        assert await catalog.committed_offsets("g") == {tp("t", 0): 4, tp("t", 1): 8}
    finally:
        await catalog.close()


async def test_a_cancelled_commit_is_all_or_nothing(catalog: Catalog) -> None:
    offsets = {tp("t", p): 42 for p in range(500)}
    task = asyncio.create_task(catalog.commit_offsets("g", offsets))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    stored = await catalog.committed_offsets("g")
    assert stored in ({}, offsets)
    await catalog.commit_offsets("g", {tp("t", 0): 43})
    assert (await catalog.committed_offsets("g"))[tp("t", 0)] == 43


async def test_concurrent_commits_of_many_groups_all_land(catalog: Catalog) -> None:
    groups = [f"group-{i}" for i in range(20)]
    await asyncio.gather(
        *(
            catalog.commit_offsets(group, {tp("t", p): i * 10 + p for p in range(4)})
            for i, group in enumerate(groups)
        )
    )
    assert await catalog.list_groups() == sorted(groups)
    for i, group in enumerate(groups):
        assert await catalog.committed_offsets(group) == {tp("t", p): i * 10 + p for p in range(4)}


async def test_group_metadata_persists_and_is_replaced(catalog: Catalog, path: Path) -> None:
    assert await catalog.load_group_metadata("g") is None
    await catalog.save_group_metadata("g", b"generation 1")
    await catalog.save_group_metadata("g", b"\x00\xffgeneration 2")

    catalog = await reopen(catalog, path)
    try:
        assert await catalog.load_group_metadata("g") == b"\x00\xffgeneration 2"
        assert await catalog.load_group_metadata("other") is None
    finally:
        await catalog.close()


async def test_groups_are_listed_and_deleted_with_offsets_and_metadata(
    catalog: Catalog, path: Path
) -> None:
    await catalog.commit_offsets("only-offsets", {tp("t", 0): 1})
    await catalog.save_group_metadata("only-metadata", b"m")
    await catalog.commit_offsets("both", {tp("t", 0): 2})
    await catalog.save_group_metadata("both", b"m")
    assert await catalog.list_groups() == ["both", "only-metadata", "only-offsets"]

    for group in ("both", "only-metadata"):
        await catalog.delete_group(group)
    with pytest.raises(GroupNotFound):
        await catalog.delete_group("both")
    with pytest.raises(GroupNotFound):
        await catalog.delete_group("never")

    catalog = await reopen(catalog, path)
    try:
        assert await catalog.list_groups() == ["only-offsets"]
        assert await catalog.committed_offsets("both") == {}
        assert await catalog.load_group_metadata("both") is None
    finally:
        await catalog.close()


async def test_idempotent_results_persist_until_they_expire(catalog: Catalog, path: Path) -> None:
    await catalog.save_idempotent_result("k1", b'{"offsets": []}', expires_at_ms=2_000)
    await catalog.save_idempotent_result("k2", b"first", expires_at_ms=2_000)
    await catalog.save_idempotent_result("k2", b"second", expires_at_ms=5_000)

    catalog = await reopen(catalog, path)
    try:
        assert await catalog.load_idempotent_result("k1", now_ms=1_999) == b'{"offsets": []}'
        assert await catalog.load_idempotent_result("k1", now_ms=2_000) is None
        assert await catalog.load_idempotent_result("k2", now_ms=4_999) == b"second"
        assert await catalog.load_idempotent_result("missing", now_ms=0) is None
    finally:
        await catalog.close()


async def test_expired_idempotent_results_are_purged(catalog: Catalog, path: Path) -> None:
    far_future_ms = 2**62
    # The first save after open purges, before its own row is written.
    await catalog.save_idempotent_result("expired", b"x", expires_at_ms=1)
    await catalog.save_idempotent_result("live", b"y", expires_at_ms=far_future_ms)

    catalog = await reopen(catalog, path)
    try:
        await catalog.save_idempotent_result("newer", b"z", expires_at_ms=far_future_ms)
        for i in range(PURGE_EVERY_SAVES - 1):
            await catalog.save_idempotent_result(f"short-{i}", b"", expires_at_ms=1)
        assert _idempotency_keys(path) >= {"live", "newer", "short-0"}
        assert "expired" not in _idempotency_keys(path)

        await catalog.save_idempotent_result("purges-again", b"", expires_at_ms=far_future_ms)
        assert _idempotency_keys(path) == {"live", "newer", "purges-again"}
    finally:
        await catalog.close()


def _idempotency_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT idempotency_key FROM idempotent_results")}


async def test_the_file_is_wal_and_versioned(catalog: Catalog, path: Path) -> None:
    await catalog.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        db.commit()
    finally:
        db.close()

    with pytest.raises(StorageError, match="newer than this logway supports"):
        await Catalog.open(path)


async def test_a_file_that_is_not_a_catalog_is_refused(tmp_path: Path) -> None:
    not_sqlite = tmp_path / "catalog.sqlite"
    not_sqlite.write_bytes(b"this is not a database, and it must stay as it is" * 100)
    with pytest.raises(StorageError, match="not a database"):
        await Catalog.open(not_sqlite)
    assert not_sqlite.read_bytes() == b"this is not a database, and it must stay as it is" * 100

    with pytest.raises(StorageError, match="does not exist"):
        await Catalog.open(tmp_path / "missing-dir" / "catalog.sqlite")


async def test_a_closed_catalog_refuses_calls(catalog: Catalog) -> None:
    await catalog.close()
    with pytest.raises(StorageClosed):
        await catalog.list_topics()
    with pytest.raises(StorageClosed):
        await catalog.commit_offsets("g", {tp("t", 0): 1})
    await catalog.close()


_COMMITTER = textwrap.dedent(
    """
    import asyncio
    import sys
    from pathlib import Path

    from storage.catalog import Catalog
    from storage.types import TopicPartition


    async def main() -> None:
        catalog = await Catalog.open(Path(sys.argv[1]))
        n = 0
        while True:
            n += 1
            await catalog.commit_offsets(
                "g", {TopicPartition("t", p): n for p in range(3)}
            )
            print(f"committed {n}", flush=True)


    asyncio.run(main())
    """
)


async def test_acknowledged_commits_survive_kill_9(path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _COMMITTER, str(path), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        for _ in range(50):
            line = await process.stdout.readline()
            assert line.startswith(b"committed "), line
    finally:
        process.kill()
        await process.wait()
    # Lines printed before the kill but not read yet were acknowledged too.
    last_line = ([line, *(await process.stdout.read()).splitlines()])[-1]
    reported = int(last_line.split()[1])

    catalog = await Catalog.open(path)
    try:
        offsets = await catalog.committed_offsets("g")
    finally:
        await catalog.close()
    assert offsets == {tp("t", p): offsets[tp("t", 0)] for p in range(3)}
    assert offsets[tp("t", 0)] >= reported
