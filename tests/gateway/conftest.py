"""Fixtures for the gateway's API tests: a real EmbeddedBackend in tmp_path, the app on it,
an in-process httpx client, and (for streams, which httpx's ASGITransport cannot stream) the
same app served by Hypercorn on 127.0.0.1 with a free port inside the test's event loop."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from jsonschema import Draft202012Validator
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.routes.ops import openapi_document
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from storage.types import Durability, DurabilityPolicy

BASE_URL = "http://logway.test"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        durability=DurabilityPolicy(Durability.NEVER),
        heartbeat_s=15.0,
    )


@pytest.fixture
async def backend(settings: Settings) -> AsyncIterator[EmbeddedBackend]:
    opened = await EmbeddedBackend.open(settings.data_dir, settings.durability)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def app(settings: Settings, backend: EmbeddedBackend) -> Starlette:
    return create_app(settings, backend)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def serve_app(app: Starlette) -> tuple[str, asyncio.Event, asyncio.Task[None]]:
    """Start Hypercorn on a free loopback port; returns (base URL, stop event, server task)."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 2.0
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    for _ in range(500):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        break
    return f"http://127.0.0.1:{port}", stop, task


@pytest.fixture
async def live_url(app: Starlette) -> AsyncIterator[str]:
    url, stop, task = await serve_app(app)
    try:
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def live(live_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_url, timeout=10) as c:
        yield c


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


# -- the spec ---------------------------------------------------------------------------------


@functools.cache
def _validator(path: str, method: str, status: int, media_type: str) -> Draft202012Validator:
    spec = openapi_document()
    operation = spec["paths"][path][method.lower()]
    response = operation["responses"][str(status)]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"][media_type]["schema"]
    # The spec is the root resource, so "#/components/..." references resolve inside it.
    root = {"components": spec["components"], "allOf": [schema]}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def check_response(response: httpx.Response, path: str) -> Any:
    """Validate a response against the spec's schema for (path template, method, status,
    media type) and return the parsed body; fails if the spec does not document it."""
    media_type = response.headers.get("content-type", "").split(";")[0]
    method = response.request.method
    if not response.content:
        spec = openapi_document()
        documented = spec["paths"][path][method.lower()]["responses"]
        assert str(response.status_code) in documented, (path, method, response.status_code)
        return None
    body = orjson.loads(response.content)
    _validator(path, method, response.status_code, media_type).validate(body)
    return body


def problem_type(response: httpx.Response) -> str:
    """The problem's type slug, after checking the response is a problem+json document."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = orjson.loads(response.content)
    assert body["status"] == response.status_code
    slug: str = body["type"].removeprefix("https://logway.dev/problems/")
    return slug


def assert_told_to_retry(response: httpx.Response, slug: str) -> None:
    """What an EventSource refused for a while gets (gateway/http/event_source.py): a 200
    event stream naming the problem in a comment and `retry:` from Retry-After, jittered."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    comment, retry, end = response.text.split("\n", 2)
    assert comment.startswith(f": {slug}: "), response.text
    retry_after_ms = 1000 * int(response.headers["retry-after"])
    assert retry.startswith("retry: ")
    assert retry_after_ms <= int(retry.removeprefix("retry: ")) <= 1.5 * retry_after_ms
    assert end == "\n"


async def end_offsets(client: httpx.AsyncClient, topic: str) -> list[int]:
    response = await client.get(f"/v1/topics/{topic}")
    assert response.status_code == 200, response.text
    return [p["end_offset"] for p in response.json()["partitions"]]


# -- SSE --------------------------------------------------------------------------------------


@dataclass
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Events (and retry- or comment-only blocks) in arrival order, parsed from raw lines."""
    current = SseEvent()
    data: list[str] = []
    touched = False
    async for line in response.aiter_lines():
        if line == "":
            if touched:
                current.data = "\n".join(data)
                yield current
            current, data, touched = SseEvent(), [], False
            continue
        touched = True
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            current.event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            current.id = value
        elif name == "retry":
            current.retry = int(value)
