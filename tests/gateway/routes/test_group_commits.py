"""commit=auto commits only what a client has shown it received: cursors it reconnects
with (and the rules that keep a stale one from moving the group), and nothing unproven at
a disconnect or a shutdown. The app is served by Hypercorn on 127.0.0.1 (real SSE and
NDJSON connections). The healthy-stream rule's interval is set far beyond any test here, so
that only cursors commit; nothing asserts a timing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from gateway.app import begin_shutdown
from gateway.context import app_context
from gateway.streams import group_stream
from gateway.streams.cursor import decode_cursor_epoch, encode_cursor
from storage.embedded import EmbeddedBackend
from storage.types import TopicPartition
from tests.gateway.conftest import problem_type, sse_events
from tests.gateway.routes.test_groups import create_topic, describe, produce, until

WAIT_S = 20.0  # only bounds a hang
Format = Literal["sse", "ndjson"]
ACCEPT = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}


@pytest.fixture(autouse=True)
def only_cursors_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_stream, "AUTO_COMMIT_INTERVAL_S", 3600.0)


@dataclass
class Reading:
    """What one group stream delivered before the test left it."""

    records: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    cursor: str = ""  # the cursor after the last of them


async def read_group(
    live: httpx.AsyncClient,
    count: int,
    *,
    format: Format = "sse",
    cursor: str | None = None,
    commit: str = "auto",
    group: str = "g",
) -> Reading:
    """Join `group` on topic t (from earliest, reconnecting with `cursor` as EventSource or
    a raw NDJSON client would), read `count` records and the cursor after them, and leave."""
    params = {"group": group, "commit": commit, "from": "earliest"}
    headers = {"accept": ACCEPT[format]}
    if cursor is not None and format == "sse":
        headers["Last-Event-ID"] = cursor
    elif cursor is not None:
        params["cursor"] = cursor
    reading = Reading()
    async with asyncio.timeout(WAIT_S):
        async with live.stream(
            "GET", "/v1/topics/t/events", params=params, headers=headers, timeout=None
        ) as response:
            assert response.status_code == 200, await response.aread()
            if format == "sse":
                async for event in sse_events(response):
                    if event.event == "record":
                        record = orjson.loads(event.data)
                        reading.records.append((record["partition"], record["offset"]))
                    if event.id:
                        reading.cursor = event.id
                    if len(reading.records) == count and reading.cursor:
                        break
            else:
                async for line in response.aiter_lines():
                    item = orjson.loads(line) if line else {}
                    if "offset" in item:
                        reading.records.append((item["partition"], item["offset"]))
                    elif item.get("event") == "cursor":
                        reading.cursor = item["cursor"]
                        if len(reading.records) == count:
                            break
    return reading


async def committed(live: httpx.AsyncClient, partitions: int) -> list[int | None]:
    """Group g's committed offset of each partition of t (None: never committed)."""
    listed = {
        p["partition"]: p["committed_offset"] for p in (await describe(live, "g"))["partitions"]
    }
    return [listed.get(p) for p in range(partitions)]


@pytest.mark.parametrize("format", ["sse", "ndjson"])
async def test_a_reconnect_commits_its_cursor_and_resumes_after_it(
    live: httpx.AsyncClient, format: Format
) -> None:
    await create_topic(live, "t", 3)
    await produce(live, "t", {0: 4, 1: 4, 2: 4})
    first = await read_group(live, 12, format=format)
    epoch, positions = decode_cursor_epoch(first.cursor)
    assert epoch is not None
    assert positions == {0: 4, 1: 4, 2: 4}
    assert await committed(live, 3) == [None, None, None], "nothing proven while connected"

    await produce(live, "t", {0: 1, 1: 1, 2: 1})
    second = await read_group(live, 3, format=format, cursor=first.cursor)
    assert await committed(live, 3) == [4, 4, 4]
    assert sorted(second.records) == [(0, 4), (1, 4), (2, 4)], "no duplicates, no gap"
    assert decode_cursor_epoch(second.cursor)[0] == epoch


async def test_commit_manual_checks_the_cursor_and_commits_nothing(
    live: httpx.AsyncClient,
) -> None:
    await create_topic(live, "t", 2)
    await produce(live, "t", {0: 2, 1: 2})
    first = await read_group(live, 4, commit="manual")
    again = await read_group(live, 4, commit="manual", cursor=first.cursor)
    assert await committed(live, 2) == [None, None]
    assert sorted(again.records) == sorted(first.records)


async def test_a_cursor_never_moves_committed_offsets_back(live: httpx.AsyncClient) -> None:
    await create_topic(live, "t", 1)
    await produce(live, "t", {0: 2})
    early = await read_group(live, 2)
    await produce(live, "t", {0: 3})
    late = await read_group(live, 3, cursor=early.cursor)
    await read_group(live, 0, cursor=late.cursor)
    assert await committed(live, 1) == [5]
    stale = await read_group(live, 0, cursor=early.cursor)
    assert await committed(live, 1) == [5]
    assert stale.records == []


async def test_a_cursor_from_before_a_seek_commits_nothing(live: httpx.AsyncClient) -> None:
    await create_topic(live, "t", 2)
    await produce(live, "t", {0: 3, 1: 3})
    before = await read_group(live, 6)
    seek = await live.post("/v1/groups/g/seek", json={"topic": "t", "to": "earliest"})
    assert seek.status_code == 200, seek.text
    replay = await read_group(live, 6, cursor=before.cursor)
    assert await committed(live, 2) == [0, 0], "the seek stands"
    assert sorted(replay.records) == sorted(before.records)
    # a cursor made after the seek carries the new epoch, and commits
    assert decode_cursor_epoch(replay.cursor)[0] != decode_cursor_epoch(before.cursor)[0]
    await read_group(live, 0, cursor=replay.cursor)
    assert await committed(live, 2) == [3, 3]


async def test_a_cursor_of_a_deleted_group_commits_nothing(live: httpx.AsyncClient) -> None:
    await create_topic(live, "t", 1)
    await produce(live, "t", {0: 3})
    before = await read_group(live, 3)
    assert (await live.delete("/v1/groups/g")).status_code in (204, 404)
    again = await read_group(live, 3, cursor=before.cursor)
    assert await committed(live, 1) == [None]
    assert again.records == before.records


async def test_a_plain_streams_cursor_commits_nothing(live: httpx.AsyncClient) -> None:
    """A version-1 cursor names no epoch, so nothing tells it is not stale."""
    await create_topic(live, "t", 1)
    await produce(live, "t", {0: 3})
    await read_group(live, 0)  # the group exists
    await read_group(live, 3, cursor=encode_cursor({0: 3}))
    assert await committed(live, 1) == [None]


async def test_a_cursor_beyond_the_end_offset_commits_nothing_for_that_partition(
    live: httpx.AsyncClient,
) -> None:
    await create_topic(live, "t", 2)
    await produce(live, "t", {0: 2, 1: 2})
    first = await read_group(live, 4)
    epoch = decode_cursor_epoch(first.cursor)[0]
    await read_group(live, 0, cursor=encode_cursor({0: 1, 1: 99}, epoch))
    assert await committed(live, 2) == [1, None]


async def test_a_bad_cursor_is_a_400_and_joins_nobody(live: httpx.AsyncClient) -> None:
    await create_topic(live, "t", 2)
    await produce(live, "t", {0: 1})
    first = await read_group(live, 1)
    epoch = decode_cursor_epoch(first.cursor)[0]
    cases = [
        ({"Last-Event-ID": "2.nonsense"}, {}),
        ({}, {"cursor": "1.AAEAALUs"}),  # checksum
        ({"Last-Event-ID": encode_cursor({2: 0}, epoch)}, {}),  # the topic has partitions 0, 1
    ]
    for headers, params in cases:
        response = await live.get(
            "/v1/topics/t/events",
            params={"group": "g", "commit": "auto", **params},
            headers={"accept": "text/event-stream", **headers},
        )
        assert (response.status_code, problem_type(response)) == (400, "bad-cursor")
    assert (await describe(live, "g"))["members"] == []
    assert await committed(live, 2) == [None, None]


async def _stream_until_ended(live: httpx.AsyncClient, app: Starlette, count: int) -> list[str]:
    """A commit=auto member that reads `count` records, then stays until the server ends
    the stream; returns the comments it got (the server's goodbye)."""
    comments: list[str] = []
    records = 0
    async with live.stream(
        "GET",
        "/v1/topics/t/events",
        params={"group": "g", "commit": "auto", "from": "earliest"},
        timeout=None,
    ) as response:
        async for event in sse_events(response):
            comments += event.comments
            if event.event == "record":
                records += 1
                if records == count:
                    begin_shutdown(app)
    return comments


async def test_shutting_down_commits_nothing_unproven(
    app: Starlette, live: httpx.AsyncClient, backend: EmbeddedBackend
) -> None:
    """The gateway ending a healthy stream is no proof that its last records arrived."""
    await create_topic(live, "t", 2)
    await produce(live, "t", {0: 3, 1: 3})
    async with asyncio.timeout(WAIT_S):
        comments = await _stream_until_ended(live, app, 6)
    assert any("closed by the server" in c for c in comments)
    assert await backend.committed_offsets("g") == {}


async def test_a_cursor_from_before_another_protocols_commit_commits_nothing(
    app: Starlette, live: httpx.AsyncClient
) -> None:
    """Kafka members share the group's offsets and may commit them back on purpose (as
    ConsumerGroups.commit_as hands them in): an older cursor must not move them forward."""
    await create_topic(live, "t", 1)
    await produce(live, "t", {0: 3})
    before = await read_group(live, 3)

    async def left() -> bool:
        return not (await describe(live, "g"))["members"]

    await until(left, "the stream's member never left")
    groups = app_context(app).groups
    await groups.commit_as("g", {TopicPartition("t", 0): 1}, lambda: None)
    await read_group(live, 2, cursor=before.cursor)
    assert await committed(live, 1) == [1]
