"""Live streams: each one reads the log at its own positions and sleeps on the backend's
notifier between batches — no per-subscriber copies, no polling, one batch in memory.

    LogStream.events()  ──► StreamEvent (RecordBatch | Gap | Assignment | Heartbeat | End)
         │                        │
    reassign() / close()     sse_chunks() / ndjson_chunks()  ──► bytes for the response

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
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from sse_starlette.event import ServerSentEvent
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.cursor import CursorEncoder
from gateway.problems import Problem, from_storage_error
from gateway.wire import render_record
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
class Assignment:
    """The stream now reads `positions`; `announcement` is sent to the client as is."""

    positions: Mapping[int, int]
    announcement: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing arrived for a heartbeat interval (only when events() is given one)."""


@dataclass(frozen=True, slots=True)
class End:
    """The stream is over: cleanly (problem None, e.g. shutdown) or with a problem."""

    problem: Problem | None = None


StreamEvent = RecordBatch | Gap | Assignment | Heartbeat | End


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
        self._pending: Assignment | None = None
        self._batch_records = batch_records
        self._batch_bytes = batch_bytes
        # told of every batch read for the client (metrics); set by the route
        self.on_records: Callable[[str, list[Record]], None] | None = None

    @property
    def positions(self) -> dict[int, int]:
        """The next offset to send, per partition (a copy)."""
        return dict(self._positions)

    def reassign(self, positions: Mapping[int, int], announcement: Mapping[str, Any]) -> None:
        """Read `positions` from now on; the stream emits Assignment before any of their records.

        Safe to call from any task on the loop at any time; a newer call replaces an
        assignment not yet emitted.
        """
        self._pending = Assignment(dict(positions), dict(announcement))
        self.wake()

    async def events(self, heartbeat_s: float | None = None) -> AsyncGenerator[StreamEvent, None]:
        """Events until End. With heartbeat_s, an idle interval yields Heartbeat."""
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
                yield Heartbeat()


async def _sleep(timeout_s: float | None) -> bool:
    """Sleep `timeout_s` (forever with None); False, as nothing arrived."""
    if timeout_s is None:
        await asyncio.get_running_loop().create_future()  # until woken
    else:
        await asyncio.sleep(timeout_s)
    return False


# -- formats --------------------------------------------------------------------------------


class ChunkCache:
    """Rendered batches shared by every stream that reads the same records from the same
    positions, so fan-out to many subscribers renders each batch once, not once per stream.

    Bounded by bytes (least recently used out first). A key names the topic's incarnation
    (bumped by `forget_topic` when a topic is created or deleted) and the batch's first and
    last offsets and timestamps; within an incarnation the log never reuses an offset, so an
    entry can only ever describe the records it was rendered from.
    """

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._incarnations: dict[str, int] = {}

    def forget_topic(self, topic: str) -> None:
        self._incarnations[topic] = self._incarnations.get(topic, 0) + 1

    def key(self, topic: str, batch: RecordBatch, *extra: object) -> tuple[object, ...]:
        first, last = batch.records[0], batch.records[-1]
        return (
            topic,
            self._incarnations.get(topic, 0),
            batch.partition,
            first.offset,
            last.offset,
            first.timestamp_ms,
            last.timestamp_ms,
            *extra,
        )

    def get(self, key: tuple[object, ...]) -> bytes | None:
        chunk = self._entries.get(key)
        if chunk is not None:
            self._entries.move_to_end(key)
        return chunk

    def put(self, key: tuple[object, ...], chunk: bytes) -> None:
        if len(chunk) > self.max_bytes // 4 or key in self._entries:
            return
        self._entries[key] = chunk
        self._bytes += len(chunk)
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)

    @property
    def size_bytes(self) -> int:
        return self._bytes


def _problem_json(problem: Problem) -> bytes:
    return orjson.dumps(problem.body())


# SSE framing comes from sse-starlette, except on the record hot path below, where one batch
# is framed by hand into one chunk: the record JSON is one line (orjson, stored JSON values
# made single-line on produce), so the `data:` field needs no splitting.
_PING = ServerSentEvent(comment="ping", sep="\n").encode()
_CLOSED = ServerSentEvent(
    comment="stream closed by the server; reconnect to resume", sep="\n"
).encode()


def _sse_records(topic: str, batch: RecordBatch, encoder: CursorEncoder) -> bytes:
    partition, records = batch.partition, batch.records
    cursors = encoder.encode_run(partition, [r.offset + 1 for r in records])
    parts: list[bytes] = []
    for record, cursor in zip(records, cursors, strict=True):
        parts += (
            b"event: record\nid: ",
            cursor,
            b"\ndata: ",
            render_record(topic, partition, record),
            b"\n\n",
        )
    return b"".join(parts)


async def sse_chunks(
    stream: LogStream,
    retry_ms: int,
    cache: ChunkCache | None = None,
    heartbeat_s: float | None = None,
) -> AsyncGenerator[bytes, None]:
    """SSE bytes: `retry:` first, then `event: record` with `id: <cursor>` per record (one chunk
    per batch), `event: gap` / `event: assignment` (with the new cursor as id), a `: ping`
    comment after each idle `heartbeat_s`, and `event: error` carrying a problem before the
    stream ends on an error."""
    topic = stream.topic
    encoder = CursorEncoder(stream.positions) if stream.positions else None
    yield ServerSentEvent(retry=retry_ms, sep="\n").encode()
    async with aclosing(stream.events(heartbeat_s)) as events:
        async for event in events:
            if isinstance(event, Heartbeat):
                yield _PING
                continue
            if isinstance(event, RecordBatch):
                assert encoder is not None
                if cache is None:
                    yield _sse_records(topic, event, encoder)
                    continue
                # the ids depend on every partition's position, so those are part of the key
                key = cache.key(topic, event, "sse", encoder.state())
                chunk = cache.get(key)
                if chunk is None:
                    chunk = _sse_records(topic, event, encoder)
                    cache.put(key, chunk)
                else:
                    encoder.advance(event.partition, event.records[-1].offset + 1)
                yield chunk
            elif isinstance(event, Gap):
                assert encoder is not None
                encoder.advance(event.partition, event.to_offset)
                data = orjson.dumps(
                    {
                        "partition": event.partition,
                        "from_offset": event.from_offset,
                        "to_offset": event.to_offset,
                    }
                )
                yield ServerSentEvent(
                    data.decode(), event="gap", id=encoder.encode(), sep="\n"
                ).encode()
            elif isinstance(event, Assignment):
                encoder = CursorEncoder(event.positions) if event.positions else None
                # an empty id resets EventSource's last event id: no partitions, no cursor
                cursor = encoder.encode() if encoder else ""
                announcement = orjson.dumps(dict(event.announcement)).decode()
                yield ServerSentEvent(
                    announcement, event="assignment", id=cursor, sep="\n"
                ).encode()
            elif isinstance(event, End):
                if event.problem is not None:
                    problem = _problem_json(event.problem).decode()
                    yield ServerSentEvent(problem, event="error", sep="\n").encode()
                else:
                    yield _CLOSED
                return


def _ndjson_records(topic: str, batch: RecordBatch) -> bytes:
    partition = batch.partition
    return b"".join(render_record(topic, partition, record) + b"\n" for record in batch.records)


async def ndjson_chunks(
    stream: LogStream, heartbeat_s: float, cache: ChunkCache | None = None
) -> AsyncGenerator[bytes, None]:
    """NDJSON bytes: one record object per line (one chunk per batch); an empty line is a
    heartbeat; control lines are objects with an "event" member (gap, assignment, error),
    which record lines never have."""
    topic = stream.topic
    async with aclosing(stream.events(heartbeat_s)) as events:
        async for event in events:
            if isinstance(event, RecordBatch):
                if cache is None:
                    yield _ndjson_records(topic, event)
                    continue
                key = cache.key(topic, event, "ndjson")
                chunk = cache.get(key)
                if chunk is None:
                    chunk = _ndjson_records(topic, event)
                    cache.put(key, chunk)
                yield chunk
            elif isinstance(event, Heartbeat):
                yield b"\n"
            elif isinstance(event, Gap):
                yield (
                    orjson.dumps(
                        {
                            "event": "gap",
                            "partition": event.partition,
                            "from_offset": event.from_offset,
                            "to_offset": event.to_offset,
                        }
                    )
                    + b"\n"
                )
            elif isinstance(event, Assignment):
                yield orjson.dumps({"event": "assignment", **event.announcement}) + b"\n"
            elif isinstance(event, End):
                if event.problem is not None:
                    yield orjson.dumps({"event": "error", **event.problem.body()}) + b"\n"
                return


def encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI response headers: lower-case names, latin-1."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class StreamResponse(Response):
    """A streaming response for SSE and NDJSON that costs no extra task per stream under
    Granian, one under Hypercorn.

    Against sse-starlette's EventSourceResponse (an anyio task group of four tasks per
    stream: body, ping, shutdown watcher, disconnect watcher: 35 KiB of app memory per idle
    stream) and against a watcher task of its own (bench/RESULTS.md, memory per idle
    stream). Heartbeats come from the stream itself (its wait on the log times out), server
    shutdown from `begin_shutdown` through `registry`, and the client going away from a
    callback on the pending `receive()`: Granian's receive returns a future, so nothing but
    that future waits; Hypercorn's is a coroutine and gets a task. A client that stops
    reading for `send_timeout_s` is dropped (the response ends without its final message,
    so the server resets the stream).
    """

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        *,
        raw_headers: list[tuple[bytes, bytes]],
        send_timeout_s: float,
        registry: StreamRegistry,
        stream: Interruptible,
        on_disconnect: Callable[[], None],
    ) -> None:
        self.chunks = chunks
        self.send_timeout_s = send_timeout_s
        self.registry = registry
        self.stream = stream
        self.on_disconnect = on_disconnect
        self.status_code = 200
        self.background = None
        self.raw_headers = raw_headers  # may be shared by many streams: sent as a copy
        self.disconnected = False
        self._receive: Receive | None = None
        self._pending: asyncio.Future[Message] | None = None

    def _watch(self) -> None:
        assert self._receive is not None
        self._pending = asyncio.ensure_future(self._receive())
        self._pending.add_done_callback(self._received)

    def _received(self, pending: asyncio.Future[Message]) -> None:
        if pending.cancelled():  # the response ended first
            return
        error = pending.exception()
        if error is None and pending.result()["type"] != "http.disconnect":
            self._watch()  # the (empty) request body: listen on
            return
        self.disconnected = True  # gone, or a receive that failed: nothing more to send
        self.on_disconnect()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = list(self.raw_headers)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            await self.chunks.aclose()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        self._receive = receive
        self._watch()
        self.registry.add(self.stream)
        try:
            async with aclosing(self.chunks) as chunks:
                async for chunk in chunks:
                    if self.disconnected:
                        return
                    try:
                        async with asyncio.timeout(self.send_timeout_s):
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                    except (TimeoutError, OSError):  # stalled, or gone (ASGI 2.4 servers)
                        return
            if not self.disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.registry.discard(self.stream)
            if self._pending is not None:
                self._pending.cancel()
