"""The log engine: topics of partitions under one directory, retention and interval fsync.

    <topics_dir>/<topic>/<partition>/<base offset, 20 digits>.log|.index|.timeindex

The engine knows nothing of the catalog: the embedded backend tells it which topics exist.
Every topic name is validated (storage.names) before any path is built from it. Every
write-side job of every partition runs on the engine's one writer thread (storage.writer);
reads, opening and zero-filling run in its thread pool; each partition serialises its own
writes (see storage.partition). Every file operation that changes something goes through
one `storage.files.Files` (the data dir's modes, no symlinks, the power-loss tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage.errors import PartitionNotFound, StorageClosed, TopicNotFound
from storage.files import Files, is_dir
from storage.names import validate_topic_name
from storage.partition import Partition, PartitionIO, TailCacheBudget, now_ms
from storage.segment import FsyncObserver, data_sync
from storage.types import (
    AppendResult,
    Durability,
    DurabilityPolicy,
    IdempotencyWindow,
    NewRecord,
    PartitionInfo,
    ProduceTag,
    Record,
    TopicConfig,
)
from storage.writer import WriterThread

log = logging.getLogger(__name__)

DEFAULT_RETENTION_INTERVAL_S = 30.0
_IO_THREADS = 16


class LogEngine:
    """Partitions by topic, with background retention (and fsync for fsync=interval)."""

    def __init__(
        self,
        topics_dir: Path,
        durability: DurabilityPolicy,
        retention_interval_s: float,
        on_fsync: FsyncObserver | None = None,
        idempotency: IdempotencyWindow | None = None,
        files: Files | None = None,
    ) -> None:
        self.topics_dir = topics_dir
        self.files = files or Files()
        self.durability = durability
        self.retention_interval_s = retention_interval_s
        self._executor = ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="logway-io")
        self._writer = WriterThread()
        self._io = PartitionIO(
            self._executor,
            self._writer,
            data_sync(self.files, on_fsync),
            self.files,
            idempotency or IdempotencyWindow(),
        )
        self._topics: dict[str, list[Partition]] = {}
        self._tail_budget = TailCacheBudget()
        self._closed = False
        self._background: list[asyncio.Task[None]] = []

    @classmethod
    async def open(
        cls,
        topics_dir: Path,
        durability: DurabilityPolicy,
        retention_interval_s: float = DEFAULT_RETENTION_INTERVAL_S,
        *,
        on_fsync: FsyncObserver | None = None,
        idempotency: IdempotencyWindow | None = None,
        files: Files | None = None,
    ) -> LogEngine:
        """Start an engine over `topics_dir` (created if missing); no topic is opened yet.

        `on_fsync` is told how long each fsync that appends wait for took (metrics);
        `idempotency` is how many produce tags each partition keeps (storage.produce_tags);
        `files` does the file operations (default: the real file system, private modes).
        """
        engine = cls(topics_dir, durability, retention_interval_s, on_fsync, idempotency, files)
        await asyncio.to_thread(topics_dir.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(_make_durable_dir, engine.files, topics_dir)
        engine._background.append(asyncio.create_task(engine._retention_loop()))
        if durability.mode is Durability.INTERVAL:
            engine._background.append(asyncio.create_task(engine._fsync_loop()))
        return engine

    # -- topics -------------------------------------------------------------------------

    async def topic_dir_names(self) -> list[str]:
        """Names of the directories under topics_dir (some may not be valid topic names)."""
        return sorted(
            await asyncio.to_thread(
                lambda: [
                    name
                    for name in self.files.listdir(self.topics_dir)
                    if is_dir(self.topics_dir / name)
                ]
            )
        )

    async def open_topic(self, name: str, partitions: int, config: TopicConfig) -> None:
        """Open a topic's partitions, creating (durably) whatever directories are missing."""
        self._check_open()
        validate_topic_name(name)
        if name in self._topics:
            return
        topic_dir = self.topics_dir / name
        await asyncio.to_thread(_make_durable_dir, self.files, topic_dir)
        opened = await asyncio.gather(
            *(
                Partition.open(
                    topic_dir / str(p),
                    f"{name}/{p}",
                    config,
                    self.durability,
                    self._io,
                    self._tail_budget,
                )
                for p in range(partitions)
            ),
            return_exceptions=True,
        )
        failures = [r for r in opened if isinstance(r, BaseException)]
        good = [r for r in opened if isinstance(r, Partition)]
        if failures:
            for partition in good:
                await partition.close()
            raise failures[0]
        await asyncio.to_thread(self.files.fsync_dir, topic_dir)
        self._topics[name] = good

    async def remove_topic(self, name: str) -> None:
        """Close a topic (waking its waiters) and delete its directory, open or not."""
        validate_topic_name(name)
        partitions = self._topics.pop(name, [])
        for partition in partitions:
            await partition.close()
        topic_dir = self.topics_dir / name
        await asyncio.to_thread(_remove_dir, self.files, topic_dir, self.topics_dir)

    def partition(self, topic: str, partition: int) -> Partition:
        self._check_open()
        partitions = self._topics.get(topic)
        if partitions is None:
            raise TopicNotFound(topic)
        if not 0 <= partition < len(partitions):
            raise PartitionNotFound(topic, partition)
        return partitions[partition]

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the log is closed")

    # -- records ------------------------------------------------------------------------

    async def append(
        self,
        topic: str,
        partition: int,
        records: Sequence[NewRecord],
        tag: ProduceTag | None = None,
    ) -> AppendResult:
        return await self.partition(topic, partition).start_append(records, tag)

    def start_append(
        self,
        topic: str,
        partition: int,
        records: Sequence[NewRecord],
        tag: ProduceTag | None = None,
    ) -> asyncio.Future[AppendResult]:
        """Enqueue an append now (see Partition.start_append); await the future for its result."""
        partitions = self._topics.get(topic)  # `partition()` inlined: this runs per append
        if partitions is None or not 0 <= partition < len(partitions):
            return self.partition(topic, partition).start_append(records, tag)  # raises
        return partitions[partition].start_append(records, tag)

    def tagged_appends(self, topic: str, tag: ProduceTag) -> dict[int, AppendResult]:
        """Partition -> its written append with `tag`'s key, over the whole topic (see
        Partition.tagged_append; raises ProduceTagConflict and TopicNotFound)."""
        self._check_open()
        partitions = self._topics.get(topic)
        if partitions is None:
            raise TopicNotFound(topic)
        held: dict[int, AppendResult] = {}
        for number, partition in enumerate(partitions):
            result = partition.tagged_append(tag)
            if result is not None:
                held[number] = result
        return held

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int, max_bytes: int
    ) -> list[Record]:
        return await self.partition(topic, partition).read(offset, max_records, max_bytes)

    async def read_batches(self, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
        return await self.partition(topic, partition).read_batches(offset, max_bytes)

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp_ms: int) -> int:
        return await self.partition(topic, partition).offset_for_timestamp(timestamp_ms)

    def partition_info(self, topic: str, partition: int) -> PartitionInfo:
        return self.partition(topic, partition).info(partition)

    async def wait_for_records(
        self, topic: str, positions: Mapping[int, int], timeout_s: float | None
    ) -> bool:
        """See Backend.wait_for_records: one future parked on each partition's notifier."""
        if self._closed:
            return True
        partitions = self._topics.get(topic)
        if partitions is None:
            return True
        for p in positions:
            if not 0 <= p < len(partitions):
                raise PartitionNotFound(topic, p)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        parked: list[Partition] = []
        try:
            for p, position in positions.items():
                if partitions[p].add_waiter(future, position):
                    return True
                parked.append(partitions[p])
            if timeout_s is not None and timeout_s <= 0:
                return False
            try:
                async with asyncio.timeout(timeout_s):
                    return await future
            except TimeoutError:
                return False
        finally:
            for partition in parked:
                partition.remove_waiter(future)

    # -- background ---------------------------------------------------------------------

    async def run_retention(self, now: int | None = None) -> int:
        """Apply retention to every partition now; returns the number of segments deleted."""
        now = now_ms() if now is None else now
        deleted = 0
        for partitions in list(self._topics.values()):
            for partition in partitions:
                deleted += await partition.apply_retention(now)
        return deleted

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_interval_s)
            try:
                await self.run_retention()
            except Exception:
                log.exception("retention failed; trying again in %s s", self.retention_interval_s)

    async def _fsync_loop(self) -> None:
        interval_s = self.durability.fsync_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            for partitions in list(self._topics.values()):
                for partition in partitions:
                    await partition.sync()

    def io_failures(self) -> list[str]:
        """Partitions that are sticky-failed, with their error (for readiness checks)."""
        return [
            f"{p.name}: {p.failure}"
            for partitions in self._topics.values()
            for p in partitions
            if p.failure is not None
        ]

    async def close(self) -> None:
        """Finish queued appends, fsync, wake every waiter and stop background work."""
        if self._closed:
            return
        self._closed = True
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        topics = list(self._topics.values())
        self._topics.clear()
        for partitions in topics:
            for partition in partitions:
                await partition.close()
        await asyncio.to_thread(self._writer.stop)
        self._executor.shutdown(wait=True)


def _make_durable_dir(files: Files, path: Path) -> None:
    if files.ensure_dir(path):
        files.fsync_dir(path.parent)


def _remove_dir(files: Files, path: Path, parent: Path) -> None:
    """Delete a topic directory, refusing anything that is not directly under `parent`
    (rmtree follows no symlink)."""
    if path.parent != parent:
        raise ValueError(f"refusing to remove {path}")
    if path.is_symlink():
        files.unlink(path)
        files.fsync_dir(parent)
    elif path.exists():
        shutil.rmtree(path)
        files.fsync_dir(parent)
