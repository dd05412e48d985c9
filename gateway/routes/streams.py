"""Streams: SSE or NDJSON (by Accept) from earliest, latest, a timestamp or a cursor.

Start positions: a cursor (the `Last-Event-ID` header, else `?cursor=`) always wins over
`from=`, because EventSource reconnects to the same URL with the last id it saw; the header
wins over the query parameter because it is the newer of the two. Partitions the cursor
does not name start at `from=`; a cursor naming a partition the stream does not read is a
bad cursor. `from=` defaults to `latest`.

Consumer groups (`group=G`): the stream joins G as a new member (`Logway-Member-Id` header)
and reads only what G's coordinator assigns it. Every generation is announced with `event:
assignment` before any of its records (`LogStream.reassign`); `membership.owns(p)` is
checked as each batch is handed to the connection, so records of a lost partition stop at
once. A (re)started partition begins at G's committed offset, clamped into the log, else at
`from=`; the cursor is ignored, because the committed offsets are the group's resume point
and another member may have read the partition since the cursor was made. The stream
heartbeats after every write, so a client that stops reading (or vanishes without a FIN)
stops heartbeating once its buffers fill and expires after the session timeout.
commit=auto commits, about every second and when the server ends the stream, the offset
after the last record written to the connection in the current generation; never on a
client disconnect (at least once for what was not yet written; a client that crashes
after receiving may lose up to a second of committed-but-unprocessed records).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.cursor import CursorError, decode_cursor
from gateway.group_errors import FencedGeneration, GroupError, NotPartitionOwner, UnknownMember
from gateway.groups import Assignment as GroupAssignment
from gateway.groups import Membership
from gateway.problems import Problem, from_group_error, from_storage_error, offset_out_of_range
from gateway.routes import Context, context
from gateway.routes.groups import consumer_groups
from gateway.streaming import Assignment as StreamAssignment
from gateway.streaming import (
    End,
    LogStream,
    RecordBatch,
    StreamEvent,
    StreamResponse,
    encode_headers,
    ndjson_chunks,
    sse_chunks,
)
from storage import errors
from storage.backend import Backend
from storage.names import validate_topic_name

log = logging.getLogger(__name__)

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# encoded once, not per stream: an idle stream would hold its own copy (~0.4 KB)
_RAW_HEADERS = {
    SSE: encode_headers({"Content-Type": "text/event-stream; charset=utf-8", **STREAM_HEADERS}),
    NDJSON: encode_headers({"Content-Type": NDJSON, **STREAM_HEADERS}),
}


def negotiate(accept: str | None) -> str:
    """SSE or NDJSON by the Accept header; no header or */* means SSE (what `curl -N` sends)."""
    if not accept:
        return SSE
    best: tuple[float, str] | None = None
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        choice = {
            SSE: SSE,
            NDJSON: NDJSON,
            "*/*": SSE,
            "text/*": SSE,
            "application/*": NDJSON,
        }.get(media)
        if choice is not None and quality > 0 and (best is None or quality > best[0]):
            best = (quality, choice)
    if best is None:
        raise Problem("not-acceptable", f"this resource streams {SSE} or {NDJSON}")
    return best[1]


def parse_partitions(raw: str | None, count: int, topic: str) -> list[int]:
    if raw is None:
        return list(range(count))
    partitions: set[int] = set()
    for item in raw.split(","):
        item = item.strip()
        if not item.isascii() or not item.isdigit() or len(item) > 5:
            raise Problem(
                "validation-error",
                "partitions must be a comma-separated list of partition numbers",
                errors=[{"parameter": "partitions", "detail": f"not a partition number: {item!r}"}],
            )
        if int(item) >= count:
            raise Problem(
                "unknown-partition",
                f"topic {topic!r} has partitions 0..{count - 1}",
                topic=topic,
                partition=int(item),
            )
        partitions.add(int(item))
    return sorted(partitions)


async def start_positions(
    backend: Backend, topic: str, partitions: list[int], start: str
) -> dict[int, int]:
    """Where each partition starts for `from=` (earliest, latest or a timestamp in ms)."""
    positions: dict[int, int] = {}
    if start in ("earliest", "latest"):
        for p in partitions:
            info = await backend.partition_info(topic, p)
            positions[p] = info.log_start_offset if start == "earliest" else info.end_offset
        return positions
    if not start.isascii() or not start.isdigit() or len(start) > 15:
        raise Problem(
            "validation-error",
            "from must be earliest, latest or a timestamp in ms since the epoch",
            errors=[{"parameter": "from", "detail": "earliest, latest or an integer timestamp"}],
        )
    for p in partitions:
        positions[p] = await backend.offset_for_timestamp(topic, p, int(start))
    return positions


async def resume_positions(
    backend: Backend, topic: str, partitions: list[int], cursor: str
) -> dict[int, int]:
    """The cursor's positions for the partitions it names (validated against the log)."""
    try:
        positions = decode_cursor(cursor)
    except CursorError as exc:
        raise Problem("bad-cursor", f"the cursor is not valid: {exc}") from None
    stray = positions.keys() - set(partitions)
    if stray:
        raise Problem(
            "bad-cursor", f"the cursor names partitions this stream does not read: {sorted(stray)}"
        )
    for p, offset in positions.items():
        info = await backend.partition_info(topic, p)
        if offset > info.end_offset:  # from another incarnation of the topic
            raise offset_out_of_range(offset, info.log_start_offset, info.end_offset)
    return positions


def stream_response(
    ctx: Context,
    stream: LogStream,
    format: str,
    *,
    wrap: Callable[[AsyncGenerator[bytes, None]], AsyncGenerator[bytes, None]] | None = None,
    headers: Mapping[str, str] | None = None,
    on_disconnect: Callable[[], None] | None = None,
) -> Response:
    """The SSE or NDJSON response that runs `stream` until it ends or the client goes away.

    `wrap` runs around the chunks (a group member's session), `headers` are added to the
    stream headers, `on_disconnect` replaces `stream.close` as the client-gone callback.
    """
    settings = ctx.settings
    stream.on_records = ctx.metrics.consumed
    if format == SSE:
        chunks = sse_chunks(stream, settings.sse_retry_ms, ctx.chunks, settings.heartbeat_s)
    else:
        chunks = ndjson_chunks(stream, settings.heartbeat_s, ctx.chunks)
    if wrap is not None:
        chunks = wrap(chunks)
    raw_headers = _RAW_HEADERS[format]
    return StreamResponse(
        chunks,
        raw_headers=raw_headers + encode_headers(headers) if headers else raw_headers,
        send_timeout_s=settings.stream_send_timeout_s,
        registry=ctx.streams,
        stream=stream,
        on_disconnect=on_disconnect or stream.close,
    )


async def events(request: Request) -> Response:
    ctx = context(request)
    topic = validate_topic_name(request.path_params["topic"])
    format = negotiate(request.headers.get("accept"))
    if ctx.streams.closing:
        raise Problem("shutting-down", "the gateway is shutting down", headers={"Retry-After": "1"})
    params = request.query_params
    if "group" in params:
        return await group_events(request, ctx, topic, format)
    if "commit" in params:
        raise _parameter_error("commit", "commit is only for streams with group=")
    info = await ctx.backend.get_topic(topic)
    partitions = parse_partitions(params.get("partitions"), info.partitions, topic)
    start = params.get("from", "latest")
    positions = await start_positions(ctx.backend, topic, partitions, start)
    cursor = request.headers.get("last-event-id") or params.get("cursor")
    if cursor:
        positions.update(await resume_positions(ctx.backend, topic, partitions, cursor))
    return stream_response(ctx, LogStream(ctx.backend, topic, positions), format)


# -- consumer groups ------------------------------------------------------------------------

AUTO_COMMIT_INTERVAL_S = 1.0
MEMBER_HEADER = "Logway-Member-Id"


def _parameter_error(name: str, detail: str) -> Problem:
    return Problem("validation-error", detail, errors=[{"parameter": name, "detail": detail}])


class GroupStream(LogStream):
    """A stream that is a member of a consumer group.

    It sends only records of partitions the member owns at the moment they are handed to
    the connection (`membership.owns`), heartbeats the membership after every write (so a
    client that stops reading stops heartbeating once the connection's buffers are full,
    and is removed after the session timeout), and remembers, per partition, the next
    offset after the last record written to the connection since the last assignment —
    what commit=auto commits.
    """

    def __init__(self, backend: Backend, membership: Membership, heartbeat_s: float) -> None:
        super().__init__(backend, membership.topic, {})
        self.membership = membership
        self.member_heartbeat_s = heartbeat_s
        self.generation = 0  # of the last assignment sent to the client
        self.written: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.client_gone = False
        self._problem: Problem | None = None

    def next_positions(self) -> dict[int, int]:
        """The positions the stream will read from next (an assignment not yet sent wins)."""
        pending = self._pending
        return dict(pending.positions) if pending is not None else self.positions

    def end(self, problem: Problem) -> None:
        """End the stream with `problem` (an `error` event) as soon as it can."""
        self._problem = problem
        self.close()

    def disconnected(self) -> None:
        self.client_gone = True
        self.close()

    async def events(self, heartbeat_s: float | None = None) -> AsyncGenerator[StreamEvent, None]:
        interval = self.member_heartbeat_s
        if heartbeat_s is not None:
            interval = min(interval, heartbeat_s)
        async with aclosing(super().events(interval)) as events:
            async for event in events:
                if isinstance(event, RecordBatch):
                    if not self.membership.owns(event.partition):
                        continue  # the partition moved in this very loop step
                    yield event
                    self.written[event.partition] = event.records[-1].offset + 1
                elif isinstance(event, StreamAssignment):
                    self.generation = int(event.announcement["generation"])
                    # keep only what continues exactly where this connection left off
                    self.written = {
                        p: o for p, o in self.written.items() if event.positions.get(p) == o
                    }
                    self.committed = {p: o for p, o in self.committed.items() if p in self.written}
                    yield event
                elif isinstance(event, End):
                    yield End(event.problem or self._problem)
                    return
                else:
                    yield event
                try:
                    self.membership.heartbeat()
                except UnknownMember as exc:
                    self.end(from_group_error(exc))

    async def auto_commit(self) -> None:
        """Commit what was written to the connection (commit=auto); a fenced or no longer
        owned partition's commit is dropped (its records go to the next owner again)."""
        offsets = {
            p: o
            for p, o in self.written.items()
            if o != self.committed.get(p) and self.membership.owns(p)
        }
        if not offsets:
            return
        try:
            await self.membership.commit(self.generation, offsets)
        except (FencedGeneration, NotPartitionOwner, UnknownMember):
            return
        except (GroupError, errors.StorageError):
            log.warning("auto-commit of group %r failed", self.membership.group, exc_info=True)
            return
        self.committed.update(offsets)


async def _group_starts(
    backend: Backend, topic: str, starting_offsets: Mapping[int, int | None], start: str
) -> dict[int, int]:
    """Where each (re)started partition begins: the group's committed offset, moved into
    the log when retention or a recreated topic left it outside; `from=` with none."""
    positions: dict[int, int] = {}
    unset = [p for p, offset in starting_offsets.items() if offset is None]
    positions.update(await start_positions(backend, topic, unset, start))
    for p, offset in starting_offsets.items():
        if offset is not None:
            info = await backend.partition_info(topic, p)
            positions[p] = min(max(offset, info.log_start_offset), info.end_offset)
    return positions


def _announcement(membership: Membership, assignment: GroupAssignment) -> dict[str, Any]:
    return {
        "member_id": membership.member_id,
        "generation": assignment.generation,
        "partitions": list(assignment.partitions),
    }


async def _follow(stream: GroupStream, start: str, auto_commit: bool) -> None:
    """Turn each new generation into `stream.reassign`, and commit=auto every interval."""
    membership = stream.membership
    try:
        while True:
            try:
                async with asyncio.timeout(AUTO_COMMIT_INTERVAL_S if auto_commit else None):
                    assignment = await membership.changed()
            except TimeoutError:
                await stream.auto_commit()
                continue
            starts = await _group_starts(
                stream.backend, stream.topic, assignment.starting_offsets, start
            )
            current = stream.next_positions()  # read with no await before reassign
            positions = {
                p: starts[p] if p in starts else current[p]
                for p in assignment.partitions
                if p in starts or p in current
            }
            stream.reassign(positions, _announcement(membership, assignment))
    except UnknownMember as exc:  # expired, or the gateway is closing
        stream.end(from_group_error(exc))
    except errors.StorageError as exc:
        stream.end(from_storage_error(exc))
    except Exception:  # a stream that no longer follows its group must not go on reading
        log.exception("group stream of %r stopped following its group", membership.group)
        stream.end(Problem("internal-error", "the stream lost track of its group; reconnect"))


async def group_events(request: Request, ctx: Context, topic: str, format: str) -> Response:
    """A stream that is a member of `group` (see the module's consumer-group rules)."""
    params = request.query_params
    group = params["group"]
    if "partitions" in params:
        raise _parameter_error("partitions", "a group assigns the partitions; omit partitions")
    commit = params.get("commit", "manual")
    if commit not in ("manual", "auto"):
        raise _parameter_error("commit", "commit must be manual or auto")
    start = params.get("from", "latest")
    await ctx.backend.get_topic(topic)
    await start_positions(ctx.backend, topic, [], start)  # validates from= before joining
    if request.method == "HEAD":  # headers only: no membership for a response with no body
        return Response(media_type=format, headers=STREAM_HEADERS)
    groups = consumer_groups(ctx)
    membership = await groups.join(group, topic)
    session_s = ctx.settings.group_session_timeout_s
    stream = GroupStream(ctx.backend, membership, heartbeat_s=session_s / 3)
    try:
        assignment = membership.assignment
        starts = await _group_starts(ctx.backend, topic, assignment.starting_offsets, start)
    except BaseException:
        await membership.leave()
        raise
    stream.reassign(starts, _announcement(membership, assignment))

    async def session(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        follower = asyncio.get_running_loop().create_task(_follow(stream, start, commit == "auto"))
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
        finally:
            follower.cancel()
            try:
                if commit == "auto" and ctx.streams.closing and not stream.client_gone:
                    await stream.auto_commit()  # the server ended a healthy connection
            finally:
                await membership.leave()

    return stream_response(
        ctx,
        stream,
        format,
        wrap=session,
        headers={MEMBER_HEADER: membership.member_id},
        on_disconnect=stream.disconnected,
    )


class _EventsEndpoint:
    """`events` as a plain ASGI app (Starlette calls a non-function endpoint as one).

    A stream's response runs as long as the stream, and Starlette's wrapper for function
    endpoints would hold its closures, a second exception wrapper and the Request all that
    time (~1.5 KB per idle stream); a Problem raised here still reaches the app's exception
    handlers through ExceptionMiddleware.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await events(Request(scope, receive))
        await response(scope, receive, send)


ROUTES = [Route("/v1/topics/{topic}/events", _EventsEndpoint(), methods=["GET"])]
