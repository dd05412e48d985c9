"""Streams: SSE or NDJSON (by Accept) from earliest, latest, a timestamp or a cursor.

Start positions: a cursor (the `Last-Event-ID` header, else `?cursor=`) always wins over
`from=`, because EventSource reconnects to the same URL with the last id it saw; the header
wins over the query parameter because it is the newer of the two. Partitions the cursor
does not name start at `from=`; a cursor naming a partition the stream does not read is a
bad cursor. `from=` defaults to `latest`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response

from gateway.cursor import CursorError, decode_cursor
from gateway.problems import Problem, offset_out_of_range, validation_error
from gateway.routes import Context, context, resource
from gateway.streaming import LogStream, StreamResponse, ndjson_chunks, sse_chunks
from storage.backend import Backend
from storage.names import validate_topic_name

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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


async def _registered(
    ctx: Context, stream: LogStream, chunks: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    """Tracked while it runs, so begin_shutdown can end it."""
    ctx.streams.add(stream)
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk
    finally:
        ctx.streams.discard(stream)


def stream_response(ctx: Context, stream: LogStream, format: str) -> Response:
    """The SSE or NDJSON response that runs `stream` until it ends or the client goes away."""
    settings = ctx.settings
    if format == SSE:
        chunks = sse_chunks(stream, settings.sse_retry_ms, ctx.chunks, settings.heartbeat_s)
        media_type = "text/event-stream; charset=utf-8"
    else:
        chunks = ndjson_chunks(stream, settings.heartbeat_s, ctx.chunks)
        media_type = NDJSON
    return StreamResponse(
        _registered(ctx, stream, chunks),
        media_type=media_type,
        headers=STREAM_HEADERS,
        send_timeout_s=settings.stream_send_timeout_s,
        on_disconnect=stream.close,
    )


async def events(request: Request) -> Response:
    ctx = context(request)
    topic = validate_topic_name(request.path_params["topic"])
    format = negotiate(request.headers.get("accept"))
    if ctx.streams.closing:
        raise Problem("shutting-down", "the gateway is shutting down", headers={"Retry-After": "1"})
    params = request.query_params
    for name in params:
        if name in ("group", "commit"):
            raise validation_error("", "consumer groups are not available on this server yet")
    info = await ctx.backend.get_topic(topic)
    partitions = parse_partitions(params.get("partitions"), info.partitions, topic)
    start = params.get("from", "latest")
    positions = await start_positions(ctx.backend, topic, partitions, start)
    cursor = request.headers.get("last-event-id") or params.get("cursor")
    if cursor:
        positions.update(await resume_positions(ctx.backend, topic, partitions, cursor))
    return stream_response(ctx, LogStream(ctx.backend, topic, positions), format)


ROUTES = [resource("/v1/topics/{topic}/events", GET=events)]
