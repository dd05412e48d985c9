"""Produce: round trips, placement, all-or-nothing on every bad input, NDJSON, idempotency."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.types import Message

from gateway.app import create_app
from gateway.produce.partitioner import partition_for_key
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from tests.gateway.conftest import (
    BASE_URL,
    check_response,
    end_offsets,
    problem_type,
    with_settings,
)

RECORDS = "/v1/topics/{topic}/records"
PULL = "/v1/topics/{topic}/partitions/{partition}/records"


async def _topic(client: httpx.AsyncClient, name: str = "t", partitions: int = 3) -> None:
    response = await client.put(f"/v1/topics/{name}", json={"partitions": partitions})
    assert response.status_code == 201


async def _pull_all(client: httpx.AsyncClient, topic: str, partition: int) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/topics/{topic}/partitions/{partition}/records?offset=0")
    body = check_response(response, PULL)
    records: list[dict[str, Any]] = body["records"]
    return records


async def test_values_keys_and_headers_round_trip(client: httpx.AsyncClient) -> None:
    await _topic(client, partitions=1)
    raw = bytes(range(256))
    sent: list[dict[str, Any]] = [
        {
            "value": {"nested": [1, 2.5, None, True, "ü\n"]},
            "key": "k1",
            "headers": {"h": "v", "ü": "ß"},
        },
        {"value": None},
        {"value": "text"},
        {"value_base64": base64.b64encode(raw).decode(), "key": ""},
        {"value": [], "key": None, "headers": {}},
    ]
    response = await client.post("/v1/topics/t/records", json={"records": sent})
    body = check_response(response, RECORDS)
    assert [o["offset"] for o in body["offsets"]] == [0, 1, 2, 3, 4]
    assert {o["partition"] for o in body["offsets"]} == {0}
    records = await _pull_all(client, "t", 0)
    for record, original, offset in zip(records, sent, body["offsets"], strict=True):
        assert record["topic"] == "t"
        assert record["offset"] == offset["offset"]
        assert record["timestamp"] == offset["timestamp"]
        assert record["key"] == original.get("key")
        assert record["headers"] == original.get("headers", {})
        if "value" in original:
            assert record["value"] == original["value"]
            assert "value_base64" not in record
        else:
            assert base64.b64decode(record["value_base64"]) == raw


async def test_keys_go_where_kafka_puts_them_and_explicit_partitions_win(
    client: httpx.AsyncClient,
) -> None:
    await _topic(client, partitions=5)
    keys = [f"user-{i}" for i in range(40)]
    records: list[dict[str, Any]] = [{"key": k, "value": k} for k in keys]
    records.append({"key": "user-0", "value": "pinned", "partition": 4})
    body = check_response(
        await client.post("/v1/topics/t/records", json={"records": records}), RECORDS
    )
    placed = [o["partition"] for o in body["offsets"]]
    assert placed[:-1] == [partition_for_key(k.encode(), 5) for k in keys]
    assert placed[-1] == 4
    # the Kafka vectors, for the key-to-partition rule the API promises
    assert partition_for_key(b"21", 2**31 - 1) == (-973932308 & 0x7FFFFFFF) % (2**31 - 1)


async def test_keyless_records_spread_evenly(client: httpx.AsyncClient) -> None:
    await _topic(client, partitions=3)
    body = (
        await client.post(
            "/v1/topics/t/records", json={"records": [{"value": i} for i in range(30)]}
        )
    ).json()
    assert Counter(o["partition"] for o in body["offsets"]) == {0: 10, 1: 10, 2: 10}
    # offsets are dense per partition, in request order within each partition
    for partition in range(3):
        offsets = [o["offset"] for o in body["offsets"] if o["partition"] == partition]
        assert offsets == list(range(10))
    assert await end_offsets(client, "t") == [10, 10, 10]


async def test_empty_batch_is_fine(client: httpx.AsyncClient) -> None:
    await _topic(client)
    assert check_response(
        await client.post("/v1/topics/t/records", json={"records": []}), RECORDS
    ) == {"offsets": []}


GOOD = {"value": 1}


@pytest.mark.parametrize(
    ("body", "content_type", "slug"),
    [
        (b'{"records": [', "application/json", "bad-json"),
        (b'{"records": [{"value": 1}]}', "text/plain", "unsupported-media-type"),
        (b'{"records": [{"value": 1}]}', "", "unsupported-media-type"),
        (
            orjson.dumps({"records": [GOOD, {"value_base64": "%%%"}]}),
            "application/json",
            "validation-error",
        ),
        (
            orjson.dumps({"records": [GOOD, {"value": 1, "value_base64": "AA=="}]}),
            "application/json",
            "validation-error",
        ),
        (orjson.dumps({"records": [GOOD, {}]}), "application/json", "validation-error"),
        (
            orjson.dumps({"records": [GOOD, {"value": 1, "key": 7}]}),
            "application/json",
            "validation-error",
        ),
        (
            orjson.dumps({"records": [GOOD, {"value": 1, "partition": -1}]}),
            "application/json",
            "validation-error",
        ),
        (
            orjson.dumps({"records": [GOOD, {"value": 1, "partition": 3}]}),
            "application/json",
            "unknown-partition",
        ),
        (
            orjson.dumps({"records": [GOOD, {"value": "x" * 2000}]}),
            "application/json",
            "record-too-large",
        ),
        (orjson.dumps({"records": [GOOD] * 11}), "application/json", "too-many-records"),
        (orjson.dumps({"records": [GOOD] * 500}), "application/json", "body-too-large"),
        (b'{"value": 1}\n{"value": 2', "application/x-ndjson", "bad-json"),
        (b'{"value": 1}\n[1]\n', "application/x-ndjson", "validation-error"),
        (
            b'{"value": 1}\n{"value": "' + b"x" * 9000 + b'"}\n',
            "application/x-ndjson",
            "record-too-large",
        ),
        (b'{"value": 1}\n' * 11, "application/x-ndjson", "too-many-records"),
    ],
)
async def test_bad_input_writes_nothing(
    settings: Settings, backend: EmbeddedBackend, body: bytes, content_type: str, slug: str
) -> None:
    limited = with_settings(
        settings, max_record_bytes=1024, max_records_per_request=10, max_body_bytes=4096
    )
    app = create_app(limited, backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        await _topic(client)
        await client.post("/v1/topics/t/records", json={"records": [GOOD] * 3})
        before = await end_offsets(client, "t")
        response = await client.post(
            "/v1/topics/t/records", content=body, headers={"content-type": content_type}
        )
        assert problem_type(response) == slug, response.text
        check_response(response, RECORDS)
        assert await end_offsets(client, "t") == before


async def _stream(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_bodies_over_the_cap_are_refused_while_streaming(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    """Without Content-Length the cap is counted as the body arrives (chunked uploads)."""
    limited = with_settings(settings, max_body_bytes=1000, max_ndjson_bytes=1000)
    app = create_app(limited, backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        await _topic(client)
        line = b'{"value": "' + b"y" * 80 + b'"}\n'
        for content_type, parts in [
            ("application/x-ndjson", [line] * 20),
            ("application/json", [b'{"records": [', *([line[:-1] + b","] * 20), b"{}]}"]),
        ]:
            response = await client.post(
                "/v1/topics/t/records",
                content=_stream(parts),
                headers={"content-type": content_type},
            )
            assert "content-length" not in response.request.headers
            assert problem_type(response) == "body-too-large"
        assert await end_offsets(client, "t") == [0, 0, 0]


async def test_declared_oversized_body_is_refused_before_reading(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(with_settings(settings, max_body_bytes=100), backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        await _topic(client)
        response = await client.post(
            "/v1/topics/t/records", json={"records": [{"value": "z" * 200}]}
        )
        assert response.status_code == 413
        assert problem_type(response) == "body-too-large"


async def test_unknown_topic_is_404_and_creates_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/topics/missing/records", json={"records": [GOOD]})
    assert problem_type(response) == "unknown-topic"
    assert (await client.get("/v1/topics")).json() == {"topics": []}


async def test_auto_create_only_for_valid_requests(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(
        with_settings(settings, auto_create_topics=True, default_partitions=2), backend
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        bad = await client.post("/v1/topics/auto/records", json={"records": [{"nope": 1}]})
        assert problem_type(bad) == "validation-error"
        assert (await client.get("/v1/topics")).json() == {"topics": []}
        good = await client.post("/v1/topics/auto/records", json={"records": [GOOD]})
        check_response(good, RECORDS)
        assert (await client.get("/v1/topics")).json() == {
            "topics": [{"name": "auto", "partitions": 2}]
        }


async def test_ndjson_streams_in_and_matches_json(client: httpx.AsyncClient) -> None:
    await _topic(client, partitions=2)
    lines = [orjson.dumps({"value": i, "key": f"k{i}"}) for i in range(200)]
    payload = b"\n".join(lines) + b"\n"
    parts = [payload[i : i + 37] for i in range(0, len(payload), 37)]  # split mid-line
    response = await client.post(
        "/v1/topics/t/records",
        content=_stream(parts),
        headers={"content-type": "application/x-ndjson"},
    )
    body = check_response(response, RECORDS)
    assert len(body["offsets"]) == 200
    assert [o["partition"] for o in body["offsets"]] == [
        partition_for_key(f"k{i}".encode(), 2) for i in range(200)
    ]
    values = sorted(
        r["value"] for r in [*await _pull_all(client, "t", 0), *await _pull_all(client, "t", 1)]
    )
    assert values == list(range(200))


async def test_disconnect_mid_upload_writes_nothing(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    await _topic(client)
    for content_type in ("application/json", "application/x-ndjson"):
        messages: list[Message] = [
            {"type": "http.request", "body": b'{"value": 1}\n{"records": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[Message] = []

        async def receive(messages: list[Message] = messages) -> Message:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Message, sent: list[Message] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/topics/t/records",
            "raw_path": b"/v1/topics/t/records",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", content_type.encode())],
            "server": ("test", 80),
            "client": ("test", 1),
        }
        await app(scope, receive, send)
        assert sent[0]["status"] == 400
        assert b"incomplete-body" in sent[1]["body"]
    assert await end_offsets(client, "t") == [0, 0, 0]


async def test_idempotency_key_replays_the_first_result(client: httpx.AsyncClient) -> None:
    await _topic(client)
    body = {"records": [{"value": i} for i in range(5)]}
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/v1/topics/t/records", json=body, headers=headers)
    assert first.status_code == 200
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/v1/topics/t/records", json=body, headers=headers)
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    check_response(again, RECORDS)
    assert sum(await end_offsets(client, "t")) == 5

    other = await client.post(
        "/v1/topics/t/records", json={"records": [{"value": 99}]}, headers=headers
    )
    assert problem_type(other) == "idempotency-key-reused"
    assert other.status_code == 422
    assert sum(await end_offsets(client, "t")) == 5

    bad_key = await client.post(
        "/v1/topics/t/records", json=body, headers={"Idempotency-Key": "a\tb"}
    )
    assert problem_type(bad_key) == "validation-error"


async def test_concurrent_retries_with_one_key_write_once(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    await _topic(client)
    body = {"records": [{"value": i} for i in range(10)]}
    responses = await asyncio.gather(
        *(
            client.post("/v1/topics/t/records", json=body, headers={"Idempotency-Key": "k"})
            for _ in range(8)
        )
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert sum(await end_offsets(client, "t")) == 10
    assert len(app.state.logway.idempotency_locks) == 0  # per-key locks do not pile up


async def test_failed_requests_are_not_remembered(client: httpx.AsyncClient) -> None:
    """A request that failed wrote nothing, so its retry is executed (here: after the topic exists)."""
    body = {"records": [GOOD]}
    headers = {"Idempotency-Key": "early"}
    assert (
        problem_type(await client.post("/v1/topics/t/records", json=body, headers=headers))
        == "unknown-topic"
    )
    await _topic(client)
    assert (
        await client.post("/v1/topics/t/records", json=body, headers=headers)
    ).status_code == 200
    assert sum(await end_offsets(client, "t")) == 1


async def test_an_endless_ndjson_upload_is_cut_at_the_cap(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    """The body is read as it arrives and refused once past max_ndjson_bytes: a client
    streaming "1 GB" is stopped after about the cap, and nothing is written."""
    app = create_app(with_settings(settings, max_ndjson_bytes=256 * 1024), backend)
    sent = 0
    line = orjson.dumps({"value": "z" * 1000}) + b"\n"

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1_000_000):  # ~1 GB if it were all read
            sent += len(line) * 16
            yield line * 16

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:
        await _topic(client)
        response = await client.post(
            "/v1/topics/t/records",
            content=endless(),
            headers={"content-type": "application/x-ndjson"},
        )
        assert problem_type(response) == "body-too-large"
        assert sent < 2 * 256 * 1024
        assert await end_offsets(client, "t") == [0, 0, 0]
