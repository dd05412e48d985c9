"""A topic's schemas: list the versions, register one, read one, delete the newest, and the
topic's compatibility rule (docs/schemas.md)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import context
from gateway.http.body import read_body, require_json
from gateway.http.problems import Problem, validation_error
from gateway.http.routing import resource
from gateway.schemas.compatibility import Compatibility
from gateway.schemas.document import parse_registration
from gateway.schemas.registry import compatibility, register, version_json
from storage.errors import SchemaVersionNotFound
from storage.names import validate_topic_name
from storage.types import SchemaVersion

MAX_SCHEMA_BODY_BYTES = 1024 * 1024
MAX_VERSION = 2**31 - 1
LATEST = "latest"
RULES = ", ".join(rule.value for rule in Compatibility)


def _json(
    doc: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers
    )


def _topic(request: Request) -> str:
    return validate_topic_name(request.path_params["topic"])


async def _body(request: Request) -> Any:
    body = await read_body(
        request.receive, request.headers.get("content-length"), MAX_SCHEMA_BODY_BYTES
    )
    require_json(request)
    return body


def _version(topic: str, kept: list[SchemaVersion], raw: str) -> SchemaVersion:
    """The version a path names: a number, or `latest`."""
    if raw == LATEST:
        if not kept:
            raise Problem("unknown-schema-version", f"topic {topic!r} has no schema", topic=topic)
        return kept[-1]
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_VERSION:
        raise Problem(
            "unknown-schema-version",
            f"{raw!r} is neither a version number (from 1) nor {LATEST}",
            topic=topic,
        )
    found = next((v for v in kept if v.version == int(raw)), None)
    if found is None:
        raise SchemaVersionNotFound(topic, int(raw))
    return found


async def list_versions(request: Request) -> Response:
    backend = context(request).backend
    topic = _topic(request)
    kept = await backend.schema_versions(topic)
    return _json(
        {
            "topic": topic,
            "compatibility": (await compatibility(backend, topic)).value,
            "latest_version": kept[-1].version if kept else None,
            "versions": [version_json(v) for v in kept],
        }
    )


async def register_version(request: Request) -> Response:
    """201 with the new version, or 200 with the newest when the schemas are the same."""
    backend = context(request).backend
    topic = _topic(request)
    contract = parse_registration(await _body(request))
    stored, created = await register(backend, topic, contract)
    doc = {"topic": topic, **version_json(stored)}
    if not created:
        return _json(doc)
    return _json(doc, 201, {"Location": f"{request.url.path}/{stored.version}"})


async def get_version(request: Request) -> Response:
    backend = context(request).backend
    topic = _topic(request)
    kept = await backend.schema_versions(topic)
    stored = _version(topic, kept, request.path_params["version"])
    return _json({"topic": topic, **version_json(stored)})


async def delete_version(request: Request) -> Response:
    """Only the newest version may go (the one before it becomes the active one again)."""
    backend = context(request).backend
    topic = _topic(request)
    kept = await backend.schema_versions(topic)
    stored = _version(topic, kept, request.path_params["version"])
    await backend.delete_schema_version(topic, stored.version)
    return Response(status_code=204)


async def get_compatibility(request: Request) -> Response:
    backend = context(request).backend
    topic = _topic(request)
    return _json({"topic": topic, "compatibility": (await compatibility(backend, topic)).value})


async def put_compatibility(request: Request) -> Response:
    backend = context(request).backend
    topic = _topic(request)
    body = await _body(request)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem("bad-json", f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.keys() != {"compatibility"}:
        raise validation_error("", 'the body must be {"compatibility": "<rule>"}')
    try:
        rule = Compatibility(doc["compatibility"])
    except ValueError:
        raise validation_error("/compatibility", f"must be one of {RULES}") from None
    await backend.set_schema_compatibility(topic, rule.value)
    return _json({"topic": topic, "compatibility": rule.value})


ROUTES = [
    resource("/v1/topics/{topic}/schemas", GET=list_versions, POST=register_version),
    resource(
        "/v1/topics/{topic}/schemas/compatibility", GET=get_compatibility, PUT=put_compatibility
    ),
    resource("/v1/topics/{topic}/schemas/{version}", GET=get_version, DELETE=delete_version),
]
