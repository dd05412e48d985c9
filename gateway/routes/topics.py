"""Topics: list, create (idempotent), describe, delete.

With auth on, the list names only the topics the principal has a right on (any action), so
it cannot learn the names of the others; the other routes are guarded by the middleware.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import context
from gateway.http.auth import may_see
from gateway.http.body import as_int, read_body, require_json
from gateway.http.problems import Problem, validation_error
from gateway.http.routing import resource
from gateway.schemas.registry import compatibility
from storage.backend import Backend
from storage.names import validate_topic_name
from storage.types import TopicConfig, TopicInfo

MAX_TOPIC_BODY_BYTES = 64 * 1024
MAX_CONFIG_VALUE = 2**63 - 1  # Kafka's settings are 64-bit signed, and so is the catalog
_CONFIG_FIELDS = {
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
}
_UNLIMITED = frozenset({"retention.ms", "retention.bytes"})


def config_to_json(config: TopicConfig) -> dict[str, int]:
    """Kafka's spelling: dotted names, -1 for unlimited retention."""
    return {
        "retention.ms": -1 if config.retention_ms is None else config.retention_ms,
        "retention.bytes": -1 if config.retention_bytes is None else config.retention_bytes,
        "segment.bytes": config.segment_bytes,
        "segment.ms": config.segment_ms,
    }


def config_from_json(doc: Any) -> TopicConfig:
    """Unset members keep their defaults; unknown ones are an error, never ignored."""
    if not isinstance(doc, dict):
        raise validation_error("/config", "must be an object")
    values: dict[str, int | None] = {}
    for name, value in doc.items():
        field = _CONFIG_FIELDS.get(name)
        if field is None:
            raise validation_error(
                f"/config/{name}", f"unknown setting; known: {', '.join(_CONFIG_FIELDS)}"
            )
        number = as_int(value)
        if number is None or number > MAX_CONFIG_VALUE:
            raise validation_error(
                f"/config/{name}", f"must be an integer up to {MAX_CONFIG_VALUE}"
            )
        values[field] = None if number == -1 and name in _UNLIMITED else number
    try:
        return TopicConfig(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise validation_error("/config", str(exc)) from None


async def describe(backend: Backend, info: TopicInfo) -> dict[str, Any]:
    partitions = await asyncio.gather(
        *(backend.partition_info(info.name, p) for p in range(info.partitions))
    )
    latest = await backend.latest_schema(info.name)
    return {
        "name": info.name,
        "partitions": [
            {
                "partition": p.partition,
                "log_start_offset": p.log_start_offset,
                "end_offset": p.end_offset,
                "bytes": p.size_bytes,
            }
            for p in partitions
        ],
        "config": config_to_json(info.config),
        # the schema version produce checks against (GET .../schemas for the versions)
        "schema_version": None if latest is None else latest.version,
        "compatibility": (await compatibility(backend, info.name)).value,
    }


def _json(doc: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


async def list_topics(request: Request) -> Response:
    topics = await context(request).backend.list_topics()
    return _json(
        {
            "topics": [
                {"name": t.name, "partitions": t.partitions}
                for t in sorted(topics, key=lambda t: t.name)
                if may_see(request.scope, "topic", t.name)
            ]
        }
    )


async def put_topic(request: Request) -> Response:
    """201 created, 200 when it exists with the same settings, 409 otherwise."""
    ctx = context(request)
    name = validate_topic_name(request.path_params["topic"])
    body = await read_body(
        request.receive, request.headers.get("content-length"), MAX_TOPIC_BODY_BYTES
    )
    doc: Any = {}
    if body.strip():
        require_json(request)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Problem("bad-json", f"the body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise validation_error("", "the body must be an object")
    unknown = doc.keys() - {"partitions", "config"}
    if unknown:
        raise validation_error("", f"unknown member(s): {', '.join(sorted(unknown))}")
    partitions = as_int(doc.get("partitions", ctx.settings.default_partitions))
    if partitions is None or not 1 <= partitions <= 10_000:
        raise validation_error("/partitions", "must be an integer from 1 to 10000")
    config = config_from_json(doc.get("config", {}))
    created = await ctx.backend.create_topic(name, partitions, config)
    if created:
        ctx.chunks.forget_topic(name)
    info = await ctx.backend.get_topic(name)
    return _json(await describe(ctx.backend, info), 201 if created else 200)


async def get_topic(request: Request) -> Response:
    backend = context(request).backend
    info = await backend.get_topic(validate_topic_name(request.path_params["topic"]))
    return _json(await describe(backend, info))


async def delete_topic(request: Request) -> Response:
    ctx = context(request)
    name = validate_topic_name(request.path_params["topic"])
    await ctx.backend.delete_topic(name)
    ctx.chunks.forget_topic(name)
    return Response(status_code=204)


ROUTES = [
    resource("/v1/topics", GET=list_topics),
    resource("/v1/topics/{topic}", GET=get_topic, PUT=put_topic, DELETE=delete_topic),
]
