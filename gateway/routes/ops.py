"""Operations: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import context
from gateway.http.observe import PROMETHEUS_TEXT
from gateway.http.problems import Problem
from storage.errors import StorageError

# openapi/openapi.yaml is the source of truth. gateway/openapi.yaml is a symlink to it, so a
# source checkout and an editable install read the real file, and a wheel (package data,
# which follows the link) carries a copy.
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The parsed spec (read once per process)."""
    with OPENAPI_PATH.open("rb") as f:
        doc: dict[str, Any] = yaml.safe_load(f)
    return doc


@functools.cache
def _openapi_json(root_path: str) -> bytes:
    doc = dict(openapi_document())
    doc["servers"] = [{"url": root_path or "/"}]
    return orjson.dumps(doc)


def _json(doc: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


async def healthz(request: Request) -> Response:
    """The process is up and serving (does not touch storage)."""
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Appends can succeed right now; otherwise a 503 problem so a balancer routes elsewhere."""
    ctx = context(request)
    if ctx.streams.closing:
        raise Problem("shutting-down", "the gateway is shutting down", headers={"Retry-After": "1"})
    try:
        await ctx.backend.check_writable()
    except StorageError as exc:
        raise Problem("storage-unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    return _json({"status": "ready"})


async def openapi_json(request: Request) -> Response:
    root_path = request.scope.get("root_path") or context(request).settings.root_path
    return Response(_openapi_json(root_path.rstrip("/")), media_type="application/json")


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text exposition format. It names every topic and group with
    their offsets and lag, so with auth on it needs its own right, `admin:metrics`
    (gateway/http/auth.py), which no topic or group right implies."""
    ctx = context(request)
    body = await ctx.metrics.exposition(ctx.backend, len(ctx.streams))
    return Response(body, media_type=PROMETHEUS_TEXT)


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
