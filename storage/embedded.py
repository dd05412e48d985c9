"""The embedded backend: the log engine on local disk plus the SQLite catalog.

    <data_dir>/catalog.sqlite3
    <data_dir>/topics/<topic>/<partition>/<base offset>.log|.index|.timeindex

The catalog is the source of truth for which topics exist. Creating a topic makes its
directories first and adds the catalog row second; deleting removes the row first and the
directories second. A crash between the two steps therefore leaves either directories
without a row, which `open` removes, or nothing at all; a row whose directories are
missing gets empty partitions on open.

Appends, reads, retention and waiting are the log engine's (storage.log,
storage.partition): group-committed appends under the server's DurabilityPolicy, and a
partition whose write or fsync failed refuses appends (StorageWriteError / DiskFull) until
the backend is reopened; `check_writable` reports such partitions and a nearly full disk.
Retention runs every `retention_interval_s` in a background task; `run_retention` runs it
now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from storage.catalog import Catalog
from storage.errors import (
    DiskFull,
    InvalidTopicName,
    StorageClosed,
    StorageWriteError,
    TopicExists,
    TopicNotFound,
)
from storage.files import DEFAULT_DIR_MODE, Files, lock_data_dir, make_data_dir, make_private_file
from storage.log import DEFAULT_RETENTION_INTERVAL_S, LogEngine
from storage.names import validate_topic_name
from storage.partition import now_ms
from storage.segment import FsyncObserver
from storage.types import (
    AppendResult,
    DurabilityPolicy,
    IdempotencyWindow,
    NewRecord,
    PartitionInfo,
    ProduceTag,
    Record,
    SchemaVersion,
    TopicConfig,
    TopicInfo,
    TopicPartition,
)

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite3"
TOPICS_DIR = "topics"
# /readyz reports not writable below this much free space.
MIN_FREE_BYTES = 16 * 1024 * 1024


class EmbeddedBackend:
    """storage.backend.Backend on local files. Create with `await EmbeddedBackend.open(...)`."""

    max_append_records: int | None = None  # an append of any size is one batch of the log

    def __init__(self, data_dir: Path, catalog: Catalog, engine: LogEngine, lock_fd: int) -> None:
        self.data_dir = data_dir
        self._lock_fd = lock_fd  # held until close (storage.files.lock_data_dir)
        self._catalog = catalog
        self._engine = engine
        self._topics: dict[str, TopicInfo] = {}
        # the newest schema version of each topic that has one: produce asks on every request
        self._latest_schemas: dict[str, SchemaVersion] = {}
        self._admin_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        durability: DurabilityPolicy | None = None,
        *,
        retention_interval_s: float = DEFAULT_RETENTION_INTERVAL_S,
        on_fsync: FsyncObserver | None = None,
        idempotency: IdempotencyWindow | None = None,
        data_mode: int = DEFAULT_DIR_MODE,
    ) -> EmbeddedBackend:
        """Open (creating if needed) a data directory and reconcile catalog and files.

        `on_fsync` is told the duration in seconds of every fsync an append waits for;
        `idempotency` bounds the produce tags read back from the log (storage.produce_tags).
        Directories are created with `data_mode`, files with it less the execute bits;
        a symlink or another user's entry in the data dir raises UnsafeEntry.
        """
        durability = durability or DurabilityPolicy()
        files = Files(data_mode)
        catalog_path = data_dir / CATALOG_FILE
        await asyncio.to_thread(make_data_dir, files, data_dir)
        async with contextlib.AsyncExitStack() as on_failure:  # undone in reverse
            lock_fd = await asyncio.to_thread(lock_data_dir, files, data_dir)
            on_failure.callback(os.close, lock_fd)
            await asyncio.to_thread(make_private_file, files, catalog_path, "-wal", "-shm")
            catalog = await Catalog.open(catalog_path)
            on_failure.push_async_callback(catalog.close)
            engine = await LogEngine.open(
                data_dir / TOPICS_DIR,
                durability,
                retention_interval_s,
                on_fsync=on_fsync,
                idempotency=idempotency,
                files=files,
            )
            backend = cls(data_dir, catalog, engine, lock_fd)
            on_failure.pop_all()  # the backend owns them now: close() releases them
        try:
            await backend._reconcile()
        except BaseException:
            await backend.close()
            raise
        return backend

    async def _reconcile(self) -> None:
        topics = await self._catalog.list_topics()
        known = {t.name for t in topics}
        for name in await self._engine.topic_dir_names():
            if name not in known:
                log.warning("removing topic directory %r, which has no catalog entry", name)
                try:
                    await self._engine.remove_topic(name)
                except InvalidTopicName:
                    log.warning("leaving %r alone: not a topic name", name)
        for info in topics:
            await self._engine.open_topic(info.name, info.partitions, info.config)
            self._topics[info.name] = info
        self._latest_schemas = await self._catalog.latest_schemas()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._engine.close()
        finally:
            try:
                await self._catalog.close()
            finally:
                os.close(self._lock_fd)  # another process may take the data dir now

    async def check_writable(self) -> None:
        if self._closed:
            raise StorageClosed("the backend is closed")
        failures = self._engine.io_failures()
        if failures:
            raise StorageWriteError("; ".join(failures))
        stat = await asyncio.to_thread(os.statvfs, self.data_dir)
        if stat.f_bavail * stat.f_frsize < MIN_FREE_BYTES:
            raise DiskFull(f"less than {MIN_FREE_BYTES} bytes free under {self.data_dir}")

    async def run_retention(self, now: int | None = None) -> int:
        """Apply retention now (it also runs every `retention_interval_s`)."""
        return await self._engine.run_retention(now)

    # -- topics -------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, config: TopicConfig) -> bool:
        validate_topic_name(name)
        info = TopicInfo(name, partitions, config)
        async with self._admin_lock:
            self._check_open()
            existing = self._topics.get(name)
            if existing is not None:
                if existing == info:
                    return False
                raise TopicExists(existing)
            await self._engine.open_topic(name, partitions, config)
            try:
                await self._catalog.add_topic(info)
            except BaseException:
                await self._engine.remove_topic(name)
                raise
            self._topics[name] = info
            return True

    async def delete_topic(self, name: str) -> None:
        validate_topic_name(name)
        async with self._admin_lock:
            self._check_open()
            if name not in self._topics:
                raise TopicNotFound(name)
            await self._catalog.remove_topic(name)
            del self._topics[name]
            self._latest_schemas.pop(name, None)
            await self._engine.remove_topic(name)

    async def list_topics(self) -> list[TopicInfo]:
        self._check_open()
        return [self._topics[name] for name in sorted(self._topics)]

    async def get_topic(self, name: str) -> TopicInfo:
        self._check_open()
        info = self._topics.get(name)
        if info is None:
            raise TopicNotFound(name)
        return info

    async def partition_info(self, topic: str, partition: int) -> PartitionInfo:
        return self._engine.partition_info(topic, partition)

    # -- records ------------------------------------------------------------------------

    async def append(
        self,
        topic: str,
        partition: int,
        records: Sequence[NewRecord],
        tag: ProduceTag | None = None,
    ) -> AppendResult:
        return await self._engine.start_append(topic, partition, records, tag)

    def start_append(
        self,
        topic: str,
        partition: int,
        records: Sequence[NewRecord],
        tag: ProduceTag | None = None,
    ) -> asyncio.Future[AppendResult]:
        """Enqueue an append synchronously (no task, no shield needed); await the future.

        For callers that must not yield between choosing partitions and queueing the
        batches (produce), and that want no task per append. Raises at once what
        `append` would raise before writing (unknown topic or partition, failed partition).
        """
        return self._engine.start_append(topic, partition, records, tag)

    async def tagged_appends(self, topic: str, tag: ProduceTag) -> dict[int, AppendResult]:
        return self._engine.tagged_appends(topic, tag)

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int, max_bytes: int
    ) -> list[Record]:
        return await self._engine.read(topic, partition, offset, max_records, max_bytes)

    async def read_batches(self, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
        return await self._engine.read_batches(topic, partition, offset, max_bytes)

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp_ms: int) -> int:
        return await self._engine.offset_for_timestamp(topic, partition, timestamp_ms)

    async def wait_for_records(
        self, topic: str, positions: Mapping[int, int], timeout_s: float | None
    ) -> bool:
        return await self._engine.wait_for_records(topic, positions, timeout_s)

    # -- consumer groups ----------------------------------------------------------------

    async def commit_offsets(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        await self._catalog.commit_offsets(group, offsets)

    async def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        return await self._catalog.committed_offsets(group)

    async def list_groups(self) -> list[str]:
        return await self._catalog.list_groups()

    async def delete_group(self, group: str) -> None:
        await self._catalog.delete_group(group)

    async def load_group_metadata(self, group: str) -> bytes | None:
        return await self._catalog.load_group_metadata(group)

    async def save_group_metadata(self, group: str, metadata: bytes) -> None:
        await self._catalog.save_group_metadata(group, metadata)

    # -- produce idempotency ------------------------------------------------------------

    async def load_idempotent_result(self, key: str) -> bytes | None:
        return await self._catalog.load_idempotent_result(key, now_ms())

    async def save_idempotent_result(self, key: str, result: bytes, ttl_ms: int) -> None:
        await self._catalog.save_idempotent_result(key, result, now_ms() + ttl_ms)

    # -- topic schemas ------------------------------------------------------------------

    async def schema_versions(self, topic: str) -> list[SchemaVersion]:
        self._check_open()
        return await self._catalog.schema_versions(topic)

    async def latest_schema(self, topic: str) -> SchemaVersion | None:
        return self._latest_schemas.get(topic)

    async def add_schema_version(self, topic: str, schema: bytes, latest: int) -> SchemaVersion:
        async with self._admin_lock:  # ordered with delete_topic, which forgets the cache
            self._check_open()
            added = await self._catalog.add_schema_version(topic, schema, latest, now_ms())
            self._latest_schemas[topic] = added
            return added

    async def delete_schema_version(self, topic: str, version: int) -> None:
        async with self._admin_lock:
            self._check_open()
            await self._catalog.delete_schema_version(topic, version)
            versions = await self._catalog.schema_versions(topic)
            if versions:
                self._latest_schemas[topic] = versions[-1]
            else:
                self._latest_schemas.pop(topic, None)

    async def schema_compatibility(self, topic: str) -> str | None:
        self._check_open()
        return await self._catalog.schema_compatibility(topic)

    async def set_schema_compatibility(self, topic: str, compatibility: str | None) -> None:
        self._check_open()
        await self._catalog.set_schema_compatibility(topic, compatibility)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the backend is closed")
