"""Produce: validate the whole request, then append one batch per partition, concurrently.

All-or-nothing: every record is parsed, validated and placed before the first append, so
bad input never changes the log. NDJSON bodies are parsed line by line as they arrive; the
validated records are held until the body ends (bounded by max_ndjson_bytes and
max_records_per_request), because a request is written whole or not at all.

Idempotency-Key: the first successful response is stored with a SHA-256 of (topic, media
type, body); a retry with the same key and body gets it back without writing, and the same
key with another request is a 422. Requests with the same key run one at a time (a lock per
key), so concurrent retries cannot both write. Failed requests wrote nothing and are not
stored: retrying them runs them again.

This is the gateway's hottest path, so the route is a plain ASGI app: it reads the few
headers it needs from the scope and answers with two `send` calls, without Starlette's
Request/Response objects and their per-request wrappers. Errors are raised as everywhere
else and become problem responses in `gateway.problems` (via the app's exception
middleware).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.problems import Problem, validation_error
from gateway.routes import Context, app_context
from gateway.wire import (
    Limits,
    ProduceBatch,
    limited_stream,
    media_type,
    ndjson_line_limit,
    ndjson_lines,
    parse_json_body,
    parse_ndjson,
    read_body,
)
from storage import errors
from storage.names import validate_topic_name
from storage.types import AppendResult, NewRecord, TopicConfig, TopicInfo

JSON = "application/json"
NDJSON = "application/x-ndjson"
MAX_IDEMPOTENCY_KEY_CHARS = 255
_JSON_HEADER = (b"content-type", b"application/json")
_REPLAYED_HEADER = (b"idempotent-replayed", b"true")
_NO_OFFSETS = b'{"offsets":[]}'


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


async def _ensure_topic(ctx: Context, topic: str) -> TopicInfo:
    """Auto-create (default partitions and config) only once the request proved valid."""
    try:
        if await ctx.backend.create_topic(topic, ctx.settings.default_partitions, TopicConfig()):
            ctx.chunks.forget_topic(topic)
    except errors.TopicExists as exc:  # created meanwhile with other settings: use it
        return exc.existing
    return await ctx.backend.get_topic(topic)


def _place(
    ctx: Context, topic: str, partitions: int, batch: ProduceBatch
) -> tuple[dict[int, list[NewRecord]], list[int]]:
    """Partition -> its records in request order, and each record's partition."""
    groups: dict[int, list[NewRecord]] = {}
    placed: list[int] = []
    named = batch.partitions
    place = ctx.partitioner.partition
    for i, record in enumerate(batch.records):
        partition = named[i] if named is not None else None
        if partition is None:
            partition = place(topic, partitions, record.key)
        elif partition >= partitions:
            raise Problem(
                "unknown-partition",
                f"/records/{i}/partition: topic {topic!r} has partitions 0..{partitions - 1}",
                topic=topic,
                partition=partition,
            )
        placed.append(partition)
        records = groups.get(partition)
        if records is None:
            groups[partition] = [record]
        else:
            records.append(record)
    return groups, placed


def _spread(
    ctx: Context, topic: str, partitions: int, records: list[NewRecord]
) -> tuple[dict[int, list[NewRecord]], int]:
    """Round-robin placement of keyless records in bulk: record i goes to partition
    (first + i) % partitions; returns the groups and `first`."""
    first = ctx.partitioner.round_robin(topic, partitions, len(records))
    if partitions == 1:
        return {0: records}, 0
    groups = {(first + j) % partitions: records[j::partitions] for j in range(partitions)}
    return {p: batch for p, batch in groups.items() if batch}, first


async def _append_all(
    ctx: Context, topic: str, groups: dict[int, list[NewRecord]]
) -> dict[int, AppendResult]:
    """One append per partition, all queued before any is awaited; never cut short."""
    start = getattr(ctx.backend, "start_append", None)
    outcomes: list[AppendResult | BaseException]
    if start is None:  # a backend that appends in a coroutine: run them shielded
        appends = asyncio.gather(
            *(ctx.backend.append(topic, p, batch) for p, batch in groups.items()),
            return_exceptions=True,
        )
        # Shielded: once the first byte may be written, a cancelled request still finishes.
        outcomes = list(await asyncio.shield(appends))
    else:
        # Queued synchronously, so a cancelled request cannot stop a queued batch.
        queued: list[asyncio.Future[AppendResult] | BaseException] = []
        for p, batch in groups.items():
            try:
                queued.append(start(topic, p, batch))
            except Exception as exc:  # as gather(return_exceptions=True) would collect it
                queued.append(exc)
        outcomes = []
        for item in queued:
            if isinstance(item, BaseException):
                outcomes.append(item)
                continue
            try:
                outcomes.append(await item)
            except Exception as exc:
                outcomes.append(exc)
    results: dict[int, AppendResult] = {}
    for partition, outcome in zip(groups, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raise outcome
        results[partition] = outcome
    return results


async def _write(ctx: Context, topic: str, info: TopicInfo | None, batch: ProduceBatch) -> bytes:
    # Read again now that the body is in: a topic deleted or re-created meanwhile is seen,
    # and nothing below yields before every batch is queued.
    if info is not None:
        try:
            info = await ctx.backend.get_topic(topic)
        except errors.TopicNotFound:
            if not ctx.settings.auto_create_topics:
                raise
            info = None
    if info is None:
        info = await _ensure_topic(ctx, topic)
    records = batch.records
    if not records:
        return _NO_OFFSETS
    partitions = info.partitions
    offsets: list[dict[str, int]]
    if batch.partitions is None and not batch.keyed:
        groups, first = _spread(ctx, topic, partitions, records)
        results = await _append_all(ctx, topic, groups)
        offsets = [{}] * len(records)
        for j in range(min(partitions, len(records))):  # record i sits in slot i % partitions
            partition = (first + j) % partitions
            result = results[partition]
            base, timestamp = result.base_offset, result.timestamp_ms
            offsets[j::partitions] = [
                {"partition": partition, "offset": base + n, "timestamp": timestamp}
                for n in range(len(groups[partition]))
            ]
    else:
        groups, placed = _place(ctx, topic, partitions, batch)
        results = await _append_all(ctx, topic, groups)
        next_offset = {p: result.base_offset for p, result in results.items()}
        offsets = []
        for partition in placed:
            offset = next_offset[partition]
            next_offset[partition] = offset + 1
            offsets.append(
                {
                    "partition": partition,
                    "offset": offset,
                    "timestamp": results[partition].timestamp_ms,
                }
            )
    ctx.metrics.produced(topic, records)
    return orjson.dumps({"offsets": offsets})


def _checked_idempotency_key(key: str | None) -> str | None:
    if key is not None and not (
        0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and key.isascii() and key.isprintable()
    ):
        raise validation_error("", "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


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
    key = _checked_idempotency_key(headers.idempotency_key)
    info: TopicInfo | None
    try:
        info = await ctx.backend.get_topic(topic)
    except errors.TopicNotFound:
        if not ctx.settings.auto_create_topics:
            raise
        info = None

    if key is None:  # nothing to fingerprint or look up
        batch = await _read_records(receive, headers, ctx, kind, None)
        await _answer(send, await _write(ctx, topic, info, batch))
        return

    digest = hashlib.sha256(f"{topic}\n{kind}\n".encode())
    batch = await _read_records(receive, headers, ctx, kind, digest)
    fingerprint = digest.hexdigest()
    async with ctx.idempotency_locks.hold(key):
        stored = await ctx.backend.load_idempotent_result(key)
        if stored is not None:
            first = orjson.loads(stored)
            if first["request"] != fingerprint:
                raise Problem(
                    "idempotency-key-reused",
                    "this Idempotency-Key was used for a different request",
                )
            replayed: bytes = first["body"].encode()
            await _answer(send, replayed, first["status"], (_REPLAYED_HEADER,))
            return
        body = await _write(ctx, topic, info, batch)
        result = {"request": fingerprint, "status": 200, "body": body.decode()}
        await ctx.backend.save_idempotent_result(
            key, orjson.dumps(result), ctx.settings.idempotency_ttl_ms
        )
    await _answer(send, body)


class _ProduceApp:
    """`produce` as an ASGI app (Starlette routes a non-function endpoint to it as is)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await produce(scope, receive, send)


ROUTES = [Route("/v1/topics/{topic}/records", _ProduceApp(), methods=["POST"], name="produce")]
