"""Streams over a real Hypercorn on loopback: SSE and NDJSON, cursors and resume, gaps,
topic deletion, shutdown, and the reassignment seam consumer groups drive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from gateway.app import begin_shutdown, create_app
from gateway.settings import Settings
from gateway.streams.cursor import decode_cursor, encode_cursor
from gateway.streams.formats import ChunkCache, ndjson_chunks, sse_chunks
from gateway.streams.log_stream import LogStream, Reassigned, RecordBatch
from storage.embedded import EmbeddedBackend
from tests.gateway.conftest import (
    SseEvent,
    _validator,
    assert_told_to_retry,
    check_response,
    problem_type,
    serve_app,
    sse_events,
    with_settings,
)

EVENTS = "/v1/topics/{topic}/events"
SSE = {"accept": "text/event-stream"}
NDJSON = {"accept": "application/x-ndjson"}


def record_validator() -> Any:
    return _validator(
        "/v1/topics/{topic}/partitions/{partition}/records", "GET", 200, "application/json"
    )


def check_record(data: str) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(data)
    record_validator().validate({"records": [record], "next_offset": 0, "end_offset": 0})
    return record


async def produce(
    client: httpx.AsyncClient, topic: str, records: list[dict[str, Any]]
) -> list[dict[str, int]]:
    response = await client.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert response.status_code == 200, response.text
    offsets: list[dict[str, int]] = response.json()["offsets"]
    return offsets


async def take(events: AsyncIterator[SseEvent], count: int, kind: str = "record") -> list[SseEvent]:
    """The next `count` events of `kind` (others are skipped); bounded so a bug fails, not hangs."""

    async def run() -> list[SseEvent]:
        got: list[SseEvent] = []
        async for event in events:
            if event.event == kind:
                got.append(event)
                if len(got) == count:
                    break
        return got

    return await asyncio.wait_for(run(), 10)


async def test_sse_from_earliest(live: httpx.AsyncClient) -> None:
    assert (await live.put("/v1/topics/t", json={"partitions": 2})).status_code == 201
    await produce(live, "t", [{"value": i, "partition": i % 2, "key": str(i)} for i in range(6)])
    async with live.stream(
        "GET", "/v1/topics/t/events", params={"from": "earliest"}, headers=SSE
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert (
            "connection" not in response.headers or response.headers["connection"] == "keep-alive"
        )
        events = sse_events(response)
        first = await anext(events)
        assert first.retry == 2000
        records = await take(events, 6)
    seen: dict[int, int] = {0: 0, 1: 0}
    for event in records:
        record = check_record(event.data)
        assert record["offset"] == seen[record["partition"]]
        seen[record["partition"]] += 1
        assert event.id is not None
        assert decode_cursor(event.id) == seen  # the next offset of every partition
    assert seen == {0: 3, 1: 3}


async def test_resume_with_last_event_id_across_partitions(live: httpx.AsyncClient) -> None:
    """Disconnect mid-stream, produce more, reconnect with Last-Event-ID: every record exactly once."""
    assert (await live.put("/v1/topics/t", json={"partitions": 3})).status_code == 201
    await produce(live, "t", [{"value": i, "key": f"k{i}"} for i in range(30)])
    url = "/v1/topics/t/events?from=earliest"
    received: list[tuple[int, int]] = []
    async with live.stream("GET", url, headers=SSE) as response:
        first = await take(sse_events(response), 13)
    received += [(r["partition"], r["offset"]) for r in (orjson.loads(e.data) for e in first)]
    last_id = first[-1].id
    assert last_id is not None
    await produce(live, "t", [{"value": i, "key": f"k{i}"} for i in range(30, 60)])
    # same URL (from=earliest) as EventSource would use: the cursor must win
    async with live.stream("GET", url, headers={**SSE, "Last-Event-ID": last_id}) as response:
        rest = await take(sse_events(response), 47)
    received += [(r["partition"], r["offset"]) for r in (orjson.loads(e.data) for e in rest)]
    assert len(received) == len(set(received)) == 60
    ends = [p["end_offset"] for p in (await live.get("/v1/topics/t")).json()["partitions"]]
    assert set(received) == {(p, o) for p in range(3) for o in range(ends[p])}
    assert decode_cursor(rest[-1].id or "") == dict(enumerate(ends))


async def test_cursor_parameter_and_header_precedence(live: httpx.AsyncClient) -> None:
    assert (await live.put("/v1/topics/t", json={"partitions": 1})).status_code == 201
    await produce(live, "t", [{"value": i} for i in range(10)])
    at_4, at_7 = encode_cursor({0: 4}), encode_cursor({0: 7})
    async with live.stream("GET", f"/v1/topics/t/events?cursor={at_4}", headers=SSE) as response:
        [event] = await take(sse_events(response), 1)
        assert orjson.loads(event.data)["offset"] == 4
    headers = {**SSE, "Last-Event-ID": at_7}
    async with live.stream(
        "GET", f"/v1/topics/t/events?cursor={at_4}", headers=headers
    ) as response:
        [event] = await take(sse_events(response), 1)
        assert orjson.loads(event.data)["offset"] == 7


async def test_latest_timestamp_and_partition_subset(live: httpx.AsyncClient) -> None:
    assert (await live.put("/v1/topics/t", json={"partitions": 3})).status_code == 201
    await produce(live, "t", [{"value": "old", "partition": p} for p in range(3)])
    async with live.stream("GET", "/v1/topics/t/events", headers=SSE) as response:  # default latest
        events = sse_events(response)
        await anext(events)  # retry: the stream is open, its positions are set
        await produce(live, "t", [{"value": "new", "partition": 1}])
        [event] = await take(events, 1)
        assert orjson.loads(event.data)["value"] == "new"

    later = await produce(live, "t", [{"value": "later", "partition": p} for p in range(3)])
    since = later[0]["timestamp"]
    pulled = [
        r
        for p in range(3)
        for r in (await live.get(f"/v1/topics/t/partitions/{p}/records")).json()["records"]
        if r["timestamp"] >= since and p in (0, 2)
    ]
    url = f"/v1/topics/t/events?from={since}&partitions=2,0"
    async with live.stream("GET", url, headers=SSE) as response:
        got = [orjson.loads(e.data) for e in await take(sse_events(response), len(pulled))]
    assert sorted((r["partition"], r["offset"]) for r in got) == sorted(
        (r["partition"], r["offset"]) for r in pulled
    )
    assert decode_cursor(encode_cursor({0: 1, 2: 1})).keys() == {0, 2}


async def test_ndjson_stream_and_heartbeat(settings: Settings, backend: EmbeddedBackend) -> None:
    app = create_app(with_settings(settings, heartbeat_s=0.05), backend)
    url, stop, task = await serve_app(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.put("/v1/topics/t", json={"partitions": 2})).status_code == 201
            await produce(client, "t", [{"value": {"n": i}} for i in range(4)])
            async with client.stream(
                "GET", "/v1/topics/t/events?from=earliest", headers=NDJSON
            ) as response:
                assert response.headers["content-type"] == "application/x-ndjson"
                assert response.headers["cache-control"] == "no-cache"
                lines: list[str] = []

                async def read() -> None:
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if line == "" and len([x for x in lines if x]) == 4:
                            return

                await asyncio.wait_for(read(), 10)
            records = [check_record(line) for line in lines if line]
            assert sorted(r["value"]["n"] for r in records) == [0, 1, 2, 3]
            assert lines[-1] == ""  # the heartbeat
            async with client.stream("GET", "/v1/topics/t/events", headers=SSE) as response:

                async def first_comment() -> list[str]:
                    async for event in sse_events(response):
                        if event.comments:
                            return event.comments
                    return []

                comments = await asyncio.wait_for(first_comment(), 10)
                assert comments[0].startswith("ping")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_deleted_topic_ends_the_stream_with_an_error_event(live: httpx.AsyncClient) -> None:
    assert (await live.put("/v1/topics/t", json={"partitions": 2})).status_code == 201
    async with live.stream("GET", "/v1/topics/t/events", headers=SSE) as response:
        events = sse_events(response)
        await anext(events)
        assert (await live.delete("/v1/topics/t")).status_code == 204
        rest = [e async for e in events]  # the response ends
    errors = [e for e in rest if e.event == "error"]
    assert len(errors) == 1
    problem = orjson.loads(errors[0].data)
    assert problem["type"] == "https://logway.dev/problems/unknown-topic"


async def test_retention_gap_is_announced_and_the_stream_continues(
    live: httpx.AsyncClient, backend: EmbeddedBackend
) -> None:
    config = {"segment.bytes": 1024, "retention.bytes": 1024}
    assert (
        await live.put("/v1/topics/r", json={"partitions": 1, "config": config})
    ).status_code == 201
    for _ in range(10):
        await produce(live, "r", [{"value": "x" * 200} for _ in range(5)])
    await backend.run_retention()
    log_start = (await live.get("/v1/topics/r")).json()["partitions"][0]["log_start_offset"]
    assert log_start > 0
    headers = {**SSE, "Last-Event-ID": encode_cursor({0: 0})}
    async with live.stream("GET", "/v1/topics/r/events", headers=headers) as response:
        events = sse_events(response)
        [gap] = await take(events, 1, kind="gap")
        assert orjson.loads(gap.data) == {"partition": 0, "from_offset": 0, "to_offset": log_start}
        assert decode_cursor(gap.id or "") == {0: log_start}
        [event] = await take(events, 1)
        assert orjson.loads(event.data)["offset"] == log_start


async def test_begin_shutdown_ends_open_streams_cleanly(
    app: Starlette, live: httpx.AsyncClient
) -> None:
    assert (await live.put("/v1/topics/t", json={"partitions": 1})).status_code == 201
    async with (
        live.stream("GET", "/v1/topics/t/events", headers=SSE) as sse,
        live.stream("GET", "/v1/topics/t/events", headers=NDJSON) as ndjson,
    ):
        events = sse_events(sse)
        await anext(events)
        begin_shutdown(app)
        rest = await asyncio.wait_for(_drain(events), 10)
        assert any("reconnect" in c for e in rest for c in e.comments)
        assert await asyncio.wait_for(ndjson.aread(), 10) == b""
    await _assert_refused_until_later(live, "shutting-down")


async def _assert_refused_until_later(client: httpx.AsyncClient, slug: str) -> None:
    """A stream that cannot be served now: an SSE client (Accept names text/event-stream, as
    EventSource's does) gets a 200 stream with a comment and `retry:`, which EventSource
    retries; NDJSON, no Accept and other routes get the 503 problem."""
    for accept in ("text/event-stream", "text/event-stream, */*;q=0.1"):
        retry = await client.get("/v1/topics/t/events", headers={"accept": accept})
        assert_told_to_retry(retry, slug)
    for headers in (NDJSON, {"accept": "application/x-ndjson, text/event-stream;q=0.5"}, {}):
        refused = await client.get("/v1/topics/t/events", headers=headers)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert problem_type(refused) == slug
    ready = await client.get("/readyz", headers=SSE)
    assert ready.status_code == 503
    assert problem_type(ready) == slug


async def test_streams_asked_for_while_starting_are_told_to_retry(settings: Settings) -> None:
    """Before the lifespan has opened the backend (a server that accepts early)."""
    starting = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(starting), base_url="http://test"
    ) as client:
        await _assert_refused_until_later(client, "storage-unavailable")


async def _drain(events: AsyncIterator[SseEvent]) -> list[SseEvent]:
    return [e async for e in events]


@pytest.mark.parametrize(
    ("query", "headers", "slug"),
    [
        ("", {"accept": "application/json"}, "not-acceptable"),
        ("", {"accept": "text/event-stream;q=0, text/html"}, "not-acceptable"),
        ("?cursor=garbage", SSE, "bad-cursor"),
        ("", {**SSE, "Last-Event-ID": "1.AAEAALUs"}, "bad-cursor"),
        (f"?partitions=0&cursor={encode_cursor({1: 0})}", SSE, "bad-cursor"),
        (f"?cursor={encode_cursor({0: 99})}", SSE, "offset-out-of-range"),
        ("?from=yesterday", SSE, "validation-error"),
        ("?partitions=0,x", SSE, "validation-error"),
        ("?partitions=", SSE, "validation-error"),
        ("?partitions=5", SSE, "unknown-partition"),
    ],
)
async def test_bad_stream_requests(
    client: httpx.AsyncClient, query: str, headers: dict[str, str], slug: str
) -> None:
    assert (await client.put("/v1/topics/t", json={"partitions": 2})).status_code == 201
    response = await client.get(f"/v1/topics/t/events{query}", headers=headers)
    assert problem_type(response) == slug, response.text
    check_response(response, EVENTS)


async def test_unknown_topic_stream_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/topics/nope/events", headers=SSE)
    assert problem_type(response) == "unknown-topic"


async def test_reassign_replaces_partitions_mid_stream(
    client: httpx.AsyncClient, backend: EmbeddedBackend
) -> None:
    """The seam consumer groups use: new positions take effect at once and are announced."""
    assert (await client.put("/v1/topics/t", json={"partitions": 3})).status_code == 201
    await produce(client, "t", [{"value": p, "partition": p} for p in range(3) for _ in range(2)])
    stream = LogStream(backend, "t", {0: 0})
    chunks = sse_chunks(stream, 1000)
    assert await anext(chunks) == b"retry: 1000\n\n"
    first = await anext(chunks)
    assert first.count(b"event: record") == 2
    stream.reassign({1: 1, 2: 0}, {"member_id": "m", "generation": 2, "partitions": [1, 2]})
    announced = await anext(chunks)
    assert announced.split(b"\n")[:2] == [
        b"id: " + encode_cursor({1: 1, 2: 0}).encode(),
        b"event: assignment",
    ]
    assert b'"generation":2' in announced
    after = [await anext(chunks), await anext(chunks)]
    partitions = [
        orjson.loads(line[6:])["partition"]
        for c in after
        for line in c.split(b"\n")
        if line.startswith(b"data: ")
    ]
    assert sorted(partitions) == [1, 2, 2]
    stream.close()
    assert (await anext(chunks)).startswith(b": stream closed")
    await chunks.aclose()

    emptied = LogStream(backend, "t", {0: 0})
    emptied_chunks = sse_chunks(emptied, 1000)
    await anext(emptied_chunks)
    await anext(emptied_chunks)
    emptied.reassign({}, {"member_id": "m", "generation": 3, "partitions": []})
    # an empty id field resets EventSource's last event id
    assert (await anext(emptied_chunks)).startswith(b"id: \nevent: assignment\ndata: ")
    await emptied_chunks.aclose()

    events = LogStream(backend, "t", {0: 0})
    gen = events.events()
    assert isinstance(await anext(gen), RecordBatch)
    events.reassign({}, {"member_id": "m", "generation": 3, "partitions": []})
    assignment = await anext(gen)
    assert isinstance(assignment, Reassigned)
    assert assignment.positions == {}
    waiting = asyncio.create_task(anext(gen))  # an empty assignment parks until reassigned
    await asyncio.sleep(0.01)
    events.reassign({2: 1}, {"member_id": "m", "generation": 4, "partitions": [2]})
    assert isinstance(await asyncio.wait_for(waiting, 10), Reassigned)
    batch = await anext(gen)
    assert isinstance(batch, RecordBatch)
    assert (batch.partition, [r.offset for r in batch.records]) == (2, [1])
    await gen.aclose()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for a state the server reaches on its own; bounded so a bug fails, not hangs."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_gone_and_stalled_clients_are_released(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(with_settings(settings, stream_send_timeout_s=0.2), backend)
    registry = app.state.logway.streams
    url, stop, task = await serve_app(app)
    host, port = url.removeprefix("http://").split(":")
    request = b"GET /v1/topics/t/events?from=earliest HTTP/1.1\r\nHost: x\r\nAccept: %s\r\n\r\n"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.put("/v1/topics/t", json={"partitions": 1})).status_code == 201
            # a client that goes away: its stream is released
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request % b"text/event-stream")
            await reader.readuntil(b"retry: ")
            assert len(registry) == 1
            writer.close()
            await writer.wait_closed()
            await _until(lambda: len(registry) == 0)

            # a client that stops reading while the stream has far more to send than socket
            # buffers hold: dropped after stream_send_timeout_s, holding one batch meanwhile
            big = [{"value_base64": "A" * 40_000} for _ in range(50)]
            for _ in range(10):
                await produce(client, "t", big)
            stalled = []
            for accept in (b"text/event-stream", b"application/x-ndjson"):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(request % accept)
                await reader.read(1)
                stalled.append(writer)
            await _until(lambda: len(registry) == 0)
            for writer in stalled:
                writer.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_many_streams_over_one_h2c_connection(live_url: str) -> None:
    """HTTP/2 forbids connection-specific headers; the stream responses carry none."""
    async with httpx.AsyncClient(base_url=live_url, http1=False, http2=True, timeout=10) as client:
        assert (await client.put("/v1/topics/t", json={"partitions": 2})).status_code == 201
        await produce(client, "t", [{"value": i} for i in range(4)])

        async def one(accept: dict[str, str]) -> int:
            async with client.stream(
                "GET", "/v1/topics/t/events?from=earliest", headers=accept
            ) as response:
                assert response.http_version == "HTTP/2"
                if accept is NDJSON:
                    lines = response.aiter_lines()
                    return len([await anext(lines) for _ in range(4)])
                return len(await take(sse_events(response), 4))

        counts = await asyncio.gather(*(one(SSE if i % 2 else NDJSON) for i in range(20)))
        assert counts == [4] * 20


async def test_streams_at_the_same_positions_share_rendered_batches(
    app: Starlette, client: httpx.AsyncClient, backend: EmbeddedBackend
) -> None:
    """Fan-out renders a batch once; a recreated topic never gets the old topic's bytes."""
    cache = app.state.logway.chunks
    assert (await client.put("/v1/topics/t", json={"partitions": 2})).status_code == 201
    await produce(client, "t", [{"value": "old", "partition": 0}] * 3)

    async def first_batch(format: str) -> bytes:
        stream = LogStream(backend, "t", {0: 0, 1: 0})
        chunks = (
            sse_chunks(stream, 1000, cache) if format == "sse" else ndjson_chunks(stream, 15, cache)
        )
        try:
            if format == "sse":
                await anext(chunks)  # retry:
            return await anext(chunks)
        finally:
            await chunks.aclose()

    for format in ("sse", "ndjson"):
        one, two = await first_batch(format), await first_batch(format)
        assert one == two
        assert one.count(b'"value":"old"') == 3
    entries = cache.size_bytes
    assert entries > 0
    await first_batch("sse")
    assert cache.size_bytes == entries  # a hit adds nothing

    assert (await client.delete("/v1/topics/t")).status_code == 204
    assert (await client.put("/v1/topics/t", json={"partitions": 2})).status_code == 201
    await produce(client, "t", [{"value": "new", "partition": 0}] * 3)
    for format in ("sse", "ndjson"):
        batch = await first_batch(format)
        assert batch.count(b'"value":"new"') == 3
        assert b"old" not in batch


def test_chunk_cache_is_bounded_by_bytes() -> None:
    cache = ChunkCache(max_bytes=1000)
    for i in range(100):
        cache.put(("k", i), b"x" * 100)
    assert cache.size_bytes <= 1000
    assert cache.get(("k", 99)) == b"x" * 100
    assert cache.get(("k", 0)) is None
    cache.put(("big",), b"y" * 600)  # larger than a quarter of the bound: not cached
    assert cache.get(("big",)) is None
