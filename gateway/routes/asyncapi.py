"""GET /asyncapi.json: the AsyncAPI 3.0 document of the live topics (gateway/schemas/asyncapi.py).

Generated on each request, so it always shows the topics and schema versions of now. With
auth on, any authenticated principal may read it, and it shows the topics the principal
may see (as the topic list does).
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import context
from gateway.http.auth import may_see
from gateway.routes.ops import openapi_document
from gateway.schemas.asyncapi import document
from gateway.schemas.registry import compatibility


async def asyncapi_json(request: Request) -> Response:
    ctx = context(request)
    backend = ctx.backend
    topics = [t for t in await backend.list_topics() if may_see(request.scope, "topic", t.name)]
    latest = await asyncio.gather(*(backend.latest_schema(t.name) for t in topics))
    rules = await asyncio.gather(*(compatibility(backend, t.name) for t in topics))
    root_path = (request.scope.get("root_path") or ctx.settings.root_path).rstrip("/")
    server = {
        "host": request.headers.get("host", f"{ctx.settings.host}:{ctx.settings.port}"),
        "protocol": request.url.scheme,
        "pathname": root_path or "/",
    }
    doc = document(
        list(zip(topics, latest, rules, strict=True)),
        server,
        openapi_document()["components"]["schemas"],
    )
    return Response(orjson.dumps(doc), media_type="application/json")


ROUTES = [Route("/asyncapi.json", asyncapi_json, methods=["GET"])]
