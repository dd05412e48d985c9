"""SSE and NDJSON framing of a LogStream's events, and the cache that renders each batch once
for every subscriber that reads it.

SSE framing comes from sse-starlette, except on the record hot path, where one batch is
framed by hand into one chunk: the record JSON is one line (gateway/streams/render.py
compacts a stored value with line breaks), so the `data:` field needs no splitting.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing

import orjson
from sse_starlette.event import ServerSentEvent

from gateway.http.problems import Problem
from gateway.streams.cursor import CursorEncoder
from gateway.streams.log_stream import End, Gap, Idle, LogStream, Reassigned, RecordBatch
from gateway.streams.render import record_head, record_json


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


_PING = ServerSentEvent(comment="ping", sep="\n").encode()
_CLOSED = ServerSentEvent(
    comment="stream closed by the server; reconnect to resume", sep="\n"
).encode()


def _sse_records(topic: str, batch: RecordBatch, encoder: CursorEncoder) -> bytes:
    partition, records = batch.partition, batch.records
    cursors = encoder.encode_run(partition, [r.offset + 1 for r in records])
    head = record_head(topic, partition)
    parts: list[bytes] = []
    for record, cursor in zip(records, cursors, strict=True):
        parts += (b"event: record\nid: ", cursor, b"\ndata: ", record_json(head, record), b"\n\n")
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
            if isinstance(event, Idle):
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
            elif isinstance(event, Reassigned):
                encoder = CursorEncoder(event.positions, event.epoch) if event.positions else None
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
    head = record_head(topic, batch.partition)
    return b"".join([record_json(head, record) + b"\n" for record in batch.records])


def _ndjson_cursor(encoder: CursorEncoder) -> bytes:
    return b'{"event":"cursor","cursor":"' + encoder.encode().encode("ascii") + b'"}\n'


async def ndjson_chunks(
    stream: LogStream, heartbeat_s: float, cache: ChunkCache | None = None
) -> AsyncGenerator[bytes, None]:
    """NDJSON bytes: one record object per line (one chunk per batch); an empty line is a
    heartbeat; control lines are objects with an "event" member (gap, assignment, cursor,
    error), which record lines never have. A consumer group's stream (from its first
    assignment on) follows each batch, gap and assignment with a `cursor` line: the cursor
    after it, what SSE puts in `id:`."""
    topic = stream.topic
    encoder: CursorEncoder | None = None  # set by a group's assignments only
    async with aclosing(stream.events(heartbeat_s)) as events:
        async for event in events:
            if isinstance(event, RecordBatch):
                if cache is None:
                    yield _ndjson_records(topic, event)
                else:
                    key = cache.key(topic, event, "ndjson")
                    chunk = cache.get(key)
                    if chunk is None:
                        chunk = _ndjson_records(topic, event)
                        cache.put(key, chunk)
                    yield chunk
                if encoder is not None:
                    encoder.advance(event.partition, event.records[-1].offset + 1)
                    yield _ndjson_cursor(encoder)
            elif isinstance(event, Idle):
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
                if encoder is not None:
                    encoder.advance(event.partition, event.to_offset)
                    yield _ndjson_cursor(encoder)
            elif isinstance(event, Reassigned):
                yield orjson.dumps({"event": "assignment", **event.announcement}) + b"\n"
                encoder = CursorEncoder(event.positions, event.epoch) if event.positions else None
                if encoder is not None:
                    yield _ndjson_cursor(encoder)
            elif isinstance(event, End):
                if event.problem is not None:
                    yield orjson.dumps({"event": "error", **event.problem.body()}) + b"\n"
                return
