"""openapi/openapi.yaml against the code: the problem catalog, the routes, /openapi.json, the
auth and rate-limit problems each operation lists (both ways), and the stream formats."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from jsonschema import Draft202012Validator
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.app import create_app
from gateway.http.problems import CATALOG
from gateway.routes.ops import openapi_document
from gateway.settings import Settings
from gateway.streams.cursor import encode_cursor
from storage.embedded import EmbeddedBackend
from tests.gateway.conftest import (
    BASE_URL,
    SseEvent,
    check_response,
    serve_app,
    sse_events,
    with_settings,
)


def test_problem_catalog_matches_the_spec_both_ways() -> None:
    spec = openapi_document()
    in_code = {(t.uri, t.status, t.title) for t in CATALOG.values()}
    listed = {(t["type"], t["status"], t["title"]) for t in spec["components"]["x-problem-types"]}
    assert listed == in_code
    enum = spec["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    assert sorted(enum) == sorted(t.uri for t in CATALOG.values())
    assert len(enum) == len(set(enum))


def test_routes_match_the_spec_both_ways(app: Starlette) -> None:
    in_app: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                in_app.add((route.path.replace("{partition}", "{partition}"), method.lower()))
    spec = openapi_document()
    in_spec = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert in_app == in_spec


def test_every_problem_response_documents_the_problem_schema() -> None:
    spec = openapi_document()
    for name, response in spec["components"]["responses"].items():
        schema = response["content"]["application/problem+json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}, name
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status in operation["responses"]:
                assert status.isdigit(), (path, method, status)


async def test_openapi_json_serves_the_yaml(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = check_response(response, "/openapi.json")
    assert doc["openapi"].startswith("3.1")
    assert doc["paths"] == openapi_document()["paths"]
    assert doc["servers"] == [{"url": "/"}]


async def test_served_servers_follow_the_root_path(app: Starlette) -> None:
    transport = httpx.ASGITransport(app, root_path="/logway")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/logway/openapi.json")
    assert response.status_code == 200
    assert response.json()["servers"] == [{"url": "/logway"}]


# -- the problems every operation lists, against what the app answers ---------------------

METHODS = ("get", "put", "post", "delete", "patch")
PATH_VALUES = {
    "topic": "t", "partition": "0", "group": "g", "member_id": "m", "asset": "x.js", "version": "1"
}  # fmt: skip
NOBODY_KEY = "lw_nobody_0123456789"  # valid, but may do nothing the paths above name


def _operations() -> list[tuple[str, str, set[str]]]:
    """(path template, method, documented statuses) of every operation in the spec."""
    return [
        (path, method, set(operation["responses"]))
        for path, item in openapi_document()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


async def _each_operation(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> list[tuple[str, str, set[str], httpx.Response]]:
    """Call every operation once, bodiless, on made-up names (no stream opens: every
    stream request in these tests is refused before it starts)."""
    answers = []
    for path, method, documented in _operations():
        response = await client.request(method.upper(), path.format(**PATH_VALUES), headers=headers)
        answers.append((path, method, documented, response))
    return answers


async def test_401_and_403_are_listed_exactly_where_the_app_gives_them(
    settings: Settings, backend: EmbeddedBackend, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.toml"
    digest = hashlib.sha256(NOBODY_KEY.encode()).hexdigest()
    keys.write_text(
        f'[keys.nobody]\nsha256 = "{digest}"\npermissions = ["admin:topic:other", "admin:group:other"]\n'
    )
    # every anonymous call fails authentication: not limited here (see the 429 test)
    unlimited = with_settings(settings, auth_api_keys_file=keys, auth_failure_limit_per_s=0)
    app = create_app(unlimited, backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        anonymous = await _each_operation(client)
        nobody = await _each_operation(client, {"Authorization": f"Bearer {NOBODY_KEY}"})
    for status, answers in (("401", anonymous), ("403", nobody)):
        for path, method, documented, response in answers:
            assert (response.status_code == int(status)) == (status in documented), (
                path, method, status, response.status_code, response.text
            )  # fmt: skip
            if response.status_code == int(status):
                check_response(response, path)


async def test_429_is_listed_exactly_where_the_app_rate_limits(
    settings: Settings, backend: EmbeddedBackend, tmp_path: Path
) -> None:
    """Two limiters give 429s: the request rate, and failed authentication per address."""
    # one token per 1,000 s: once the first request took it, every limited request is a 429
    limited = with_settings(settings, rate_limit_per_s=0.001, rate_limit_burst=1)
    app = create_app(limited, backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        assert (await client.get("/v1/topics")).status_code == 200
        by_rate = await _each_operation(client)
    keys = tmp_path / "keys.toml"
    keys.write_text("[keys]\n")
    failing = with_settings(settings, auth_api_keys_file=keys, auth_failure_burst=1)
    app = create_app(failing, backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        assert (await client.get("/v1/topics")).status_code == 401  # the one failure allowed
        by_failures = await _each_operation(client)
    for (path, method, documented, response), (*_, after_failures) in zip(
        by_rate, by_failures, strict=True
    ):
        statuses = {response.status_code, after_failures.status_code}
        assert (429 in statuses) == ("429" in documented), (path, method, statuses)
        for limited_response in (response, after_failures):
            if limited_response.status_code == 429:
                assert int(limited_response.headers["retry-after"]) >= 1
                check_response(limited_response, path)


# -- the stream formats, against real streams ----------------------------------------------

STREAM_SECRET = "a-test-secret-of-at-least-32-bytes!!"


def _token(exp_in_s: float) -> dict[str, str]:
    claims = {"sub": "reader", "exp": int(time.time() + exp_in_s), "permissions": ["admin:topic:*", "admin:group:*"]}  # fmt: skip
    return {"Authorization": "Bearer " + jwt.encode(claims, STREAM_SECRET, algorithm="HS256")}


def _schema_validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({"components": openapi_document()["components"], "allOf": [schema]})


def _stream_items() -> dict[str, Draft202012Validator]:
    """Per media type, a validator of one item of the stream's 200 `contentSchema`."""
    content = openapi_document()["paths"]["/v1/topics/{topic}/events"]["get"]["responses"]["200"]
    return {
        media: _schema_validator(body["schema"]["contentSchema"]["items"])
        for media, body in content["content"].items()
    }


def check_sse_event(event: SseEvent) -> str | None:
    """Validate one SSE block as the spec's item (and its `data` as its `contentSchema`);
    returns the event name, None for blocks that are not events (comments)."""
    if event.retry is not None:
        item: dict[str, Any] = {"retry": event.retry}
    elif event.data:
        item = {"event": event.event, "data": event.data}
        if event.id is not None:
            item["id"] = event.id
    else:
        return None
    _stream_items()["text/event-stream"].validate(item)
    if "data" in item:
        spec = openapi_document()["components"]["schemas"]
        ref = spec["SseEvent"]["discriminator"]["mapping"][event.event]
        data_schema = spec[ref.rsplit("/", 1)[1]]["properties"]["data"]["contentSchema"]
        _schema_validator(data_schema).validate(orjson.loads(event.data))
        return event.event
    return "retry"


def check_ndjson_line(line: str) -> str:
    """Validate one non-blank NDJSON line; returns its `event`, or "record"."""
    item = orjson.loads(line)
    _stream_items()["application/x-ndjson"].validate(item)
    kind: str = item.get("event", "record")
    return kind


async def _kinds(response: httpx.Response) -> AsyncIterator[str]:
    """The kinds of a stream's events or lines, each checked against the spec as it comes."""
    if response.headers["content-type"].startswith("text/event-stream"):
        async for event in sse_events(response):
            kind = check_sse_event(event)
            if kind is not None:
                yield kind
    else:
        async for line in response.aiter_lines():
            if line:
                yield check_ndjson_line(line)


async def _until(kinds: AsyncIterator[str], last: str | None = None) -> list[str]:
    """Kinds up to and with `last`, or to the end of the stream."""
    seen = []
    async for kind in kinds:
        seen.append(kind)
        if kind == last:
            break
    return seen


async def test_every_kind_of_stream_event_matches_the_spec(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    """retry, record, gap, assignment, error and expired events of real SSE streams, and
    record, assignment, cursor, error and expired lines of NDJSON streams, match the schemas."""
    app = create_app(with_settings(settings, jwt_hs256_secret=STREAM_SECRET), backend)
    url, stop, task = await serve_app(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=_token(300)) as client:
            config = {"segment.bytes": 1024, "retention.bytes": 1024}
            created = await client.put("/v1/topics/r", json={"partitions": 1, "config": config})
            assert created.status_code == 201
            for _ in range(10):
                records = [{"key": "k", "value": "x" * 200, "headers": {"h": "v"}}] * 5
                produced = await client.post("/v1/topics/r/records", json={"records": records})
                assert produced.status_code == 200
            await backend.run_retention()
            gap = {"Last-Event-ID": encode_cursor({0: 0})}

            async def expiring(headers: dict[str, str], query: str) -> list[str]:
                # 2-3 s: the stream has started when its token expires
                async with client.stream(
                    "GET", f"/v1/topics/r/events?{query}", headers={**_token(3), **headers}
                ) as response:
                    assert response.status_code == 200
                    return await _until(_kinds(response))

            sse, ndjson = await asyncio.wait_for(
                asyncio.gather(
                    expiring({"accept": "text/event-stream", **gap}, ""),
                    expiring({"accept": "application/x-ndjson"}, "from=earliest"),
                ),
                15,
            )
            assert (sse[:2], "record" in sse, sse[-1]) == (["retry", "gap"], True, "expired")
            assert ("record" in ndjson, ndjson[-1]) == (True, "expired")

            both_reading = asyncio.Event()
            readers = 0

            async def deleted(accept: str) -> list[str]:
                nonlocal readers
                query = "group=g-" + accept.rsplit("/", 1)[1] + "&from=earliest"
                async with client.stream(
                    "GET", f"/v1/topics/r/events?{query}", headers={"accept": accept}
                ) as response:
                    kinds = _kinds(response)
                    first = await _until(kinds, "record")
                    readers += 1
                    if readers == 2:  # delete only once both streams are reading
                        assert (await client.delete("/v1/topics/r")).status_code == 204
                        both_reading.set()
                    await both_reading.wait()
                    return first + await _until(kinds)

            sse, ndjson = await asyncio.wait_for(
                asyncio.gather(deleted("text/event-stream"), deleted("application/x-ndjson")), 15
            )
            assert (sse[:3], sse[-1]) == (["retry", "assignment", "record"], "error")
            assert (ndjson[:3], ndjson[-1]) == (["assignment", "cursor", "record"], "error")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
