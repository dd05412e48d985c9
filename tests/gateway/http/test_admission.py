"""The produce byte budget (gateway/http/admission.py): a produce request that does not fit
beside the ones in flight is a 503 produce-capacity with Retry-After and writes nothing;
one alone always fits; the bytes come back when a request is answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.http.admission import ByteBudget
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from storage.types import TopicConfig
from tests.gateway.conftest import BASE_URL

BUDGET_BYTES = 1000
PROBLEM = "application/problem+json"
JSON_TYPE = {"content-type": "application/json"}


def _body(records: int, value_bytes: int = 50) -> bytes:
    return orjson.dumps({"records": [{"value": "v" * value_bytes} for _ in range(records)]})


async def _held(body: bytes, release: asyncio.Event, first_bytes: int) -> AsyncIterator[bytes]:
    """A body that sends `first_bytes`, then waits for `release` before the rest."""
    yield body[:first_bytes]
    await release.wait()
    yield body[first_bytes:]


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def test_budget_refuses_what_does_not_fit_unless_the_taker_is_alone() -> None:
    budget = ByteBudget(100)
    assert budget.try_take(60)
    assert not budget.try_take(50)
    assert budget.try_take(40)
    budget.give_back(100)
    assert budget.try_take(500)  # alone: admitted whatever its size
    assert not budget.try_take(1, held=0)
    assert budget.try_take(1, held=500)  # the same taker, still alone
    budget.give_back(501)
    assert budget.in_use_bytes == 0
    with pytest.raises(ValueError, match="at least one byte"):
        ByteBudget(0)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_produce_beyond_the_budget_is_a_503_that_writes_nothing(
    settings: Settings, backend: EmbeddedBackend, declared: bool
) -> None:
    await backend.create_topic("t", 1, TopicConfig())
    app = create_app(replace(settings, max_inflight_produce_bytes=BUDGET_BYTES), backend)
    first_body, second_body = _body(10), _body(8)
    assert len(first_body) < BUDGET_BYTES < len(first_body) + len(second_body)
    release = asyncio.Event()
    url = "/v1/topics/t/records"
    json_type = {"content-type": "application/json"}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        if declared:
            headers = {**json_type, "content-length": str(len(first_body))}
            held = _held(first_body, release, len(first_body) - 5)
        else:  # no length: the bytes count as they arrive, the first chunk takes 600 of them
            headers = json_type
            held = _held(first_body, release, 600)
        first = asyncio.create_task(client.post(url, content=held, headers=headers))
        for _ in range(100):  # until the first request is admitted and reading
            await asyncio.sleep(0)
        second: bytes | AsyncIterator[bytes] = second_body
        if not declared:
            second = _chunks(second_body[:300], second_body[300:])
        refused = await client.post(url, content=second, headers=json_type)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == PROBLEM
        assert refused.headers["retry-after"] == "1"
        problem = refused.json()
        assert problem["type"] == "https://logway.dev/problems/produce-capacity"
        assert problem["max_inflight_produce_bytes"] == BUDGET_BYTES
        assert (await backend.partition_info("t", 0)).end_offset == 0  # nothing written
        release.set()
        assert (await first).status_code == 200
        # the first request's bytes came back: the same request fits now
        again = await client.post(url, content=second_body, headers=json_type)
        assert again.status_code == 200
    assert (await backend.partition_info("t", 0)).end_offset == 18


async def test_a_body_larger_than_the_budget_passes_alone(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    await backend.create_topic("t", 1, TopicConfig())
    app = create_app(replace(settings, max_inflight_produce_bytes=100), backend)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        for _ in range(2):  # and gives its bytes back each time
            response = await client.post(
                "/v1/topics/t/records", content=_body(20), headers=JSON_TYPE
            )
            assert response.status_code == 200
    assert (await backend.partition_info("t", 0)).end_offset == 40


async def test_oversized_bodies_get_their_413_and_reads_pass_while_the_budget_is_full(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    await backend.create_topic("t", 1, TopicConfig())
    tight = replace(
        settings, max_inflight_produce_bytes=1000, max_body_bytes=2000, max_ndjson_bytes=2000
    )
    app = create_app(tight, backend)
    body = _body(10)
    release = asyncio.Event()
    url = "/v1/topics/t/records"
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        headers = {**JSON_TYPE, "content-length": str(len(body))}
        first = asyncio.create_task(
            client.post(url, content=_held(body, release, 10), headers=headers)
        )
        for _ in range(100):
            await asyncio.sleep(0)
        too_large = await client.post(url, content=_body(40), headers=JSON_TYPE)
        assert too_large.status_code == 413
        assert too_large.json()["type"] == "https://logway.dev/problems/body-too-large"
        assert (await client.get("/v1/topics/t")).status_code == 200
        assert (await client.post(url, content=body, headers=JSON_TYPE)).status_code == 503
        release.set()
        assert (await first).status_code == 200
