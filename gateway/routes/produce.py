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
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.problems import Problem, validation_error
from gateway.routes import Context, context, resource
from gateway.wire import (
    Limits,
    ProduceRecord,
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


async def _hashed(chunks: AsyncIterator[bytes], digest: Any) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        digest.update(chunk)
        yield chunk


async def _read_records(
    request: Request, ctx: Context, kind: str, digest: Any | None
) -> list[ProduceRecord]:
    """Parse and validate the body; with a digest (Idempotency-Key), hash it as it comes."""
    settings = ctx.settings
    limits = Limits(settings.max_record_bytes, settings.max_records_per_request)
    if kind == JSON:
        body = await read_body(request, settings.max_body_bytes)
        if digest is not None:
            digest.update(body)
        return parse_json_body(body, limits)
    chunks = limited_stream(request, settings.max_ndjson_bytes)
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
    ctx: Context, topic: str, info: TopicInfo, records: list[ProduceRecord]
) -> dict[int, list[int]]:
    """Partition -> indices of its records, in request order."""
    groups: dict[int, list[int]] = {}
    partitions = info.partitions
    place = ctx.partitioner.partition
    for i, item in enumerate(records):
        partition = item.partition
        if partition is None:
            partition = place(topic, partitions, item.record.key)
        elif partition >= partitions:
            raise Problem(
                "unknown-partition",
                f"/records/{i}/partition: topic {topic!r} has partitions 0..{partitions - 1}",
                topic=topic,
                partition=partition,
            )
        indices = groups.get(partition)
        if indices is None:
            groups[partition] = [i]
        else:
            indices.append(i)
    return groups


async def _append_all(
    ctx: Context, topic: str, groups: dict[int, list[NewRecord]]
) -> list[AppendResult | BaseException]:
    """One append per partition, all queued before any is awaited; never cut short."""
    start = getattr(ctx.backend, "start_append", None)
    if start is None:  # a backend that appends in a coroutine: run them shielded
        appends = asyncio.gather(
            *(ctx.backend.append(topic, p, batch) for p, batch in groups.items()),
            return_exceptions=True,
        )
        # Shielded: once the first byte may be written, a cancelled request still finishes.
        return list(await asyncio.shield(appends))
    # Queued synchronously, so a cancelled request cannot stop a queued batch.
    queued: list[asyncio.Future[AppendResult] | BaseException] = []
    for p, batch in groups.items():
        try:
            queued.append(start(topic, p, batch))
        except Exception as exc:  # as gather(return_exceptions=True) would collect it
            queued.append(exc)
    outcomes: list[AppendResult | BaseException] = []
    for item in queued:
        if isinstance(item, BaseException):
            outcomes.append(item)
            continue
        try:
            outcomes.append(await item)
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


async def _write(
    ctx: Context, topic: str, info: TopicInfo | None, records: list[ProduceRecord]
) -> bytes:
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
    groups = _place(ctx, topic, info, records)
    batches = {p: [records[i].record for i in indices] for p, indices in groups.items()}
    outcomes = await _append_all(ctx, topic, batches)
    offsets: list[dict[str, int]] = [{} for _ in records] if len(groups) > 1 else []
    for (partition, indices), outcome in zip(groups.items(), outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raise outcome
        base, timestamp = outcome.base_offset, outcome.timestamp_ms
        if len(groups) == 1:
            offsets = [
                {"partition": partition, "offset": base + n, "timestamp": timestamp}
                for n in range(len(indices))
            ]
            break
        for n, i in enumerate(indices):
            offsets[i] = {"partition": partition, "offset": base + n, "timestamp": timestamp}
    ctx.metrics.produced(topic, batches.values())
    return orjson.dumps({"offsets": offsets})


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (
        0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and key.isascii() and key.isprintable()
    ):
        raise validation_error("", "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


async def produce(request: Request) -> Response:
    ctx = context(request)
    topic = validate_topic_name(request.path_params["topic"])
    kind = media_type(request)
    if kind not in (JSON, NDJSON):
        raise Problem(
            "unsupported-media-type",
            f"send records as {JSON} or {NDJSON}, not {kind or 'no Content-Type'}",
        )
    key = _idempotency_key(request)
    info: TopicInfo | None
    try:
        info = await ctx.backend.get_topic(topic)
    except errors.TopicNotFound:
        if not ctx.settings.auto_create_topics:
            raise
        info = None

    if key is None:  # nothing to fingerprint or look up
        records = await _read_records(request, ctx, kind, None)
        return Response(await _write(ctx, topic, info, records), media_type=JSON)

    digest = hashlib.sha256(f"{topic}\n{kind}\n".encode())
    records = await _read_records(request, ctx, kind, digest)
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
            return Response(
                first["body"].encode(),
                status_code=first["status"],
                media_type=JSON,
                headers={"Idempotent-Replayed": "true"},
            )
        body = await _write(ctx, topic, info, records)
        result = {"request": fingerprint, "status": 200, "body": body.decode()}
        await ctx.backend.save_idempotent_result(
            key, orjson.dumps(result), ctx.settings.idempotency_ttl_ms
        )
    return Response(body, media_type=JSON)


ROUTES = [resource("/v1/topics/{topic}/records", POST=produce)]
