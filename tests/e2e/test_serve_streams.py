"""SSE from a real `logway serve`: raw parsing, resume by Last-Event-ID, many streams on one h2 connection."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway, SseEvent, sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SSE_HEADERS = {"Accept": "text/event-stream"}
READ_TIMEOUT_S = 30.0  # only a guard against hanging; no test asserts a duration


async def _create_topic(client: httpx.AsyncClient, topic: str, partitions: int) -> None:
    response = await client.put(f"/v1/topics/{topic}", json={"partitions": partitions})
    assert response.status_code == 201, response.text


async def _produce(client: httpx.AsyncClient, topic: str, records: list[dict[str, Any]]) -> None:
    response = await client.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert response.status_code == 200, response.text


async def _read_records(response: httpx.Response, count: int) -> list[SseEvent]:
    """The first `count` record events of a stream (other events are skipped)."""
    records: list[SseEvent] = []
    async with asyncio.timeout(READ_TIMEOUT_S):
        async for event in sse_events(response):
            if event.event == "record":
                records.append(event)
                if len(records) == count:
                    break
    return records


def _key(event: SseEvent) -> tuple[int, int]:
    record = event.json()
    return record["partition"], record["offset"]


async def test_sse_resumes_with_last_event_id_across_partitions(gateway: Gateway) -> None:
    def batch(start: int) -> list[dict[str, Any]]:
        return [{"value": {"i": i}, "partition": i % 3} for i in range(start, start + 30)]

    async with httpx.AsyncClient(base_url=gateway.url, timeout=READ_TIMEOUT_S) as client:
        await _create_topic(client, "resume", 3)
        await _produce(client, "resume", batch(0))

        url = "/v1/topics/resume/events?from=earliest"
        async with client.stream("GET", url, headers=SSE_HEADERS) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            first = await _read_records(response, 12)
        cursor = first[-1].id
        assert cursor

        await _produce(client, "resume", batch(30))
        headers = {**SSE_HEADERS, "Last-Event-ID": cursor}
        async with client.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            rest = await _read_records(response, 60 - 12)

    seen = [_key(event) for event in first + rest]
    assert len(seen) == len(set(seen)), "a record was delivered twice"
    expected = {(p, o) for p in range(3) for o in range(20)}
    assert set(seen) == expected, "a record was lost"
    values = {_key(event): event.json()["value"]["i"] for event in first + rest}
    assert all(values[(i % 3, i // 3)] == i for i in range(60))
    for partition in range(3):  # each partition in offset order within the stream
        offsets = [o for p, o in seen if p == partition]
        assert offsets == sorted(offsets)


async def test_100_sse_streams_share_one_http2_connection(gateway: Gateway) -> None:
    streams = 100
    async with httpx.AsyncClient(
        base_url=gateway.url,
        http1=False,
        http2=True,  # cleartext: prior knowledge
        limits=httpx.Limits(max_connections=1),
        timeout=READ_TIMEOUT_S,
    ) as client, contextlib.AsyncExitStack() as stack:  # fmt: skip
        await _create_topic(client, "fanout", 1)
        url = "/v1/topics/fanout/events?from=earliest"
        responses = await asyncio.gather(
            *(
                stack.enter_async_context(client.stream("GET", url, headers=SSE_HEADERS))
                for _ in range(streams)
            )
        )
        assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r in responses)
        connections = {id(r.extensions["network_stream"]) for r in responses}
        assert len(connections) == 1, f"{len(connections)} connections for {streams} streams"

        # httpcore caps a connection at 100 concurrent streams: produce over another one.
        async with httpx.AsyncClient(base_url=gateway.url, timeout=READ_TIMEOUT_S) as producer:
            await _produce(producer, "fanout", [{"value": {"i": i}} for i in range(10)])
        received = await asyncio.gather(*(_read_records(r, 10) for r in responses))
    for events in received:
        assert [event.json()["value"]["i"] for event in events] == list(range(10))
