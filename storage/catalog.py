"""The catalog: topics, their schemas, committed offsets, group metadata and idempotent
results in SQLite.

One aiosqlite connection in autocommit mode; every operation runs alone on it (an asyncio
lock), and each write is one explicit `BEGIN IMMEDIATE … COMMIT`, so a multi-partition
offset commit is all-or-nothing. Operations are shielded from cancellation: a caller that
is cancelled (say, an HTTP client went away) abandons the result, never a half-run
transaction.

Durability: WAL journal with `synchronous=FULL`, so the WAL is fsynced before a commit
returns. An acknowledged commit survives kill -9 (the WAL write alone is enough for that)
and power loss (the fsync). NORMAL would fsync only at checkpoints and could lose the last
acknowledged commits on power loss, which breaks "committed offsets survive restarts".

The schema is versioned: `MIGRATIONS[i]` takes the schema from version i to i + 1, and
`migrate` applies whatever a file lacks, each step in its own transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

import aiosqlite

from storage.errors import (
    DiskFull,
    GroupNotFound,
    SchemaVersionConflict,
    SchemaVersionNotFound,
    StorageClosed,
    StorageError,
    StorageWriteError,
    TopicExists,
    TopicNotFound,
)
from storage.types import SchemaVersion, TopicConfig, TopicInfo, TopicPartition

T = TypeVar("T")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE topics (
            name TEXT PRIMARY KEY,
            partitions INTEGER NOT NULL CHECK (partitions >= 1),
            retention_ms INTEGER CHECK (retention_ms IS NULL OR retention_ms > 0),
            retention_bytes INTEGER CHECK (retention_bytes IS NULL OR retention_bytes > 0),
            segment_bytes INTEGER NOT NULL CHECK (segment_bytes > 0),
            segment_ms INTEGER NOT NULL CHECK (segment_ms > 0)
        ) WITHOUT ROWID""",
        """CREATE TABLE committed_offsets (
            group_name TEXT NOT NULL,
            topic TEXT NOT NULL,
            partition_index INTEGER NOT NULL CHECK (partition_index >= 0),
            committed_offset INTEGER NOT NULL CHECK (committed_offset >= 0),
            PRIMARY KEY (group_name, topic, partition_index)
        ) WITHOUT ROWID""",
        "CREATE INDEX committed_offsets_by_topic ON committed_offsets (topic)",
        """CREATE TABLE group_metadata (
            group_name TEXT PRIMARY KEY,
            metadata BLOB NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE idempotent_results (
            idempotency_key TEXT PRIMARY KEY,
            result BLOB NOT NULL,
            expires_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX idempotent_results_by_expiry ON idempotent_results (expires_at_ms)",
    ),
    (
        # A topic's schema versions, and its compatibility setting with the highest number
        # it ever gave (deleting the newest version must not free its number for reuse).
        """CREATE TABLE schema_versions (
            topic TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            schema BLOB NOT NULL,
            registered_at_ms INTEGER NOT NULL,
            PRIMARY KEY (topic, version)
        ) WITHOUT ROWID""",
        """CREATE TABLE schema_settings (
            topic TEXT PRIMARY KEY,
            compatibility TEXT,
            last_version INTEGER NOT NULL DEFAULT 0 CHECK (last_version >= 0)
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# Expired idempotency rows are deleted on the first save after open and every this many
# saves after that: often enough to bound the table, rarely enough to cost nothing.
PURGE_EVERY_SAVES = 256

_TOPIC_COLUMNS = "name, partitions, retention_ms, retention_bytes, segment_bytes, segment_ms"


async def migrate(db: aiosqlite.Connection) -> int:
    """Bring the schema of an autocommit connection up to SCHEMA_VERSION; return the old version.

    A file written by a newer logway (a version above SCHEMA_VERSION) is refused rather
    than guessed at.
    """
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    rows = list(await db.execute_fetchall("SELECT version FROM schema_version"))
    found = int(rows[0][0]) if rows else 0
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"catalog schema version {found} is newer than this logway supports ({SCHEMA_VERSION})"
        )
    for version in range(found, SCHEMA_VERSION):
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                await db.execute(statement)
            await db.execute("DELETE FROM schema_version")
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
        except BaseException:
            await db.rollback()
            raise
        await db.execute("COMMIT")
    return found


class Catalog:
    """Persistent metadata of the embedded backend. Create with `await Catalog.open(path)`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db: aiosqlite.Connection | None = db
        self._lock = asyncio.Lock()
        self._saves_until_purge = 0

    @classmethod
    async def open(cls, path: Path) -> Catalog:
        """Open (creating if needed) the sqlite file at `path`; its directory must exist.

        A file that is not a catalog, or cannot be opened, raises StorageError.
        """
        # Checked here because aiosqlite's own failure path leaves its worker thread to
        # report to the event loop after connect() has returned.
        if not path.parent.is_dir():
            raise StorageError(f"catalog {path}: directory {path.parent} does not exist")
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"catalog {path}: {exc}") from exc
        try:
            async with db.execute("PRAGMA journal_mode=WAL") as cursor:
                row = await cursor.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise StorageError(f"catalog {path}: cannot switch to WAL journal mode")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await migrate(db)
        except sqlite3.Error as exc:
            await db.close()
            raise StorageError(f"catalog {path}: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        """Wait for the running operation, then close; later calls raise StorageClosed."""
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def _run(self, operation: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `operation` alone on the connection, to completion even if the caller is
        cancelled, translating sqlite errors into StorageErrors."""
        return await asyncio.shield(self._run_locked(operation))

    async def _run_locked(self, operation: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._lock:
            if self._db is None:
                raise StorageClosed("the catalog is closed")
            try:
                return await operation(self._db)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"catalog refused the values: {exc}") from exc
            except sqlite3.Error as exc:
                if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    raise DiskFull(f"catalog: {exc}") from exc
                raise StorageWriteError(f"catalog: {exc}") from exc

    @staticmethod
    async def _in_transaction(db: aiosqlite.Connection, body: Callable[[], Awaitable[T]]) -> T:
        """Run `body` inside BEGIN IMMEDIATE … COMMIT, rolling back if it raises."""
        await db.execute("BEGIN IMMEDIATE")
        try:
            result = await body()
        except BaseException:
            await db.rollback()
            raise
        await db.execute("COMMIT")
        return result

    # -- topics -------------------------------------------------------------------------

    async def add_topic(self, info: TopicInfo) -> None:
        """Record a new topic. Raises TopicExists, carrying the stored info, if the name is taken."""

        async def operation(db: aiosqlite.Connection) -> None:
            async def body() -> None:
                existing = await _select_topic(db, info.name)
                if existing is not None:
                    raise TopicExists(existing)
                config = info.config
                await db.execute(
                    f"INSERT INTO topics ({_TOPIC_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        info.name,
                        info.partitions,
                        config.retention_ms,
                        config.retention_bytes,
                        config.segment_bytes,
                        config.segment_ms,
                    ),
                )

            await self._in_transaction(db, body)

        await self._run(operation)

    async def remove_topic(self, name: str) -> None:
        """Forget a topic, its schemas and, as Kafka does, every group's committed offsets
        for it."""

        async def operation(db: aiosqlite.Connection) -> None:
            async def body() -> None:
                async with db.execute("DELETE FROM topics WHERE name = ?", (name,)) as cursor:
                    if cursor.rowcount == 0:
                        raise TopicNotFound(name)
                for table in ("committed_offsets", "schema_versions", "schema_settings"):
                    await db.execute(f"DELETE FROM {table} WHERE topic = ?", (name,))

            await self._in_transaction(db, body)

        await self._run(operation)

    async def get_topic(self, name: str) -> TopicInfo | None:
        return await self._run(lambda db: _select_topic(db, name))

    async def list_topics(self) -> list[TopicInfo]:
        """All topics, sorted by name."""

        async def operation(db: aiosqlite.Connection) -> list[TopicInfo]:
            rows = await db.execute_fetchall(f"SELECT {_TOPIC_COLUMNS} FROM topics ORDER BY name")
            return [_topic_from_row(row) for row in rows]

        return await self._run(operation)

    # -- topic schemas ------------------------------------------------------------------

    async def schema_versions(self, topic: str) -> list[SchemaVersion]:
        """The topic's kept schema versions, oldest first. Raises TopicNotFound."""

        async def operation(db: aiosqlite.Connection) -> list[SchemaVersion]:
            await _require_topic(db, topic)
            return await _select_versions(db, topic)

        return await self._run(operation)

    async def latest_schemas(self) -> dict[str, SchemaVersion]:
        """The newest kept schema version of every topic that has one."""

        async def operation(db: aiosqlite.Connection) -> dict[str, SchemaVersion]:
            rows = await db.execute_fetchall(
                "SELECT topic, version, schema, registered_at_ms FROM schema_versions"
                " WHERE (topic, version) IN"
                " (SELECT topic, MAX(version) FROM schema_versions GROUP BY topic)"
            )
            return {row[0]: SchemaVersion(row[1], bytes(row[2]), row[3]) for row in rows}

        return await self._run(operation)

    async def add_schema_version(
        self, topic: str, schema: bytes, latest: int, registered_at_ms: int
    ) -> SchemaVersion:
        """Keep `schema` as the next version if the newest kept one is still `latest` (0:
        none). Raises TopicNotFound or SchemaVersionConflict."""

        async def operation(db: aiosqlite.Connection) -> SchemaVersion:
            async def body() -> SchemaVersion:
                await _require_topic(db, topic)
                versions = await _select_versions(db, topic)
                newest = versions[-1].version if versions else 0
                if newest != latest:
                    raise SchemaVersionConflict(topic, latest, newest)
                rows = list(
                    await db.execute_fetchall(
                        "SELECT last_version FROM schema_settings WHERE topic = ?", (topic,)
                    )
                )
                added = SchemaVersion(
                    max(newest, rows[0][0] if rows else 0) + 1, schema, registered_at_ms
                )
                await db.execute(
                    "INSERT INTO schema_versions (topic, version, schema, registered_at_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (topic, added.version, schema, registered_at_ms),
                )
                await db.execute(
                    "INSERT INTO schema_settings (topic, last_version) VALUES (?, ?)"
                    " ON CONFLICT (topic) DO UPDATE SET last_version = excluded.last_version",
                    (topic, added.version),
                )
                return added

            return await self._in_transaction(db, body)

        return await self._run(operation)

    async def delete_schema_version(self, topic: str, version: int) -> None:
        """Delete `version` if it is the newest kept one. Raises TopicNotFound,
        SchemaVersionNotFound or SchemaVersionConflict."""

        async def operation(db: aiosqlite.Connection) -> None:
            async def body() -> None:
                await _require_topic(db, topic)
                kept = [v.version for v in await _select_versions(db, topic)]
                if version not in kept:
                    raise SchemaVersionNotFound(topic, version)
                if version != kept[-1]:
                    raise SchemaVersionConflict(topic, version, kept[-1])
                await db.execute(
                    "DELETE FROM schema_versions WHERE topic = ? AND version = ?",
                    (topic, version),
                )

            await self._in_transaction(db, body)

        await self._run(operation)

    async def schema_compatibility(self, topic: str) -> str | None:
        async def operation(db: aiosqlite.Connection) -> str | None:
            await _require_topic(db, topic)
            rows = list(
                await db.execute_fetchall(
                    "SELECT compatibility FROM schema_settings WHERE topic = ?", (topic,)
                )
            )
            return str(rows[0][0]) if rows and rows[0][0] is not None else None

        return await self._run(operation)

    async def set_schema_compatibility(self, topic: str, compatibility: str | None) -> None:
        async def operation(db: aiosqlite.Connection) -> None:
            async def body() -> None:
                await _require_topic(db, topic)
                await db.execute(
                    "INSERT INTO schema_settings (topic, compatibility) VALUES (?, ?)"
                    " ON CONFLICT (topic) DO UPDATE SET compatibility = excluded.compatibility",
                    (topic, compatibility),
                )

            await self._in_transaction(db, body)

        await self._run(operation)

    # -- consumer groups ----------------------------------------------------------------

    async def commit_offsets(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Store the next offset to read for each partition, all in one transaction.

        A negative offset or partition raises ValueError and stores nothing.
        """
        if not offsets:
            return
        rows = [(group, tp.topic, tp.partition, offset) for tp, offset in offsets.items()]

        async def operation(db: aiosqlite.Connection) -> None:
            async def body() -> None:
                await db.executemany(
                    "INSERT INTO committed_offsets"
                    " (group_name, topic, partition_index, committed_offset) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (group_name, topic, partition_index)"
                    " DO UPDATE SET committed_offset = excluded.committed_offset",
                    rows,
                )

            await self._in_transaction(db, body)

        await self._run(operation)

    async def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets ({} if it never committed), ordered by partition."""

        async def operation(db: aiosqlite.Connection) -> dict[TopicPartition, int]:
            rows = await db.execute_fetchall(
                "SELECT topic, partition_index, committed_offset FROM committed_offsets"
                " WHERE group_name = ? ORDER BY topic, partition_index",
                (group,),
            )
            return {TopicPartition(row[0], row[1]): row[2] for row in rows}

        return await self._run(operation)

    async def list_groups(self) -> list[str]:
        """Groups that have committed offsets or saved metadata, sorted."""

        async def operation(db: aiosqlite.Connection) -> list[str]:
            rows = await db.execute_fetchall(
                "SELECT group_name FROM committed_offsets"
                " UNION SELECT group_name FROM group_metadata ORDER BY 1"
            )
            return [row[0] for row in rows]

        return await self._run(operation)

    async def delete_group(self, group: str) -> None:
        """Forget a group's offsets and metadata. Raises GroupNotFound if it has neither."""

        async def operation(db: aiosqlite.Connection) -> None:
            async def body() -> None:
                deleted = 0
                for table in ("committed_offsets", "group_metadata"):
                    async with db.execute(
                        f"DELETE FROM {table} WHERE group_name = ?", (group,)
                    ) as cursor:
                        deleted += cursor.rowcount
                if deleted == 0:
                    raise GroupNotFound(group)

            await self._in_transaction(db, body)

        await self._run(operation)

    async def load_group_metadata(self, group: str) -> bytes | None:
        """The coordinator's opaque state for `group`, as last saved, or None."""

        async def operation(db: aiosqlite.Connection) -> bytes | None:
            rows = list(
                await db.execute_fetchall(
                    "SELECT metadata FROM group_metadata WHERE group_name = ?", (group,)
                )
            )
            return bytes(rows[0][0]) if rows else None

        return await self._run(operation)

    async def save_group_metadata(self, group: str, metadata: bytes) -> None:
        async def operation(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO group_metadata (group_name, metadata) VALUES (?, ?)"
                " ON CONFLICT (group_name) DO UPDATE SET metadata = excluded.metadata",
                (group, metadata),
            )

        await self._run(operation)

    # -- produce idempotency ------------------------------------------------------------

    async def load_idempotent_result(self, key: str, now_ms: int) -> bytes | None:
        """The result saved under `key`, or None if there is none or it expired by `now_ms`."""

        async def operation(db: aiosqlite.Connection) -> bytes | None:
            rows = list(
                await db.execute_fetchall(
                    "SELECT result FROM idempotent_results"
                    " WHERE idempotency_key = ? AND expires_at_ms > ?",
                    (key, now_ms),
                )
            )
            return bytes(rows[0][0]) if rows else None

        return await self._run(operation)

    async def save_idempotent_result(self, key: str, result: bytes, expires_at_ms: int) -> None:
        """Save (or replace) the result for `key` until `expires_at_ms` (wall clock, ms).

        Now and then (see PURGE_EVERY_SAVES) it also deletes rows expired by the wall clock.
        """

        async def operation(db: aiosqlite.Connection) -> None:
            purge = self._saves_until_purge == 0

            async def body() -> None:
                if purge:
                    await db.execute(
                        "DELETE FROM idempotent_results WHERE expires_at_ms <= ?",
                        (time.time_ns() // 1_000_000,),
                    )
                await db.execute(
                    "INSERT INTO idempotent_results (idempotency_key, result, expires_at_ms)"
                    " VALUES (?, ?, ?) ON CONFLICT (idempotency_key) DO UPDATE"
                    " SET result = excluded.result, expires_at_ms = excluded.expires_at_ms",
                    (key, result, expires_at_ms),
                )

            await self._in_transaction(db, body)
            self._saves_until_purge = (
                PURGE_EVERY_SAVES - 1 if purge else self._saves_until_purge - 1
            )

        await self._run(operation)


async def _require_topic(db: aiosqlite.Connection, name: str) -> None:
    if not list(await db.execute_fetchall("SELECT 1 FROM topics WHERE name = ?", (name,))):
        raise TopicNotFound(name)


async def _select_versions(db: aiosqlite.Connection, topic: str) -> list[SchemaVersion]:
    rows = await db.execute_fetchall(
        "SELECT version, schema, registered_at_ms FROM schema_versions WHERE topic = ?"
        " ORDER BY version",
        (topic,),
    )
    return [SchemaVersion(row[0], bytes(row[1]), row[2]) for row in rows]


async def _select_topic(db: aiosqlite.Connection, name: str) -> TopicInfo | None:
    rows = list(
        await db.execute_fetchall(f"SELECT {_TOPIC_COLUMNS} FROM topics WHERE name = ?", (name,))
    )
    return _topic_from_row(rows[0]) if rows else None


def _topic_from_row(row: sqlite3.Row) -> TopicInfo:
    name, partitions, retention_ms, retention_bytes, segment_bytes, segment_ms = row
    return TopicInfo(
        name=name,
        partitions=partitions,
        config=TopicConfig(
            retention_ms=retention_ms,
            retention_bytes=retention_bytes,
            segment_bytes=segment_bytes,
            segment_ms=segment_ms,
        ),
    )
