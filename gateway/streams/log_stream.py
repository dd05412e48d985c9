"""Live streams: each one reads the log at its own positions and sleeps on the backend's
notifier between batches — no per-subscriber copies, no polling, one batch in memory.

    LogStream.events()  ──► StreamEvent (RecordBatch | Gap | Reassigned | Idle | End)
         │                        │
    reassign() / close()     sse_chunks() / ndjson_chunks()  ──► bytes for the response
                             (gateway/streams/formats.py)

`LogStream` knows nothing of HTTP: it turns positions into events. The formatters turn
events into SSE or NDJSON bytes, many records per chunk. `reassign()` replaces the set of
partitions and their positions mid-stream and makes the stream announce it (`event:
assignment`); consumer groups drive it. `close()` ends the stream cleanly at once (graceful
shutdown); `StreamRegistry` tracks every open stream and long poll so the app can close
them all.

Rules:
- A position below the log start (retention removed what the stream had not sent yet)
  moves to the log start and emits `Gap`; a position beyond the end offset (the topic was
  recreated) ends the stream with an offset-out-of-range problem.
- The topic being deleted ends the stream with the unknown-topic problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.http.problems import Problem, from_storage_error
from storage import errors
from storage.backend import Backend
from storage.types import Record

BATCH_RECORDS = 500
BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecordBatch:
    partition: int
    records: list[Record]


@dataclass(frozen=True, slots=True)
class Gap:
    """Records [from_offset, to_offset) of a partition were deleted before they were sent."""

    partition: int
    from_offset: int
    to_offset: int


@dataclass(frozen=True, slots=True)
class Reassigned:
    """The stream now reads `positions`; `announcement` is sent to the client as is; the
    cursors sent from here on carry `epoch` (a consumer group's offsets epoch), if any."""

    positions: Mapping[int, int]
    announcement: Mapping[str, Any]
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing arrived for a heartbeat interval (only when events() is given one)."""


@dataclass(frozen=True, slots=True)
class End:
    """The stream is over: cleanly (problem None, e.g. shutdown) or with a problem."""

    problem: Problem | None = None


StreamEvent = RecordBatch | Gap | Reassigned | Idle | End


class Interruptible:
    """Something parked on the backend that `close()` must cut short.

    The park is an `asyncio.timeout(None)` that `wake()` moves to now: the stdlib's own
    cancel-and-convert, a fraction of the memory of an anyio CancelScope, which matters
    with one parked stream per idle connection.
    """

    def __init__(self) -> None:
        self.closed = False
        self._parked: asyncio.Timeout | None = None

    def close(self) -> None:
        self.closed = True
        self.wake()

    def wake(self) -> None:
        parked = self._parked
        if parked is not None and not parked.expired():
            parked.reschedule(0)  # in the past: cancels the parked task on the next loop step

    async def wait_for_records(
        self, backend: Backend, topic: str, positions: Mapping[int, int], timeout_s: float | None
    ) -> bool:
        """backend.wait_for_records, returning False early when woken or closed."""
        if self.closed:
            return False
        return await self._parked_on(backend.wait_for_records(topic, positions, timeout_s))

    async def _parked_on(self, waiting: Coroutine[Any, Any, bool]) -> bool:
        try:
            async with asyncio.timeout(None) as parked:
                self._parked = parked
                return await waiting
        except TimeoutError:
            if parked.expired():
                return False  # woken
            raise
        finally:
            self._parked = None


class StreamRegistry:
    """Every open stream and long poll, so shutdown can end them all right away."""

    def __init__(self) -> None:
        self._open: set[Interruptible] = set()
        self.closing = False

    def add(self, item: Interruptible) -> None:
        if self.closing:
            item.close()
        self._open.add(item)

    def discard(self, item: Interruptible) -> None:
        self._open.discard(item)

    def close_all(self) -> None:
        self.closing = True
        for item in list(self._open):
            item.close()

    def __len__(self) -> int:
        return len(self._open)


class LogStream(Interruptible):
    """One subscriber's read loop over some partitions of a topic."""

    def __init__(
        self,
        backend: Backend,
        topic: str,
        positions: Mapping[int, int],
        *,
        batch_records: int = BATCH_RECORDS,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.topic = topic
        self._positions = dict(positions)
        self._pending: Reassigned | None = None
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        # told of every batch read for the client (metrics); set by the route
        self.on_records: Callable[[str, list[Record]], None] | None = None

    @property
    def positions(self) -> dict[int, int]:
        """The next offset to send, per partition (a copy)."""
        return dict(self._positions)

    def reassign(
        self,
        positions: Mapping[int, int],
        announcement: Mapping[str, Any],
        epoch: int | None = None,
    ) -> None:
        """Read `positions` from now on; the stream emits Reassigned before any of their records.

        Safe to call from any task on the loop at any time; a newer call replaces an
        assignment not yet emitted.
        """
        self._pending = Reassigned(dict(positions), dict(announcement), epoch)
        self.wake()

    async def events(self, heartbeat_s: float | None = None) -> AsyncGenerator[StreamEvent, None]:
        """Events until End. With heartbeat_s, an idle interval yields Idle."""
        while True:
            if self.closed:
                yield End()
                return
            if self._pending is not None:
                assignment, self._pending = self._pending, None
                self._positions = dict(assignment.positions)
                yield assignment
                continue
            progressed = False
            for partition in list(self._positions):
                if self._pending is not None or self.closed:
                    progressed = True
                    break
                position = self._positions[partition]
                try:
                    records = await self.backend.read(
                        self.topic, partition, position, self._batch_records, self._batch_bytes
                    )
                except errors.OffsetOutOfRange as exc:
                    if position < exc.log_start_offset:
                        self._positions[partition] = exc.log_start_offset
                        progressed = True
                        yield Gap(partition, position, exc.log_start_offset)
                        continue
                    yield End(from_storage_error(exc))
                    return
                except errors.StorageError as exc:
                    yield End(from_storage_error(exc))
                    return
                if records and self._pending is None:
                    self._positions[partition] = records[-1].offset + 1
                    progressed = True
                    if self.on_records is not None:
                        self.on_records(self.topic, records)
                    yield RecordBatch(partition, records)
            if progressed or self._pending is not None or self.closed:
                continue
            # parked here while idle, so straight on _parked_on: one frame less per stream
            if self._positions:
                waiting = self.backend.wait_for_records(self.topic, self._positions, heartbeat_s)
                try:
                    arrived = await self._parked_on(waiting)
                except errors.StorageError as exc:
                    yield End(from_storage_error(exc))
                    return
            else:  # an empty assignment: nothing to read until reassigned
                arrived = await self._parked_on(_sleep(heartbeat_s))
            if not arrived and heartbeat_s is not None and not self.closed and not self._pending:
                yield Idle()


async def _sleep(timeout_s: float | None) -> bool:
    """Sleep `timeout_s` (forever with None); False, as nothing arrived."""
    if timeout_s is None:
        await asyncio.get_running_loop().create_future()  # until woken
    else:
        await asyncio.sleep(timeout_s)
    return False
