"""POST /v1/topics/{topic}/records: parse the body, write it, answer the offsets.

This is the gateway's hottest path, so the route is a plain ASGI app: it reads the few
headers it needs from the scope and answers with two `send` calls, without Starlette's
Request/Response objects and their per-request wrappers. Errors are raised as everywhere
else and become problem responses in `gateway.http.problems` (via the app's exception
middleware). NDJSON bodies are parsed line by line as they arrive; the validated records
are held until the body ends (bounded by max_ndjson_bytes and max_records_per_request),
because a request is written whole or not at all (gateway/produce/write.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.context import Context, app_context
from gateway.http.auth import principal_identity
from gateway.http.body import limited_stream, media_type, read_body
from gateway.http.problems import Problem
from gateway.produce import idempotency
from gateway.produce.parse import (
    Limits,
    ProduceBatch,
    ndjson_line_limit,
    ndjson_lines,
    parse_json_body,
    parse_ndjson,
)
from gateway.produce.write import write_batch
from gateway.schemas.produce import enforce_schema
from storage import errors
from storage.names import validate_topic_name
from storage.types import TopicInfo

JSON = "application/json"
NDJSON = "application/x-ndjson"
_JSON_HEADER = (b"content-type", b"application/json")
_REPLAYED_HEADER = (b"idempotent-replayed", b"true")


class _RequestHeaders:
    """The request headers produce reads, taken from the scope in one pass."""

    __slots__ = ("content_length", "content_type", "idempotency_key")

    def __init__(self, scope: Scope) -> None:
        self.content_type = ""
        self.content_length: str | None = None
        self.idempotency_key: str | None = None
        for name, value in scope["headers"]:  # ASGI header names are lower-case
            if name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"idempotency-key" and self.idempotency_key is None:
                self.idempotency_key = value.decode("latin-1")


async def _hashed(chunks: AsyncIterator[bytes], digest: Any) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        digest.update(chunk)
        yield chunk


async def _read_records(
    receive: Receive, headers: _RequestHeaders, ctx: Context, kind: str, digest: Any | None
) -> ProduceBatch:
    """Parse and validate the body; with a digest (Idempotency-Key), hash it as it comes."""
    settings = ctx.settings
    limits = Limits(settings.max_record_bytes, settings.max_records_per_request)
    if kind == JSON:
        body = await read_body(receive, headers.content_length, settings.max_body_bytes)
        if digest is not None:
            digest.update(body)
        return parse_json_body(body, limits)
    chunks = limited_stream(receive, headers.content_length, settings.max_ndjson_bytes)
    if digest is not None:
        chunks = _hashed(chunks, digest)
    return await parse_ndjson(
        ndjson_lines(chunks, ndjson_line_limit(settings.max_record_bytes)), limits
    )


async def _answer(
    send: Send, body: bytes, status: int = 200, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    headers = [_JSON_HEADER, (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def produce(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/topics/{topic}/records."""
    ctx = app_context(scope["app"])
    topic = validate_topic_name(scope["path_params"]["topic"])
    headers = _RequestHeaders(scope)
    kind = media_type(headers.content_type)
    if kind not in (JSON, NDJSON):
        raise Problem(
            "unsupported-media-type",
            f"send records as {JSON} or {NDJSON}, not {kind or 'no Content-Type'}",
        )
    key = idempotency.checked_idempotency_key(headers.idempotency_key)
    info: TopicInfo | None
    try:
        info = await ctx.backend.get_topic(topic)
    except errors.TopicNotFound:
        if not ctx.settings.auto_create_topics:
            raise
        info = None

    if key is None:  # nothing to fingerprint or look up
        batch = await _read_records(receive, headers, ctx, kind, None)
        await enforce_schema(ctx, topic, batch, kind == NDJSON)
        await _answer(send, (await write_batch(ctx, topic, info, batch)).body)
        return

    digest = idempotency.request_digest(topic, kind)
    batch = await _read_records(receive, headers, ctx, kind, digest)
    scoped = idempotency.scoped_key(principal_identity(scope), topic, key)
    fingerprint = digest.hexdigest()
    tag = idempotency.produce_tag(scoped, fingerprint)

    async def write() -> idempotency.Written:
        # a replay from the answer table answers as first stored, whatever the schema now
        await enforce_schema(ctx, topic, batch, kind == NDJSON)
        return await write_batch(ctx, topic, info, batch, tag)

    answer = await idempotency.once(
        ctx.backend,
        ctx.idempotency_locks,
        topic,
        scoped,
        fingerprint,
        ctx.settings.idempotency_ttl_ms,
        write,
    )
    await _answer(send, answer.body, answer.status, (_REPLAYED_HEADER,) if answer.replayed else ())


class _ProduceApp:
    """`produce` as an ASGI app (Starlette routes a non-function endpoint to it as is)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await produce(scope, receive, send)


ROUTES = [Route("/v1/topics/{topic}/records", _ProduceApp(), methods=["POST"], name="produce")]
