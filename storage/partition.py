"""One partition: an ordered list of segments, group-committed appends, reads, retention.

Concurrency rules (one event loop; blocking I/O in the engine's thread pool):

- Offsets and timestamps are assigned on the loop when an append is enqueued, so they are
  dense and in queue order. Each append becomes one batch (all its records or none).
- A single writer task drains the queue: every pending batch goes out in one write per
  segment and, under `fsync=always`, one fsync, and then every waiter is resolved (group
  commit). The writer holds `_io_lock` during each thread call; retention, sync and close
  take the same lock, so exactly one thread touches the partition's write side at a time.
- What readers see (`end_offset`, the segment list, each segment's `readable_size`) is
  updated on the loop only after a write returned, so a read never sees a partial batch.
  Readers take no lock; a segment removed by retention or close stays open until its last
  in-flight reader is done (`readers` count).
- A failed write or fsync (ENOSPC, EFBIG, EIO, ...) truncates the segment back to the last
  acknowledged position when it can and leaves the partition *sticky-failed*: that append,
  everything queued behind it and every later append raise the same StorageWriteError
  (DiskFull for ENOSPC/EDQUOT/EFBIG) until the partition is reopened, because after a
  failed fsync the kernel's view of the file can no longer be trusted. Acknowledged records
  are never touched; reads keep working.
- Waiters (`wait_for_records`) are futures parked in `_waiters`; a publish resolves those
  whose position it passed. Nothing polls.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from concurrent.futures import Future as ConcurrentFuture
from pathlib import Path
from typing import TypeVar

from storage import codec
from storage.errors import (
    CorruptRecord,
    DiskFull,
    OffsetOutOfRange,
    StorageClosed,
    StorageWriteError,
)
from storage.segment import (
    INDEX_SUFFIX,
    TIME_INDEX_SUFFIX,
    Segment,
    fsync_dir,
    parse_segment_name,
    sync_data,
    timed_fsync,
)
from storage.types import (
    AppendResult,
    Durability,
    DurabilityPolicy,
    NewRecord,
    PartitionInfo,
    Record,
    TopicConfig,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_BATCH_CHUNK_BYTES = 256 * 1024
_MAX_BATCH_CHUNK_BYTES = codec.MAX_BATCH_BYTES

# Recently written batches are kept in memory per partition (shared by all readers, not a
# copy per subscriber) so consumers tailing the log decode without a thread hop.
TAIL_CACHE_BYTES = 1024 * 1024


class TailCacheBudget:
    """Splits one memory budget for tail caches among the open partitions.

    Each partition keeps at most `per_partition` bytes: the budget divided by the number
    of open partitions, between 16 KiB and TAIL_CACHE_BYTES. Total memory stays near
    `limit_bytes` (or 16 KiB per partition when there are very many).
    """

    MIN_PER_PARTITION = 16 * 1024

    def __init__(self, limit_bytes: int = 64 * 1024 * 1024) -> None:
        self.limit_bytes = limit_bytes
        self.partitions = 0
        self.per_partition = TAIL_CACHE_BYTES

    def resize(self, delta: int) -> None:
        self.partitions += delta
        share = self.limit_bytes // max(1, self.partitions)
        self.per_partition = max(self.MIN_PER_PARTITION, min(TAIL_CACHE_BYTES, share))


# One group commit writes at most about this much (always at least one batch).
GROUP_COMMIT_BYTES = 1024 * 1024
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write_error(exc: BaseException, where: str) -> StorageWriteError:
    """The typed error for a failed write; DiskFull when the disk or a size limit is full."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return DiskFull(f"{where}: {exc.strerror or exc}")
    return StorageWriteError(f"{where}: {exc}")


class _Pending:
    __slots__ = ("base_offset", "count", "data", "future", "timestamp_ms")

    def __init__(
        self,
        data: bytes,
        base_offset: int,
        count: int,
        timestamp_ms: int,
        future: asyncio.Future[AppendResult],
    ) -> None:
        self.data = data
        self.base_offset = base_offset
        self.count = count
        self.timestamp_ms = timestamp_ms
        self.future = future


class Partition:
    """A partition's segments and the rules in the module docstring."""

    def __init__(
        self,
        directory: Path,
        name: str,
        config: TopicConfig,
        durability: DurabilityPolicy,
        executor: Executor,
        segments: list[Segment],
        tail_budget: TailCacheBudget,
    ) -> None:
        self.directory = directory
        self.name = name
        self.config = config
        self.durability = durability
        self._executor = executor
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._active = segments[-1]
        self._end_offset = self._active.next_offset
        self._next_offset = self._end_offset
        self._last_timestamp_ms = max(s.max_timestamp_ms for s in segments)
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._io_lock = asyncio.Lock()
        self._failure: StorageWriteError | None = None
        self._closed = False
        self._dirty = False
        self._waiters: dict[asyncio.Future[bool], int] = {}
        self._tail_bases: list[int] = []
        self._tail_batches: list[bytes] = []
        self._tail_bytes = 0
        self._tail_budget = tail_budget
        tail_budget.resize(+1)

    @classmethod
    async def open(
        cls,
        directory: Path,
        name: str,
        config: TopicConfig,
        durability: DurabilityPolicy,
        executor: Executor,
        tail_budget: TailCacheBudget,
    ) -> Partition:
        """Open (or create) the partition directory and recover its active segment."""
        loop = asyncio.get_running_loop()
        segments = await loop.run_in_executor(executor, _open_segments, directory)
        return cls(directory, name, config, durability, executor, segments, tail_budget)

    # -- state --------------------------------------------------------------------------

    @property
    def end_offset(self) -> int:
        return self._end_offset

    @property
    def log_start_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def failure(self) -> StorageWriteError | None:
        return self._failure

    def info(self, partition: int) -> PartitionInfo:
        size = sum(s.readable_size for s in self._segments)
        return PartitionInfo(partition, self.log_start_offset, self._end_offset, size)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed(f"partition {self.name} is closed")

    # -- appends ------------------------------------------------------------------------

    async def append(self, records: Sequence[NewRecord]) -> AppendResult:
        """Append `records` as one batch; returns once written (and fsynced per policy)."""
        return await self.start_append(records)

    def start_append(self, records: Sequence[NewRecord]) -> asyncio.Future[AppendResult]:
        """Enqueue `records` as one batch now; the future resolves once written (and fsynced).

        Synchronous, so the batch is queued (its offsets assigned) before the caller next
        yields: a caller cancelled later cannot stop it from being written. Cancelling the
        future only stops waiting for it.
        """
        self._check_open()
        if self._failure is not None:
            raise self._failure
        if not records:
            raise ValueError("append needs at least one record")
        timestamp_ms = max(now_ms(), self._last_timestamp_ms)
        base_offset = self._next_offset
        data = codec.encode_batch(base_offset, timestamp_ms, records)
        self._next_offset = base_offset + len(records)
        self._last_timestamp_ms = timestamp_ms
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(data, base_offset, len(records), timestamp_ms, future))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                group = self._take_group()
                async with self._io_lock:
                    if self._failure is not None:  # a failed interval fsync
                        self._fail_pending(self._failure, group)
                        return
                    try:
                        touched = await _in_thread(loop, self._executor, self._write_locked, group)
                    except BaseException as exc:
                        self._fail_locked(exc, group)
                        if not isinstance(exc, Exception):
                            raise
                        return
                    self._publish_locked(group, touched)
                for pending in group:
                    if not pending.future.done():
                        pending.future.set_result(
                            AppendResult(pending.base_offset, pending.count, pending.timestamp_ms)
                        )
        finally:
            self._writer = None

    def _take_group(self) -> list[_Pending]:
        """The next batches to write together: all pending, up to GROUP_COMMIT_BYTES.

        A bound keeps one huge group from making every producer wait for all of it, and
        lets acknowledged producers encode their next appends while this group is written.
        """
        pending = self._pending
        size = 0
        for i, p in enumerate(pending):
            size += len(p.data)
            if size >= GROUP_COMMIT_BYTES:
                group = pending[: i + 1]
                del pending[: i + 1]
                return group
        self._pending = []
        return pending

    def _should_roll(self, segment_bytes: int, first_timestamp_ms: int | None, p: _Pending) -> bool:
        if segment_bytes == 0:
            return False
        if segment_bytes + len(p.data) > self.config.segment_bytes:
            return True
        return (
            first_timestamp_ms is not None
            and p.timestamp_ms - first_timestamp_ms >= self.config.segment_ms
        )

    def _write_locked(self, group: list[_Pending]) -> list[Segment]:
        """Worker thread: write `group`, rolling segments as needed. Returns touched segments."""
        fsync = self.durability.mode is Durability.ALWAYS
        seal_fsync = self.durability.mode is not Durability.NEVER
        original = self._active
        saved = (original.size, original.next_offset, original.first_timestamp_ms)
        saved_max_timestamp = original.max_timestamp_ms
        touched = [original]
        chunk: list[bytes] = []
        batches: list[tuple[int, int, int, int]] = []
        chunk_bytes = 0
        try:
            for p in group:
                active = self._active
                first_timestamp = (
                    active.first_timestamp_ms
                    if active.first_timestamp_ms is not None
                    else (batches[0][2] if batches else None)
                )
                if self._should_roll(active.size + chunk_bytes, first_timestamp, p):
                    if chunk:
                        active.write_locked(b"".join(chunk), batches, fsync=False)
                        chunk, batches, chunk_bytes = [], [], 0
                    active.seal(fsync=seal_fsync)
                    self._active = Segment.create(self.directory, p.base_offset)
                    touched.append(self._active)
                chunk.append(p.data)
                batches.append((p.base_offset, p.count, p.timestamp_ms, len(p.data)))
                chunk_bytes += len(p.data)
            self._active.write_locked(
                chunk[0] if len(chunk) == 1 else b"".join(chunk), batches, fsync=fsync
            )
            if len(touched) > 1 and seal_fsync:
                fsync_dir(self.directory)
        except BaseException:
            self._rollback_locked(original, saved, saved_max_timestamp, touched[1:])
            raise
        return touched

    def _rollback_locked(
        self,
        original: Segment,
        saved: tuple[int, int, int | None],
        saved_max_timestamp: int,
        created: list[Segment],
    ) -> None:
        """Worker thread: undo a failed group write as far as the file system lets us."""
        self._active = original
        for segment in created:
            try:
                segment.close()
                segment.unlink()
            except OSError:
                log.exception("could not remove segment %s after a failed write", segment)
        try:
            original.truncate_locked(saved[0])
        except OSError:
            log.exception("could not truncate %s after a failed write", original)
        original.size, original.next_offset, original.first_timestamp_ms = saved
        original.max_timestamp_ms = saved_max_timestamp

    def _fail_locked(self, exc: BaseException, group: list[_Pending]) -> None:
        """Make the partition sticky-failed and fail every queued append."""
        error = write_error(exc, f"append to {self.name} failed")
        if not isinstance(exc, OSError):
            log.error("append to %s failed", self.name, exc_info=exc)
        else:
            log.error("%s; the partition refuses writes until it is reopened", error)
        self._failure = error
        self._fail_pending(error, group)

    def _fail_pending(self, error: StorageWriteError, group: list[_Pending]) -> None:
        failed = group + self._pending
        self._pending = []
        self._next_offset = self._end_offset
        for pending in failed:
            if not pending.future.done():
                pending.future.set_exception(error)
                # Callers that were cancelled must not trigger "exception never retrieved".
                pending.future.exception()

    def _publish_locked(self, group: list[_Pending], touched: list[Segment]) -> None:
        """Loop: make a finished write visible to readers and wake waiters."""
        for segment in touched:
            segment.readable_size = segment.size
            segment.published_max_timestamp_ms = segment.max_timestamp_ms
        for segment in touched[1:]:
            self._segments.append(segment)
            self._bases.append(segment.base_offset)
        last = group[-1]
        self._end_offset = last.base_offset + last.count
        if self.durability.mode is not Durability.ALWAYS:
            self._dirty = True
        for pending in group:
            self._tail_bases.append(pending.base_offset)
            self._tail_batches.append(pending.data)
            self._tail_bytes += len(pending.data)
        cache_bytes = self._tail_budget.per_partition
        if self._tail_bytes > cache_bytes:
            drop = 0
            while self._tail_bytes > cache_bytes and drop < len(self._tail_batches) - 1:
                self._tail_bytes -= len(self._tail_batches[drop])
                drop += 1
            del self._tail_bases[:drop], self._tail_batches[:drop]
        self._wake(self._end_offset)

    async def sync(self) -> None:
        """fsync the active segment if appends happened since the last sync (fsync=interval)."""
        if not self._dirty or self._closed:
            return
        async with self._io_lock:
            if not self._dirty or self._failure is not None:
                return
            self._dirty = False
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, timed_fsync, self._active.fd
                )
            except OSError as exc:
                self._failure = write_error(exc, f"fsync of {self.name} failed")
                log.error("%s; the partition refuses writes until it is reopened", self._failure)

    # -- reads --------------------------------------------------------------------------

    async def read(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        """Records from `offset` (see Backend.read for the limits)."""
        self._check_open()
        end_offset = self._end_offset
        if offset < self.log_start_offset or offset > end_offset:
            raise OffsetOutOfRange(offset, self.log_start_offset, end_offset)
        if offset == end_offset or max_records <= 0:
            return []
        if self._tail_bases and offset >= self._tail_bases[0]:
            return self._read_tail(offset, max_records, max_bytes)
        return await self._on_segments(offset, _read_segments, offset, max_records, max_bytes)

    async def read_batches(self, offset: int, max_bytes: int) -> bytes:
        """Whole stored batches from the one holding `offset` (see Backend.read_batches)."""
        self._check_open()
        end_offset = self._end_offset
        if offset < self.log_start_offset or offset > end_offset:
            raise OffsetOutOfRange(offset, self.log_start_offset, end_offset)
        if offset == end_offset:
            return b""
        if self._tail_bases and offset >= self._tail_bases[0]:
            first = bisect_right(self._tail_bases, offset) - 1
            return codec.take_batches(self._tail_batches[first:], max_bytes)
        return await self._on_segments(offset, _read_segment_batches, offset, max_bytes)

    async def _on_segments(self, offset: int, work: Callable[..., _T], *args: int) -> _T:
        """Run `work(segments, limits, *args)` in the I/O pool over the segments from the one
        holding `offset`, each read only below its published size and kept open meanwhile."""
        first = bisect_right(self._bases, offset) - 1
        segments = self._segments[first:]
        limits = [s.readable_size for s in segments]
        for segment in segments:
            segment.readers += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, work, segments, limits, *args
            )
        finally:
            for segment in segments:
                segment.readers -= 1
                if segment.deleted and segment.readers == 0:
                    segment.close()

    def _read_tail(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        records: list[Record] = []
        used_bytes = 0
        batches = self._tail_batches
        for i in range(bisect_right(self._tail_bases, offset) - 1, len(batches)):
            decoded = codec.decode(
                batches[i],
                offset,
                max_records - len(records),
                max_bytes - used_bytes,
                at_least_one=not records,
                verify=False,
            )
            records.extend(decoded.records)
            used_bytes += decoded.used_bytes
            if decoded.full:
                break
        return records

    async def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """The first offset whose timestamp is >= timestamp_ms, or the end offset."""
        self._check_open()
        end_offset = self._end_offset
        i = next(
            (
                i
                for i, s in enumerate(self._segments)
                if s.published_max_timestamp_ms >= timestamp_ms
            ),
            None,
        )
        if i is None:
            return end_offset
        segment = self._segments[i]
        segment.readers += 1
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self._executor, segment.find_timestamp, timestamp_ms, segment.readable_size
            )
        finally:
            segment.readers -= 1
            if segment.deleted and segment.readers == 0:
                segment.close()
        if found is not None:
            return max(found, self.log_start_offset)
        return self._bases[i + 1] if i + 1 < len(self._bases) else end_offset

    # -- waiting ------------------------------------------------------------------------

    def add_waiter(self, future: asyncio.Future[bool], position: int) -> bool:
        """Park `future` until end_offset > position; True if that is already so."""
        if self._closed or self._end_offset > position:
            return True
        self._waiters[future] = position
        return False

    def remove_waiter(self, future: asyncio.Future[bool]) -> None:
        self._waiters.pop(future, None)

    def _wake(self, end_offset: int) -> None:
        if not self._waiters:
            return
        woken = [f for f, position in self._waiters.items() if end_offset > position]
        for future in woken:
            del self._waiters[future]
            if not future.done():
                future.set_result(True)

    def _wake_all(self) -> None:
        waiters = list(self._waiters)
        self._waiters.clear()
        for future in waiters:
            if not future.done():
                future.set_result(True)

    # -- retention ----------------------------------------------------------------------

    async def apply_retention(self, now: int) -> int:
        """Delete sealed segments past retention.ms or beyond retention.bytes.

        An active segment whose newest record is past retention.ms is rolled first (to an
        empty segment whose base offset keeps the count), so an idle partition expires too.
        Returns the number of segments deleted.
        """
        retention_ms = self.config.retention_ms
        retention_bytes = self.config.retention_bytes
        if retention_ms is None and retention_bytes is None:
            return 0
        loop = asyncio.get_running_loop()
        async with self._io_lock:
            if self._closed or self._failure is not None:
                return 0
            active = self._active
            if (
                retention_ms is not None
                and active.size > 0
                and now - active.max_timestamp_ms > retention_ms
            ):
                try:
                    new = await loop.run_in_executor(self._executor, self._roll_locked)
                except OSError as exc:
                    log.error("retention could not roll %s: %s", self.name, exc)
                    return 0
                active.readable_size = active.size
                self._segments.append(new)
                self._bases.append(new.base_offset)
            segments = self._segments
            victims = 0
            if retention_ms is not None:
                while (
                    victims < len(segments) - 1
                    and now - segments[victims].max_timestamp_ms > retention_ms
                ):
                    victims += 1
            if retention_bytes is not None:
                total = sum(s.size for s in segments[victims:])
                while victims < len(segments) - 1 and total > retention_bytes:
                    total -= segments[victims].size
                    victims += 1
            if not victims:
                return 0
            removed = segments[:victims]
            del self._segments[:victims], self._bases[:victims]
            log.info(
                "retention deleted %d segment(s) of %s; log start offset is now %d",
                victims,
                self.name,
                self.log_start_offset,
            )
            await loop.run_in_executor(self._executor, _unlink_segments, removed)
            for segment in removed:
                segment.deleted = True
                if segment.readers == 0:
                    segment.close()
            return victims

    def _roll_locked(self) -> Segment:
        """Worker thread: seal the active segment and start an empty one at the end offset."""
        active = self._active
        active.seal(fsync=self.durability.mode is not Durability.NEVER)
        new = Segment.create(self.directory, active.next_offset)
        if self.durability.mode is not Durability.NEVER:
            fsync_dir(self.directory)
        self._active = new
        return new

    # -- closing ------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish queued appends, fsync, wake waiters and release the files."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await asyncio.shield(self._writer)
        async with self._io_lock:
            if self._failure is None:
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        self._executor, sync_data, self._active.fd
                    )
                except OSError as exc:
                    log.error("fsync of %s on close failed: %s", self.name, exc)
            for segment in self._segments:
                segment.deleted = True
                if segment.readers == 0:
                    segment.close()
        self._tail_bases.clear()
        self._tail_batches.clear()
        self._tail_budget.resize(-1)
        self._wake_all()


def _in_thread(
    loop: asyncio.AbstractEventLoop,
    executor: Executor,
    work: Callable[[list[_Pending]], list[Segment]],
    group: list[_Pending],
) -> asyncio.Future[list[Segment]]:
    """`loop.run_in_executor(executor, work, group)` with one callback instead of a chain of
    concurrent and asyncio futures: the writer makes this hop once per group commit, and it
    cost a third less of the loop's time (15-20 vs 25-33 us measured)."""
    future: asyncio.Future[list[Segment]] = loop.create_future()

    def finished(done: ConcurrentFuture[list[Segment]]) -> None:  # in the worker thread
        if not loop.is_closed():
            loop.call_soon_threadsafe(_copy_outcome, done, future)

    executor.submit(work, group).add_done_callback(finished)
    return future


def _copy_outcome(
    done: ConcurrentFuture[list[Segment]], future: asyncio.Future[list[Segment]]
) -> None:
    if future.cancelled():
        return
    error = done.exception()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(done.result())


def _unlink_segments(segments: list[Segment]) -> None:
    for segment in segments:
        segment.unlink()


def _read_segments(
    segments: list[Segment], limits: list[int], offset: int, max_records: int, max_bytes: int
) -> list[Record]:
    """Worker thread: read across consecutive segments, each only below its published limit."""
    records: list[Record] = []
    used_bytes = 0
    for i, (segment, limit) in enumerate(zip(segments, limits, strict=True)):
        decoded = segment.read(
            offset, limit, max_records - len(records), max_bytes - used_bytes, not records
        )
        records.extend(decoded.records)
        used_bytes += decoded.used_bytes
        if decoded.full:
            break
        if records:
            offset = records[-1].offset + 1
        if i + 1 < len(segments):
            next_base = segments[i + 1].base_offset
            if offset < next_base:
                raise CorruptRecord(
                    f"offsets {offset}..{next_base - 1} are missing from {segment.log_path}"
                )
    return records


def _read_segment_batches(
    segments: list[Segment], limits: list[int], offset: int, max_bytes: int
) -> bytes:
    """Worker thread: whole checked batches from the one holding `offset`, across segments."""
    out: list[bytes] = []
    size = 0
    for segment, limit in zip(segments, limits, strict=True):
        _indexed, position = segment.index.lookup(offset)
        want_at_least = 0
        while position < limit:
            want = min(limit - position, max(_BATCH_CHUNK_BYTES, want_at_least, max_bytes - size))
            buf = os.pread(segment.fd, min(want, _MAX_BATCH_CHUNK_BYTES), position)
            cursor = 0
            while (header := codec.read_header(buf, cursor)) and header.end_position <= len(buf):
                if header.next_offset > offset:
                    if out and size + header.size > max_bytes:
                        return b"".join(out)
                    codec.check_batch(buf, header)
                    out.append(buf[cursor : header.end_position])
                    size += header.size
                    offset = header.next_offset
                cursor = header.end_position
            if cursor == 0:  # a batch longer than the chunk: read it whole next time
                header = codec.read_header(buf, 0)
                if header is None or position + header.size > limit:
                    raise CorruptRecord(f"batch at {segment.log_path}:{position} overruns it")
                want_at_least = header.size
            position += cursor
    return b"".join(out)


def _open_segments(directory: Path) -> list[Segment]:
    """Worker thread: open a partition directory, recovering the last segment."""
    directory.mkdir(parents=True, exist_ok=True)
    names = os.listdir(directory)
    bases = sorted(b for b in (parse_segment_name(n) for n in names) if b is not None)
    stems = {f"{b:020d}" for b in bases}
    for name in names:
        stem, _, suffix = name.partition(".")
        if "." + suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX) and stem not in stems:
            (directory / name).unlink()
    if not bases:
        segment = Segment.create(directory, 0)
        fsync_dir(directory)
        return [segment]
    segments: list[Segment] = []
    try:
        for base, next_base in itertools.pairwise(bases):
            segments.append(Segment.open_sealed(directory, base, next_base))
        active, cut = Segment.recover(directory, bases[-1])
    except BaseException:
        for segment in segments:
            segment.close()
        raise
    if cut is not None:
        log.warning(
            "recovery cut %d byte(s) at position %d of %s (offset %d on): %s",
            cut.bytes_cut,
            cut.position,
            cut.path,
            cut.offset,
            cut.reason,
        )
    segments.append(active)
    return segments
