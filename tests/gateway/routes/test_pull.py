"""Pull: offsets, limits, 416 naming the log bounds, long-poll woken by produce or shutdown."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette

from gateway.app import begin_shutdown
from storage.embedded import EmbeddedBackend
from tests.gateway.conftest import check_response, problem_type

PULL = "/v1/topics/{topic}/partitions/{partition}/records"
URL = "/v1/topics/t/partitions/0/records"


@pytest.fixture
async def filled(client: httpx.AsyncClient) -> httpx.AsyncClient:
    assert (await client.put("/v1/topics/t", json={"partitions": 2})).status_code == 201
    records = [{"value": "v" * 10, "partition": 0} for _ in range(20)]
    assert (await client.post("/v1/topics/t/records", json={"records": records})).status_code == 200
    return client


async def test_reads_from_any_offset_with_limits(filled: httpx.AsyncClient) -> None:
    body = check_response(await filled.get(URL), PULL)  # default: the log start
    assert [r["offset"] for r in body["records"]] == list(range(20))
    assert body["next_offset"] == 20
    assert body["end_offset"] == 20

    body = check_response(await filled.get(URL, params={"offset": 5, "max_records": 3}), PULL)
    assert [r["offset"] for r in body["records"]] == [5, 6, 7]
    assert body["next_offset"] == 8
    assert body["end_offset"] == 20

    body = check_response(await filled.get(URL, params={"offset": 0, "max_bytes": 25}), PULL)
    assert 1 <= len(body["records"]) < 20

    body = check_response(await filled.get(URL, params={"offset": 20}), PULL)
    assert body == {"records": [], "next_offset": 20, "end_offset": 20}


async def test_offset_beyond_the_end_names_the_log_bounds(filled: httpx.AsyncClient) -> None:
    response = await filled.get(URL, params={"offset": 21})
    assert response.status_code == 416
    assert problem_type(response) == "offset-out-of-range"
    body = check_response(response, PULL)
    assert body["log_start_offset"] == 0
    assert body["end_offset"] == 20
    assert body["offset"] == 21


@pytest.mark.parametrize(
    ("path", "params", "slug"),
    [
        (URL, {"offset": "-1"}, "validation-error"),
        (URL, {"offset": "x"}, "validation-error"),
        (URL, {"offset": "1e3"}, "validation-error"),
        (URL, {"max_records": "0"}, "validation-error"),
        (URL, {"max_records": "10001"}, "validation-error"),
        (URL, {"max_bytes": "0"}, "validation-error"),
        (URL, {"wait_ms": "60001"}, "validation-error"),
        ("/v1/topics/t/partitions/2/records", {}, "unknown-partition"),
        ("/v1/topics/t/partitions/-1/records", {}, "unknown-partition"),
        ("/v1/topics/t/partitions/x/records", {}, "unknown-partition"),
        ("/v1/topics/nope/partitions/0/records", {}, "unknown-topic"),
        ("/v1/topics/%2E%2E/partitions/0/records", {}, "invalid-topic-name"),
    ],
)
async def test_bad_pulls(
    filled: httpx.AsyncClient, path: str, params: dict[str, str], slug: str
) -> None:
    response = await filled.get(path, params=params)
    assert problem_type(response) == slug
    check_response(response, PULL)


async def test_long_poll_wakes_when_a_record_arrives(filled: httpx.AsyncClient) -> None:
    poll = asyncio.create_task(filled.get(URL, params={"offset": 20, "wait_ms": 30_000}))
    await asyncio.sleep(0.05)
    assert not poll.done()
    await filled.post("/v1/topics/t/records", json={"records": [{"value": "new", "partition": 0}]})
    body = check_response(await asyncio.wait_for(poll, 10), PULL)
    assert [r["value"] for r in body["records"]] == ["new"]
    assert body["next_offset"] == 21


async def test_long_poll_times_out_empty(filled: httpx.AsyncClient) -> None:
    body = check_response(await filled.get(URL, params={"offset": 20, "wait_ms": 1}), PULL)
    assert body == {"records": [], "next_offset": 20, "end_offset": 20}


async def test_shutdown_ends_long_polls_at_once(app: Starlette, filled: httpx.AsyncClient) -> None:
    poll = asyncio.create_task(filled.get(URL, params={"offset": 20, "wait_ms": 60_000}))
    await asyncio.sleep(0.05)
    begin_shutdown(app)
    body = check_response(await asyncio.wait_for(poll, 10), PULL)
    assert body["records"] == []


async def test_offset_below_the_log_start_names_it(
    client: httpx.AsyncClient, backend: EmbeddedBackend
) -> None:
    config = {"segment.bytes": 1024, "retention.bytes": 1024}
    assert (
        await client.put("/v1/topics/r", json={"partitions": 1, "config": config})
    ).status_code == 201
    for _ in range(10):
        records = [{"value": "x" * 200} for _ in range(5)]
        assert (
            await client.post("/v1/topics/r/records", json={"records": records})
        ).status_code == 200
    await backend.run_retention()
    log_start = (await client.get("/v1/topics/r")).json()["partitions"][0]["log_start_offset"]
    assert log_start > 0
    response = await client.get("/v1/topics/r/partitions/0/records", params={"offset": 0})
    assert response.status_code == 416
    body = check_response(response, PULL)
    assert body["log_start_offset"] == log_start
    assert body["end_offset"] == 50
    # without an offset the read starts at the log start
    body = check_response(await client.get("/v1/topics/r/partitions/0/records"), PULL)
    assert body["records"][0]["offset"] == log_start
