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
`from=`: the cursor does not choose the start, because the committed offsets are the
group's resume point and another member may have read the partition since the cursor was
made. With commit=auto the cursor is proof of receipt instead: before the stream joins, G
commits the cursor's offsets where they are ahead (ConsumerGroups.commit_received), so the
new member starts after what its client already has. commit=auto then commits only what
the client has shown it received (gateway/streams/group_stream.py), never the window in
flight at a disconnect.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.context import Context, context
from gateway.http.auth import principal_identity
from gateway.http.event_source import retry_later
from gateway.http.media import NDJSON, SSE, names_sse, negotiate
from gateway.http.problems import Problem, from_storage_error
from gateway.streams.formats import ndjson_chunks, sse_chunks
from gateway.streams.group_stream import GroupStream, announcement, follow, group_starts
from gateway.streams.log_stream import LogStream
from gateway.streams.positions import read_cursor, resume_positions, start_positions
from gateway.streams.response import StreamResponse, encode_headers
from storage import errors
from storage.names import validate_topic_name

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# encoded once, not per stream: an idle stream would hold its own copy (~0.4 KB)
_RAW_HEADERS = {
    SSE: encode_headers({"Content-Type": "text/event-stream; charset=utf-8", **STREAM_HEADERS}),
    NDJSON: encode_headers({"Content-Type": NDJSON, **STREAM_HEADERS}),
}


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

MEMBER_HEADER = "Logway-Member-Id"


def _parameter_error(name: str, detail: str) -> Problem:
    return Problem("validation-error", detail, errors=[{"parameter": name, "detail": detail}])


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
    info = await ctx.backend.get_topic(topic)
    await start_positions(ctx.backend, topic, [], start)  # validates from= before joining
    cursor = request.headers.get("last-event-id") or params.get("cursor")
    received_epoch, received = (
        read_cursor(cursor, list(range(info.partitions))) if cursor else (None, {})
    )
    if request.method == "HEAD":  # headers only: no membership for a response with no body
        return Response(media_type=format, headers=STREAM_HEADERS)
    if commit == "auto" and received_epoch is not None:
        await ctx.groups.commit_received(group, topic, received_epoch, received)
    membership = await ctx.groups.join(group, topic, principal=principal_identity(request.scope))
    epoch = ctx.groups.cursor_epoch(group)  # before any await: see ConsumerGroups.cursor_epoch
    session_s = ctx.settings.group_session_timeout_s
    stream = GroupStream(
        ctx.backend,
        membership,
        heartbeat_s=session_s / 3,
        cursor_epoch=functools.partial(ctx.groups.cursor_epoch, group),
        auto_commit=commit == "auto",
    )
    try:
        assignment = membership.assignment
        starts = await group_starts(ctx.backend, topic, assignment.starting_offsets, start)
    except BaseException:
        await membership.leave()
        raise
    stream.reassign(starts, announcement(membership, assignment), epoch)

    async def session(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        follower = asyncio.get_running_loop().create_task(follow(stream, start, commit == "auto"))
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
        finally:
            follower.cancel()
            try:
                if commit == "auto" and ctx.streams.closing:
                    await stream.auto_commit()  # the server ended the connection: what is proven
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
        request = Request(scope, receive)
        try:
            response = await events(request)
        except (Problem, errors.StorageError) as exc:
            problem = exc if isinstance(exc, Problem) else from_storage_error(exc)
            if problem.type.status != 503 or not names_sse(request.headers.get("accept")):
                raise
            response = retry_later(problem)
        await response(scope, receive, send)


ROUTES = [Route("/v1/topics/{topic}/events", _EventsEndpoint(), methods=["GET"])]
