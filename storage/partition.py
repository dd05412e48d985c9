"""One partition: an ordered list of segments, group-committed appends, reads, retention.

Concurrency rules (one event loop; writes in the engine's writer thread, reads and
zero-filling in its thread pool):

- Offsets and timestamps are assigned on the loop when an append is enqueued, so they are
  dense and in queue order. Each append becomes one batch (all its records or none).
- Group commit: every pending batch goes out in one write per segment and, under
  `fsync=always`, one fsync, in the writer thread; the callback that brings the result back
  to the loop publishes it, resolves every waiter and starts the next group. The first
  append to an idle partition starts a group on the next loop iteration, so the appends
  made in the same iteration (producers woken by the last group) share it.
- One thing at a time holds the partition's write side (`_write_side_busy`): a group in
  flight, or retention, an interval sync or close (`_write_side()`), each waiting its turn
  in order; after a group, a waiting one goes before the next group.
- Under `fsync=always` the active segment is zero-filled ahead of its data, and the next
  segment's file is prepared before a roll needs it, by one pool job at a time
  (`_prefilling`), so appends overwrite bytes the file already has (storage.segment says
  why). The job is started on the loop after a write, when less than half of the zeros
  wanted ahead are left (PREFILL_AHEAD_S); it never blocks an append, which simply grows
  the file if it outruns it.
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
- An append with a produce tag (an Idempotency-Key) whose key the partition holds, written
  or queued, writes nothing and gets the first append's result (storage.produce_tags); the
  tags of the idempotency window are read back when the partition opens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import itertools
import logging
import os
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import TypeVar

from storage import codec
from storage.errors import (
    CorruptRecord,
    DiskFull,
    OffsetOutOfRange,
    ProduceTagConflict,
    StorageClosed,
    StorageWriteError,
)
from storage.files import Files
from storage.produce_tags import TaggedAppend, TagIndex, scan_tags
from storage.segment import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    PREPARED_SUFFIX,
    TIME_INDEX_SUFFIX,
    Batch,
    PreparedFile,
    Segment,
    parse_segment_name,
    segment_name,
)
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
# Zero-filling under fsync=always (storage.segment says why): about PREFILL_AHEAD_S seconds
# of the partition's recent append rate is kept zero-filled ahead of its data and refilled
# when half of it is left, so a steadily written partition extends its file (one journaled
# size change, off the hot path) every PREFILL_AHEAD_S / 2 seconds whatever its rate. At
# least PREFILL_MIN_BYTES, so that a slow partition does not extend every few appends; at
# most PREFILL_MAX_BYTES, the zeros a partition may hold beyond its data (plus a prepared
# next segment file of the same size near the end of a segment). Never beyond segment.bytes.
# Only groups of up to PREFILL_GROUP_BYTES count: zeros double the bytes written, which pays
# for small groups (one journal commit less per fdatasync, ~0.1 ms at p50 and 0.3-2 ms at
# p99 here) but not for large ones, whose growth is one commit per MiB or so.
PREFILL_AHEAD_S = 10.0
PREFILL_MIN_BYTES = 256 * 1024
PREFILL_MAX_BYTES = 16 * 1024 * 1024
PREFILL_GROUP_BYTES = 64 * 1024


class PrefillSizer:
    """How many zeros to keep ahead of one partition's data (see PREFILL_AHEAD_S)."""

    def __init__(self, now_s: float) -> None:
        self.chunk_bytes = PREFILL_MIN_BYTES
        self.appended_bytes = 0  # since `_since_s`
        self._since_s = now_s

    def next_chunk(self, now_s: float) -> int:
        """The size of the next extension, from the bytes appended since the last one."""
        rate = self.appended_bytes / max(now_s - self._since_s, 0.001)
        wanted = -(-int(rate * PREFILL_AHEAD_S) // PREFILL_MIN_BYTES) * PREFILL_MIN_BYTES
        self.chunk_bytes = max(PREFILL_MIN_BYTES, min(PREFILL_MAX_BYTES, wanted))
        self.appended_bytes = 0
        self._since_s = now_s
        return self.chunk_bytes


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write_error(exc: BaseException, where: str) -> StorageWriteError:
    """The typed error for a failed write; DiskFull when the disk or a size limit is full."""
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return DiskFull(f"{where}: {exc.strerror or exc}")
    return StorageWriteError(f"{where}: {exc}")


@dataclass(frozen=True, slots=True)
class PartitionIO:
    """Where a partition's blocking work runs; one per engine, shared by its partitions."""

    executor: Executor  # opening, reads, zero-filling
    writer: WriterThread  # every write-side job: appends, rolls, syncs
    sync: Callable[[int], None]  # makes a segment file's data durable (timed for metrics)
    files: Files  # every other operation that changes a file
    idempotency: IdempotencyWindow  # how many produce tags each partition keeps


class Partition:
    """A partition's segments and the rules in the module docstring."""

    def __init__(
        self,
        directory: Path,
        name: str,
        config: TopicConfig,
        durability: DurabilityPolicy,
        io: PartitionIO,
        segments: list[Segment],
        tail_budget: TailCacheBudget,
    ) -> None:
        self.directory = directory
        self.name = name
        self.config = config
        self.durability = durability
        self._executor = io.executor
        self._writer = io.writer
        self._sync = io.sync
        self._files = io.files
        self._prefill = (
            PrefillSizer(time.monotonic()) if durability.mode is Durability.ALWAYS else None
        )
        self._prefilling: asyncio.Future[PreparedFile | None] | None = None
        self._prefill_paused_until_s = 0.0  # after a failed prefill (a full disk, say)
        self._prepared: PreparedFile | None = None
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._active = segments[-1]
        self._end_offset = self._active.next_offset
        self._next_offset = self._end_offset
        self._last_timestamp_ms = max(s.max_timestamp_ms for s in segments)
        # queued batches and their waiters, side by side
        self._pending: list[Batch] = []
        self._waiting: list[asyncio.Future[AppendResult]] = []
        self._pending_bytes = 0
        self._write_side_busy = False
        self._write_side_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: asyncio.Future[None] | None = None  # close waits for the queue to drain
        self._failure: StorageWriteError | None = None
        self._closed = False
        self._dirty = False
        self._waiters: dict[asyncio.Future[bool], int] = {}
        self._tail_bases: list[int] = []
        self._tail_batches: list[bytes] = []
        self._tail_bytes = 0
        self._tail_budget = tail_budget
        tail_budget.resize(+1)
        self._tags = TagIndex(io.idempotency)
        # queued tagged appends: key -> (request digest, base offset, its other waiters)
        self._queued_tags: dict[bytes, tuple[bytes, int, list[asyncio.Future[AppendResult]]]] = {}

    @classmethod
    async def open(
        cls,
        directory: Path,
        name: str,
        config: TopicConfig,
        durability: DurabilityPolicy,
        io: PartitionIO,
        tail_budget: TailCacheBudget,
    ) -> Partition:
        """Open (or create) the partition directory and recover its active segment."""
        loop = asyncio.get_running_loop()
        segments = await loop.run_in_executor(io.executor, _open_segments, io.files, directory)
        partition = cls(directory, name, config, durability, io, segments, tail_budget)
        since_ms = now_ms() - io.idempotency.window_ms
        limits = [s.readable_size for s in segments]
        try:
            await loop.run_in_executor(
                io.executor, scan_tags, segments, limits, since_ms, partition._tags
            )
        except BaseException:
            await partition.close()
            raise
        return partition

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

    def start_append(
        self, records: Sequence[NewRecord], tag: ProduceTag | None = None
    ) -> asyncio.Future[AppendResult]:
        """Enqueue `records` as one batch now; the future resolves once written (and fsynced).

        Synchronous, so the batch is queued (its offsets assigned) before the caller next
        yields: a caller cancelled later cannot stop it from being written. Cancelling the
        future only stops waiting for it. With a `tag` whose key the partition holds, nothing
        is queued: the future gets the first append's result (ProduceTagConflict if that
        append was made for another request).
        """
        if self._closed:
            raise StorageClosed(f"partition {self.name} is closed")
        if tag is not None:
            held = self._held_append(tag)
            if held is not None:
                return held
        if self._failure is not None:
            raise self._failure
        if not records:
            raise ValueError("append needs at least one record")
        timestamp_ms = now_ms()
        if timestamp_ms < self._last_timestamp_ms:
            timestamp_ms = self._last_timestamp_ms
        base_offset = self._next_offset
        count = len(records)
        data = codec.encode_batch(base_offset, timestamp_ms, records, tag)
        self._next_offset = base_offset + count
        self._last_timestamp_ms = timestamp_ms
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        if tag is not None:
            self._queued_tags[tag.key] = (tag.request, base_offset, [])
        self._pending.append(codec.new_tuple(Batch, (data, base_offset, count, timestamp_ms)))
        self._waiting.append(future)
        self._pending_bytes += len(data)
        if not self._write_side_busy:
            self._write_side_busy = True
            loop.call_soon(self._write_next)
        return future

    def tagged_append(self, tag: ProduceTag) -> AppendResult | None:
        """The result of the written append with `tag`'s key (None when there is none, or
        it is still queued); ProduceTagConflict when the partition holds the key, written
        or queued, for another request. Checked by a keyed produce for every partition of
        the topic before it writes any (gateway.produce.write)."""
        written = self._tags.get(tag.key, now_ms())
        queued = self._queued_tags.get(tag.key)
        request = written.request if written is not None else queued[0] if queued else None
        if request is not None and request != tag.request:
            raise ProduceTagConflict(f"partition {self.name}")
        return None if written is None else written.result

    def _held_append(self, tag: ProduceTag) -> asyncio.Future[AppendResult] | None:
        """A future for the append the partition holds with `tag`'s key, written or queued."""
        written = self.tagged_append(tag)
        queued = self._queued_tags.get(tag.key)
        if written is None and queued is None:
            return None
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        if written is not None:
            future.set_result(written)
        elif queued is not None:
            queued[2].append(future)
        return future

    def _settle_tags(self, group: list[Batch]) -> None:
        """Loop: remember the tags of a written group and answer the appends that waited
        for them."""
        by_base = {base: key for key, (_r, base, _w) in self._queued_tags.items()}
        for batch in group:
            key = by_base.get(batch.base_offset)
            if key is None:
                continue
            request, _base, waiting = self._queued_tags.pop(key)
            result = codec.new_tuple(AppendResult, batch[1:])
            self._tags.add(key, TaggedAppend(request, result))
            for future in waiting:
                if not future.done():
                    future.set_result(result)

    def _write_next(self) -> None:
        """Loop, write side held: hand the next group to the writer thread."""
        if not self._pending:
            self._release_write_side()
            return
        group, waiting, group_bytes = self._take_group()
        if self._failure is not None:  # a failed interval fsync
            self._fail_pending(self._failure, waiting)
            self._release_write_side()
            return
        self._writer.call(
            partial(self._write_locked, group), partial(self._written, group, waiting, group_bytes)
        )

    def _written(
        self,
        group: list[Batch],
        waiting: list[asyncio.Future[AppendResult]],
        group_bytes: int,
        touched: list[Segment] | None,
        error: BaseException | None,
    ) -> None:
        """Loop: the writer thread is done with a group; publish it and answer its waiters."""
        if error is not None or touched is None:
            self._fail_locked(error or RuntimeError("the writer returned nothing"), waiting)
        else:
            self._publish_locked(group, group_bytes, touched)
            if self._queued_tags:
                self._settle_tags(group)
            for batch, future in zip(group, waiting, strict=True):
                if not future.done():
                    future.set_result(codec.new_tuple(AppendResult, batch[1:]))
            if self._prefill is not None and group_bytes <= PREFILL_GROUP_BYTES:
                self._maybe_prefill(self._prefill, group_bytes)
        self._release_write_side()

    def _release_write_side(self) -> None:
        """Loop: pass the write side on: to the longest waiter, else to the next group."""
        while self._write_side_waiters:
            waiter = self._write_side_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if self._pending:
            self._write_next()
            return
        self._write_side_busy = False
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    @contextlib.asynccontextmanager
    async def _write_side(self) -> AsyncIterator[None]:
        """Hold the write side (no group in flight) for retention, sync or close."""
        if self._write_side_busy:
            waiter = asyncio.get_running_loop().create_future()
            self._write_side_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over, then cancelled
                    self._release_write_side()
                raise
        else:
            self._write_side_busy = True
        try:
            yield
        finally:
            self._release_write_side()

    def _take_group(self) -> tuple[list[Batch], list[asyncio.Future[AppendResult]], int]:
        """The next batches to write together (with their waiters and size in bytes): all
        pending, up to GROUP_COMMIT_BYTES.

        A bound keeps one huge group from making every producer wait for all of it, and
        lets acknowledged producers encode their next appends while this group is written.
        """
        pending, waiting = self._pending, self._waiting
        size = self._pending_bytes
        if size <= GROUP_COMMIT_BYTES:
            self._pending, self._waiting, self._pending_bytes = [], [], 0
            return pending, waiting, size
        size = end = 0
        while size < GROUP_COMMIT_BYTES:
            size += len(pending[end].data)
            end += 1
        group, group_waiting = pending[:end], waiting[:end]
        del pending[:end], waiting[:end]
        self._pending_bytes -= size
        return group, group_waiting, size

    def _write_locked(self, group: list[Batch]) -> list[Segment]:
        """Writer thread: write `group`, rolling segments as needed. Returns touched segments.

        A segment rolls before a batch that would take it past segment.bytes, or that is
        segment.ms younger than its first batch; an empty segment takes any batch.
        """
        sync = self._sync if self.durability.mode is Durability.ALWAYS else None
        seal_sync = self._sync if self.durability.mode is not Durability.NEVER else None
        segment_bytes, segment_ms = self.config.segment_bytes, self.config.segment_ms
        active = original = self._active
        saved = (original.size, original.next_offset, original.first_timestamp_ms)
        saved_max_timestamp = original.max_timestamp_ms
        touched = [original]
        position, first_timestamp = active.size, active.first_timestamp_ms
        start = 0
        try:
            for i, batch in enumerate(group):
                if position and (
                    position + len(batch.data) > segment_bytes
                    or (
                        first_timestamp is not None
                        and batch.timestamp_ms - first_timestamp >= segment_ms
                    )
                ):
                    if i > start:
                        active.write_locked(_joined(group, start, i), group[start:i], None)
                    active.seal(seal_sync)
                    active = self._active = Segment.create(
                        self._files, self.directory, batch.base_offset, self._take_prepared()
                    )
                    touched.append(active)
                    start, position, first_timestamp = i, 0, None
                if first_timestamp is None:
                    first_timestamp = batch.timestamp_ms
                position += len(batch.data)
            active.write_locked(_joined(group, start, len(group)), group[start:], sync)
            if len(touched) > 1 and seal_sync is not None:
                self._files.fsync_dir(self.directory)
        except BaseException:
            self._rollback_locked(original, saved, saved_max_timestamp, touched[1:])
            raise
        return touched

    def _take_prepared(self) -> PreparedFile | None:
        """Writer thread: the prepared next segment file, if the prefill job made one.

        Only the loop sets `_prepared`, and only from a job started while it was None, so
        it cannot change between this read and this reset.
        """
        prepared = self._prepared
        if prepared is not None:
            self._prepared = None
        return prepared

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

    # -- zero-filling ahead of the writer ----------------------------------------------

    def _maybe_prefill(self, sizer: PrefillSizer, written_bytes: int) -> None:
        """Loop, after a write: start the prefill job if the zeros ahead run low."""
        sizer.appended_bytes += written_bytes
        active = self._active
        low_bytes = sizer.chunk_bytes // 2
        if self._prefilling is not None or active.file_size - active.size >= low_bytes:
            return
        if self._failure is not None or self._closed:
            return
        segment_bytes = self.config.segment_bytes
        prepare = self._prepared is None and segment_bytes - active.size < low_bytes
        if active.file_size >= segment_bytes and not prepare:
            return
        now_s = time.monotonic()
        if now_s < self._prefill_paused_until_s:
            return
        chunk_bytes = sizer.next_chunk(now_s)
        target = min(segment_bytes, active.size + chunk_bytes)
        size = min(segment_bytes, chunk_bytes) if prepare else 0
        self._prefilling = asyncio.get_running_loop().run_in_executor(
            self._executor, _prefill, active, target, self.directory, size
        )
        self._prefilling.add_done_callback(self._prefilled)

    def _prefilled(self, job: asyncio.Future[PreparedFile | None]) -> None:
        self._prefilling = None
        if job.cancelled():
            return
        error = job.exception()
        if error is not None:
            # Appends still work (they grow the file); a write tries again in a while.
            log.warning("could not zero-fill ahead of %s: %s", self.name, error)
            self._prefill_paused_until_s = time.monotonic() + PREFILL_AHEAD_S
            return
        prepared = job.result()
        if prepared is not None:
            if self._closed:
                prepared.discard()
            else:
                self._prepared = prepared

    def _fail_locked(self, exc: BaseException, waiting: list[asyncio.Future[AppendResult]]) -> None:
        """Make the partition sticky-failed and fail every queued append."""
        error = write_error(exc, f"append to {self.name} failed")
        if not isinstance(exc, OSError):
            log.error("append to %s failed", self.name, exc_info=exc)
        else:
            log.error("%s; the partition refuses writes until it is reopened", error)
        self._failure = error
        self._fail_pending(error, waiting)

    def _fail_pending(
        self, error: StorageWriteError, waiting: list[asyncio.Future[AppendResult]]
    ) -> None:
        failed = waiting + self._waiting
        for _request, _base, tag_waiting in self._queued_tags.values():
            failed += tag_waiting
        self._queued_tags.clear()
        self._pending, self._waiting, self._pending_bytes = [], [], 0
        self._next_offset = self._end_offset
        for future in failed:
            if not future.done():
                future.set_exception(error)
                # Callers that were cancelled must not trigger "exception never retrieved".
                future.exception()

    def _publish_locked(self, group: list[Batch], group_bytes: int, touched: list[Segment]) -> None:
        """Loop: make a finished write visible to readers and wake waiters."""
        for segment in touched:
            segment.readable_size = segment.size
            segment.published_max_timestamp_ms = segment.max_timestamp_ms
        for segment in touched[1:]:
            self._segments.append(segment)
            self._bases.append(segment.base_offset)
        last = group[-1]
        self._end_offset = last.base_offset + last.record_count
        if self.durability.mode is not Durability.ALWAYS:
            self._dirty = True
        self._tail_bases += map(_BASE_OFFSET, group)
        self._tail_batches += map(_DATA, group)
        self._tail_bytes += group_bytes
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
        async with self._write_side():
            if not self._dirty or self._failure is not None:
                return
            self._dirty = False
            try:
                await self._writer.submit(partial(self._sync, self._active.fd))
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
        async with self._write_side():
            if self._closed or self._failure is not None:
                return 0
            active = self._active
            if (
                retention_ms is not None
                and active.size > 0
                and now - active.max_timestamp_ms > retention_ms
            ):
                try:
                    new = await self._writer.submit(self._roll_locked)
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
        """Writer thread: seal the active segment and start an empty one at the end offset."""
        active = self._active
        active.seal(self._sync if self.durability.mode is not Durability.NEVER else None)
        new = Segment.create(self._files, self.directory, active.next_offset, self._take_prepared())
        if self.durability.mode is not Durability.NEVER:
            self._files.fsync_dir(self.directory)
        self._active = new
        return new

    # -- closing ------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish queued appends, fsync, wake waiters and release the files."""
        if self._closed:
            return
        self._closed = True
        if self._write_side_busy or self._pending:  # appends queued before close are written
            self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)
        if self._prefilling is not None:
            await asyncio.wait([self._prefilling])
        async with self._write_side():
            if self._failure is None:
                try:
                    await self._writer.submit(partial(self._files.fdatasync, self._active.fd))
                except OSError as exc:
                    log.error("fsync of %s on close failed: %s", self.name, exc)
            prepared = self._take_prepared()
            if prepared is not None:
                prepared.discard()
            for segment in self._segments:
                segment.deleted = True
                if segment.readers == 0:
                    segment.close()
        self._tail_bases.clear()
        self._tail_batches.clear()
        self._tail_budget.resize(-1)
        self._wake_all()


_DATA = itemgetter(0)
_BASE_OFFSET = itemgetter(1)


def _joined(group: list[Batch], start: int, end: int) -> bytes:
    """The bytes of group[start:end], in one piece (not copied when there is one batch)."""
    return group[start].data if end - start == 1 else b"".join(map(_DATA, group[start:end]))


def _prefill(
    active: Segment, target_size: int, directory: Path, prepare_bytes: int
) -> PreparedFile | None:
    """Pool thread: zero-fill the active segment up to `target_size`, then prepare the next
    segment's file of `prepare_bytes` zeros (none when 0)."""
    active.fill_zeros(target_size)
    return PreparedFile.create(active.files, directory, prepare_bytes) if prepare_bytes else None


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


def _cut_at_gap(files: Files, directory: Path, bases: list[int], base: int, end: int) -> list[int]:
    """Worker thread: remove, durably, the segments after one whose data ends at `end`
    short of the next segment's base; returns the bases left (`base` last, to recover).

    Only a power cut leaves such a gap when it is not damage (open_sealed tells those
    apart): the segment file that held `end` on lost its directory entry, whose fsync
    comes before any append in a later segment is acknowledged (or, under fsync=interval,
    counted as synced). So nothing after the gap was promised, and keeping it would leave
    the partition unreadable past the gap. The removal is made durable before the offsets
    are given out again, so a second crash cannot bring the old segments back beside new
    data at the same offsets.
    """
    removed = [b for b in bases if b > base]
    for removed_base in removed:
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            files.unlink(directory / (segment_name(removed_base) + suffix))
    files.fsync_dir(directory)
    log.warning(
        "recovery found offsets %d..%d missing from %s (a segment file lost in a power cut, "
        "never acknowledged); removed the %d segment(s) after the gap, from offset %d",
        end,
        removed[0] - 1,
        directory,
        len(removed),
        removed[0],
    )
    return [b for b in bases if b <= base]


def _open_segments(files: Files, directory: Path) -> list[Segment]:
    """Worker thread: open a partition directory, recovering the last segment (its
    parent's entry is made durable by whoever made the parent: storage.log)."""
    files.ensure_dir(directory)
    names = files.listdir(directory)
    bases = sorted(b for b in (parse_segment_name(n) for n in names) if b is not None)
    stems = {f"{b:020d}" for b in bases}
    for name in names:
        stem, _, suffix = name.partition(".")
        orphan_index = "." + suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX) and stem not in stems
        # a prepared file left by a crash holds only zeros that no roll took
        if orphan_index or name.endswith(PREPARED_SUFFIX):
            files.unlink(directory / name)
    if not bases:
        segment = Segment.create(files, directory, 0)
        files.fsync_dir(directory)
        return [segment]
    segments: list[Segment] = []
    try:
        for base, next_base in itertools.pairwise(bases):
            segment = Segment.open_sealed(files, directory, base, next_base)
            segments.append(segment)
            end = segment.scanned_next_offset
            if end is not None and end < next_base:
                segments.pop().close()
                bases = _cut_at_gap(files, directory, bases, base, end)
                break
        active, cut = Segment.recover(files, directory, bases[-1])
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
