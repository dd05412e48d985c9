"""Topics: create (idempotent / conflict), describe, list, delete, and hostile names."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message

from tests.gateway.conftest import check_response, problem_type

TOPIC = "/v1/topics/{topic}"


async def test_create_is_idempotent_and_conflicts_on_other_settings(
    client: httpx.AsyncClient,
) -> None:
    spec = {"partitions": 2, "config": {"retention.ms": -1, "segment.bytes": 4096}}
    created = await client.put("/v1/topics/orders", json=spec)
    assert created.status_code == 201
    body = check_response(created, TOPIC)
    assert body["name"] == "orders"
    assert [p["partition"] for p in body["partitions"]] == [0, 1]
    assert body["config"]["retention.ms"] == -1
    assert body["config"]["retention.bytes"] == -1
    assert body["config"]["segment.bytes"] == 4096

    again = await client.put("/v1/topics/orders", json=spec)
    assert again.status_code == 200
    assert check_response(again, TOPIC) == body

    other = await client.put("/v1/topics/orders", json={"partitions": 3})
    assert other.status_code == 409
    assert problem_type(other) == "topic-exists"
    check_response(other, TOPIC)


async def test_defaults_describe_list_delete(client: httpx.AsyncClient) -> None:
    assert (await client.put("/v1/topics/b")).status_code == 201
    assert (await client.put("/v1/topics/a.b-c_D", json={"partitions": 1})).status_code == 201
    listed = await client.get("/v1/topics")
    assert check_response(listed, "/v1/topics") == {
        "topics": [{"name": "a.b-c_D", "partitions": 1}, {"name": "b", "partitions": 3}]
    }
    described = check_response(await client.get("/v1/topics/b"), TOPIC)
    assert described["partitions"][2] == {
        "partition": 2,
        "log_start_offset": 0,
        "end_offset": 0,
        "bytes": described["partitions"][2]["bytes"],
    }
    assert described["config"]["retention.ms"] == 7 * 24 * 3600 * 1000

    deleted = await client.delete("/v1/topics/b")
    assert deleted.status_code == 204
    check_response(deleted, TOPIC)
    gone = await client.get("/v1/topics/b")
    assert problem_type(gone) == "unknown-topic"
    assert problem_type(await client.delete("/v1/topics/b")) == "unknown-topic"


@pytest.mark.parametrize(
    ("raw_path", "slug"),
    [
        (b"/v1/topics/%2E%2E", "invalid-topic-name"),
        (b"/v1/topics/%2E", "invalid-topic-name"),
        (b"/v1/topics/..%2Fx", "not-found"),
        (b"/v1/topics/%2E%2E%2Fetc", "not-found"),
        (b"/v1/topics/a%00b", "invalid-topic-name"),
        (b"/v1/topics/caf%C3%A9", "invalid-topic-name"),
        (b"/v1/topics/a%20b", "invalid-topic-name"),
        (b"/v1/topics/" + b"x" * 250, "invalid-topic-name"),
    ],
)
async def test_hostile_names_create_nothing(
    client: httpx.AsyncClient, raw_path: bytes, slug: str
) -> None:
    for method in ("PUT", "GET", "DELETE"):
        request = client.build_request(method, "http://logway.test/")
        request.url = request.url.copy_with(raw_path=raw_path)
        response = await client.send(request)
        assert problem_type(response) == slug, (method, raw_path, response.text)
        assert response.status_code in (400, 404)
    listed = await client.get("/v1/topics")
    assert listed.json() == {"topics": []}


@pytest.mark.parametrize("name", [".", ".."])
async def test_dot_names_reaching_the_app_unnormalised_are_refused(
    app: Starlette, client: httpx.AsyncClient, name: str
) -> None:
    """Clients normalise /./ and /../ away; a raw request that keeps them is still refused."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": f"/v1/topics/{name}",
        "raw_path": f"/v1/topics/{name}".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
        "client": ("test", 1),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"invalid-topic-name" in sent[1]["body"]
    assert (await client.get("/v1/topics")).json() == {"topics": []}


@pytest.mark.parametrize(
    ("body", "content_type", "slug"),
    [
        (b"{", "application/json", "bad-json"),
        (b"[1]", "application/json", "validation-error"),
        (b'{"partitions": 0}', "application/json", "validation-error"),
        (b'{"partitions": 10001}', "application/json", "validation-error"),
        (b'{"partitions": "2"}', "application/json", "validation-error"),
        (b'{"partitions": true}', "application/json", "validation-error"),
        (b'{"partition": 2}', "application/json", "validation-error"),
        (b'{"config": {"retention.msec": 5}}', "application/json", "validation-error"),
        (b'{"config": {"retention.ms": 0}}', "application/json", "validation-error"),
        (b'{"config": {"retention.ms": -2}}', "application/json", "validation-error"),
        (b'{"config": {"segment.bytes": 10}}', "application/json", "validation-error"),
        (b'{"config": {"segment.ms": -1}}', "application/json", "validation-error"),
        (
            b'{"config": {"retention.bytes": 9223372036854775808}}',
            "application/json",
            "validation-error",
        ),
        (
            b'{"config": {"segment.ms": 18446744073709551616}}',
            "application/json",
            "validation-error",
        ),
        (b'{"config": []}', "application/json", "validation-error"),
        (b'{"partitions": 2}', "text/plain", "unsupported-media-type"),
        (b"x" * 70_000, "application/json", "body-too-large"),
    ],
)
async def test_bad_create_bodies(
    client: httpx.AsyncClient, body: bytes, content_type: str, slug: str
) -> None:
    response = await client.put(
        "/v1/topics/t", content=body, headers={"content-type": content_type}
    )
    assert problem_type(response) == slug
    check_response(response, TOPIC)
    assert problem_type(await client.get("/v1/topics/t")) == "unknown-topic"
