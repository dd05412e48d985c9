"""Consumer groups over HTTP, against the app served by Hypercorn on 127.0.0.1 (real SSE and
NDJSON connections) with a short session timeout, plus in-process checks of the admin API.

No test asserts a timing: waits are "until the condition holds" with a generous bound that
only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.settings import Settings
from gateway.streams.cursor import decode_cursor
from storage.types import Durability, DurabilityPolicy
from tests.gateway.conftest import check_response, problem_type, sse_events

SESSION_TIMEOUT_S = 3.0  # short, yet far above any scheduling hiccup of a busy test machine
WAIT_S = 20.0  # only bounds a hang


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        durability=DurabilityPolicy(Durability.NEVER),
        heartbeat_s=15.0,
        group_session_timeout_s=SESSION_TIMEOUT_S,
        stream_send_timeout_s=60.0,
    )


async def until(condition: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll `condition` until it returns something truthy (bounded by WAIT_S)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            result = await condition()
            if result:
                return result
            await asyncio.sleep(0.02)
    raise AssertionError(what)  # pragma: no cover


async def create_topic(client: httpx.AsyncClient, topic: str, partitions: int) -> None:
    response = await client.put(f"/v1/topics/{topic}", json={"partitions": partitions})
    assert response.status_code == 201, response.text


async def produce(client: httpx.AsyncClient, topic: str, per_partition: dict[int, int]) -> None:
    records = [
        {"value": {"p": p, "i": i}, "partition": p}
        for p, count in per_partition.items()
        for i in range(count)
    ]
    response = await client.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert response.status_code == 200, response.text


async def describe(client: httpx.AsyncClient, group: str) -> dict[str, Any]:
    response = await client.get(f"/v1/groups/{group}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = check_response(response, "/v1/groups/{group}")
    return body


@dataclass
class Member:
    """One SSE (or NDJSON) group member: its events, collected by a task as they arrive."""

    member_id: str = ""
    assignments: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    # (generation of the latest assignment seen, partition, offset) per record
    seen: list[tuple[int, int, int]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def assignment(self) -> dict[str, Any]:
        return self.assignments[-1]

    def offsets(self, partition: int) -> list[int]:
        return [r["offset"] for r in self.records if r["partition"] == partition]

    async def close(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.TransportError):
            await self.task  # a gateway killed under the stream leaves a transport error


async def join_sse(live: httpx.AsyncClient, topic: str, group: str, **params: str) -> Member:
    member = Member()
    started = asyncio.Event()

    async def run() -> None:
        query = {"group": group, **params}
        async with live.stream(
            "GET", f"/v1/topics/{topic}/events", params=query, timeout=None
        ) as response:
            assert response.status_code == 200, await response.aread()
            member.member_id = response.headers["logway-member-id"]
            started.set()
            try:
                async for event in sse_events(response):
                    if event.event == "assignment":
                        data = orjson.loads(event.data)
                        assert data["member_id"] == member.member_id
                        member.assignments.append(data)
                    elif event.event == "record":
                        record = orjson.loads(event.data)
                        member.records.append(record)
                        generation = member.assignment["generation"]
                        member.seen.append((generation, record["partition"], record["offset"]))
                        assert record["partition"] in member.assignment["partitions"]
                    elif event.event == "error":
                        member.errors.append(orjson.loads(event.data))
                    member.changed.set()
            finally:
                member.ended = True
                member.changed.set()

    member.task = asyncio.create_task(run())
    async with asyncio.timeout(WAIT_S):
        await started.wait()
        await until(lambda: _true(bool(member.assignments)), "no first assignment")
    return member


async def _true(value: bool) -> bool:
    return value


def settled(members: list[Member], partitions: int) -> bool:
    """Every member's latest assignment is of one generation and they split the partitions."""
    if not all(m.assignments for m in members):
        return False
    generations = {m.assignment["generation"] for m in members}
    owned = [p for m in members for p in m.assignment["partitions"]]
    return len(generations) == 1 and sorted(owned) == list(range(partitions))


# -- membership and rebalancing -------------------------------------------------------------


async def test_three_sse_members_split_six_partitions_and_two_take_over(
    live: httpx.AsyncClient,
) -> None:
    await create_topic(live, "orders", 6)
    members = [await join_sse(live, "orders", "payments", **{"from": "earliest"}) for _ in range(3)]
    await until(lambda: _true(settled(members, 6)), "three members never settled")
    first_generation = members[0].assignment["generation"]
    assert all(len(m.assignment["partitions"]) == 2 for m in members)

    group = await describe(live, "payments")
    assert group["state"] == "Stable"
    assert group["generation"] == first_generation
    assert {m["member_id"] for m in group["members"]} == {m.member_id for m in members}

    await members[2].close()
    rest = members[:2]
    await until(
        lambda: _true(settled(rest, 6) and rest[0].assignment["generation"] > first_generation),
        "two members never took over all six partitions",
    )
    # sticky: the survivors kept what they had
    for m in rest:
        assert set(m.assignments[-2]["partitions"]) <= set(m.assignment["partitions"])

    # records reach exactly one member each, only from its partitions
    await produce(live, "orders", {p: 5 for p in range(6)})
    await until(
        lambda: _true(sum(len(m.records) for m in rest) == 30), "records did not all arrive"
    )
    for p in range(6):
        owners = [m for m in rest if m.offsets(p)]
        assert len(owners) == 1
        assert owners[0].offsets(p) == list(range(5))
    for m in rest:
        await m.close()
    await until(lambda: _describe_state(live, "payments", "Empty"), "the group never became empty")


async def _describe_state(client: httpx.AsyncClient, group: str, state: str) -> bool:
    current: str = (await describe(client, group))["state"]
    return current == state


@pytest.mark.slow  # waits out a session timeout
async def test_pull_member_that_stops_pulling_is_removed_after_the_session_timeout(
    live: httpx.AsyncClient,
) -> None:
    await create_topic(live, "t", 4)
    joined = []
    for _ in range(2):
        response = await live.post("/v1/groups/g/members", json={"topic": "t"})
        assert response.status_code == 201, response.text
        joined.append(check_response(response, "/v1/groups/{group}/members"))
    alive, silent = joined
    assert alive["session_timeout_ms"] == SESSION_TIMEOUT_S * 1000

    async def taken_over() -> dict[str, Any] | None:
        # the live member heartbeats by pulling a partition it owns
        describe_now = await describe(live, "g")
        mine = next(m for m in describe_now["members"] if m["member_id"] == alive["member_id"])
        response = await live.get(
            f"/v1/topics/t/partitions/{mine['partitions'][0]}/records",
            params={"group": "g", "member_id": alive["member_id"]},
        )
        assert response.status_code == 200, response.text
        body = check_response(response, "/v1/topics/{topic}/partitions/{partition}/records")
        done = len(describe_now["members"]) == 1 and body["assignment"]["partitions"] == [
            0,
            1,
            2,
            3,
        ]
        return body if done else None

    body = await until(taken_over, "the silent member was never removed")
    assert body["assignment"]["generation"] > alive["generation"]
    response = await live.get(
        "/v1/topics/t/partitions/0/records", params={"group": "g", "member_id": silent["member_id"]}
    )
    assert response.status_code == 404
    assert problem_type(response) == "unknown-member"

    # rejoining with a live id is a heartbeat (200); leaving makes the group empty
    response = await live.post(
        "/v1/groups/g/members", json={"topic": "t", "member_id": alive["member_id"]}
    )
    assert response.status_code == 200
    assert response.json()["partitions"] == [0, 1, 2, 3]
    response = await live.delete(f"/v1/groups/g/members/{alive['member_id']}")
    assert response.status_code == 204
    assert (await describe(live, "g"))["state"] == "Empty"
    response = await live.delete(f"/v1/groups/g/members/{alive['member_id']}")
    assert response.status_code == 404
    assert problem_type(response) == "unknown-member"


class StallingRelay:
    """A TCP relay between a client and the gateway that can stop reading from the gateway
    and forget the client: the gateway's socket stays open (no FIN, no RST), its writes pile
    up in the buffers and then block, like a client machine that vanished."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.stalled = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.upstreams: list[socket.socket] = []
        self.writers: list[asyncio.StreamWriter] = []  # held open: closing would send a FIN
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.target_port))
        self.upstreams.append(sock)
        up_reader, up_writer = await asyncio.open_connection(sock=sock)
        self.writers += (writer, up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while not self.stalled.is_set():
                    read = asyncio.ensure_future(src.read(65536))
                    stall = asyncio.ensure_future(self.stalled.wait())
                    await asyncio.wait({read, stall}, return_when=asyncio.FIRST_COMPLETED)
                    stall.cancel()
                    if not read.done():
                        read.cancel()
                        return
                    data = read.result()
                    if not data:
                        return
                    dst.write(data)
                    await dst.drain()

        for coro in (pipe(reader, up_writer), pipe(up_reader, writer)):
            task = asyncio.create_task(coro)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        for sock in self.upstreams:
            sock.close()
        if self.server is not None:
            self.server.close()


@pytest.mark.slow  # waits out a session timeout
async def test_sse_member_behind_a_vanished_connection_is_removed_after_the_session_timeout(
    live: httpx.AsyncClient, live_url: str
) -> None:
    """The client side disappears without FIN: its member expires once the gateway's
    writes to the dead connection block, and the other member takes every partition."""
    await create_topic(live, "big", 2)
    relay = StallingRelay(int(live_url.rsplit(":", 1)[1]))
    relay_port = await relay.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{relay_port}") as via_relay:
            doomed = await join_sse(via_relay, "big", "g", **{"from": "earliest"})
            healthy = await join_sse(live, "big", "g", **{"from": "earliest"})
            await until(lambda: _true(settled([doomed, healthy], 2)), "never settled")
            relay.stalled.set()  # from now on nobody reads what the gateway sends the doomed
            value = {"blob": "x" * 60_000}
            for _ in range(10):  # several MB for the doomed member's partition: buffers fill
                records = [{"value": value, "partition": p} for p in (0, 1) for _ in range(10)]
                response = await live.post("/v1/topics/big/records", json={"records": records})
                assert response.status_code == 200
            await until(
                lambda: _true(healthy.assignment["partitions"] == [0, 1]),
                "the vanished member was never removed",
            )
            group = await describe(live, "g")
            assert [m["member_id"] for m in group["members"]] == [healthy.member_id]
            await doomed.close()
            await healthy.close()
    finally:
        await relay.close()


# -- positions and commits ------------------------------------------------------------------


async def test_manual_commit_is_fenced_and_validated(live: httpx.AsyncClient) -> None:
    await create_topic(live, "t", 2)
    await produce(live, "t", {0: 3, 1: 3})
    first = await join_sse(live, "t", "g", **{"from": "earliest"})
    await until(lambda: _true(len(first.records) == 6), "records did not arrive")
    old_generation = first.assignment["generation"]
    second = await join_sse(live, "t", "g", **{"from": "earliest"})
    await until(lambda: _true(settled([first, second], 2)), "never settled")
    generation = first.assignment["generation"]
    assert generation > old_generation
    mine = first.assignment["partitions"][0]
    theirs = second.assignment["partitions"][0]

    def commit(member_id: str, gen: Any, offsets: Any) -> Awaitable[httpx.Response]:
        body = {"member_id": member_id, "generation": gen, "offsets": offsets}
        return live.post("/v1/groups/g/offsets", json=body)

    ok = await commit(first.member_id, generation, [{"topic": "t", "partition": mine, "offset": 2}])
    assert ok.status_code == 204, ok.text
    fenced = await commit(
        first.member_id, old_generation, [{"topic": "t", "partition": mine, "offset": 3}]
    )
    assert fenced.status_code == 409
    assert problem_type(fenced) == "fenced-generation"
    assert fenced.json()["current_generation"] == generation
    check_response(fenced, "/v1/groups/{group}/offsets")
    not_owner = await commit(
        first.member_id, generation, [{"topic": "t", "partition": theirs, "offset": 1}]
    )
    assert not_owner.status_code == 409
    assert problem_type(not_owner) == "not-partition-owner"
    beyond = await commit(
        first.member_id, generation, [{"topic": "t", "partition": mine, "offset": 4}]
    )
    assert beyond.status_code == 400
    assert problem_type(beyond) == "invalid-offsets"
    negative = await commit(
        first.member_id, generation, [{"topic": "t", "partition": mine, "offset": -1}]
    )
    assert negative.status_code == 400
    assert problem_type(negative) == "invalid-offsets"
    unknown = await commit("nobody", generation, [{"topic": "t", "partition": mine, "offset": 1}])
    assert unknown.status_code == 404
    assert problem_type(unknown) == "unknown-member"
    bad_generation = await commit(first.member_id, "one", [])
    assert bad_generation.status_code == 422
    assert problem_type(bad_generation) == "validation-error"
    bad_json = await live.post(
        "/v1/groups/g/offsets", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert problem_type(bad_json) == "bad-json"

    group = await describe(live, "g")
    lag = {p["partition"]: p for p in group["partitions"]}
    assert lag[mine]["committed_offset"] == 2
    assert lag[mine]["lag"] == 1
    assert lag[theirs]["committed_offset"] is None
    assert lag[theirs]["lag"] is None

    # the committing member leaves: its partition restarts at the commit on the other member
    await first.close()
    await until(lambda: _true(second.assignment["partitions"] == [0, 1]), "no takeover")
    await until(lambda: _true(second.offsets(mine) == [2]), "uncommitted record not redelivered")
    await second.close()


async def test_commit_auto_commits_what_a_later_write_proved_and_a_new_member_resumes_there(
    live: httpx.AsyncClient,
) -> None:
    await create_topic(live, "t", 3)
    await produce(live, "t", {0: 4, 1: 4, 2: 4})
    member = await join_sse(live, "t", "auto", commit="auto", **{"from": "earliest"})
    await until(lambda: _true(len(member.records) == 12), "records did not arrive")

    async def all_committed() -> bool:
        group = await describe(live, "auto")
        return [p["committed_offset"] for p in group["partitions"]] == [4, 4, 4]

    # a quiet stream: the heartbeat the gateway sends a commit interval later is the write
    # that proves the records arrived
    await until(all_committed, "commit=auto never committed what was written")
    await member.close()
    await produce(live, "t", {0: 1, 1: 1, 2: 1})
    again = await join_sse(live, "t", "auto", commit="auto", **{"from": "earliest"})
    await until(lambda: _true(len(again.records) == 3), "new records did not arrive")
    assert sorted((r["partition"], r["offset"]) for r in again.records) == [(0, 4), (1, 4), (2, 4)]
    await again.close()


async def test_lag_follows_produce_and_commit_and_seek_earliest_replays(
    live: httpx.AsyncClient,
) -> None:
    await create_topic(live, "t", 1)
    await produce(live, "t", {0: 5})
    member = await join_sse(live, "t", "g", **{"from": "latest"})
    assert member.assignment["partitions"] == [0]
    generation = member.assignment["generation"]
    response = await live.post(
        "/v1/groups/g/offsets",
        json={
            "member_id": member.member_id,
            "generation": generation,
            "offsets": [{"topic": "t", "partition": 0, "offset": 5}],
        },
    )
    assert response.status_code == 204
    assert (await describe(live, "g"))["partitions"][0]["lag"] == 0
    await produce(live, "t", {0: 3})
    assert (await describe(live, "g"))["partitions"][0]["lag"] == 3
    await until(lambda: _true(member.offsets(0) == [5, 6, 7]), "live records did not arrive")

    response = await live.post("/v1/groups/g/seek", json={"topic": "t", "to": "earliest"})
    assert response.status_code == 200, response.text
    body = check_response(response, "/v1/groups/{group}/seek")
    assert body["offsets"] == [{"topic": "t", "partition": 0, "offset": 0}]
    await until(lambda: _true(member.offsets(0) == [5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7]), "no replay")
    assert member.assignment["generation"] > generation
    assert (await describe(live, "g"))["partitions"][0]["lag"] == 8

    response = await live.post("/v1/groups/g/seek", json={"topic": "t", "to": "latest"})
    assert response.json()["offsets"][0]["offset"] == 8
    await member.close()


# -- admin ------------------------------------------------------------------------------------


async def test_list_delete_and_bad_input(live: httpx.AsyncClient) -> None:
    await create_topic(live, "t", 2)
    member = await join_sse(live, "t", "busy")
    response = await live.get("/v1/groups")
    body = check_response(response, "/v1/groups")
    assert body["groups"] == [{"group": "busy", "state": "Stable", "generation": 1, "members": 1}]

    response = await live.delete("/v1/groups/busy")
    assert response.status_code == 409
    assert problem_type(response) == "group-not-empty"
    await member.close()
    await until(lambda: _describe_state(live, "busy", "Empty"), "never empty")
    response = await live.delete("/v1/groups/busy")
    assert response.status_code == 204
    response = await live.get("/v1/groups/busy")
    assert response.status_code == 404
    assert problem_type(response) == "unknown-group"
    response = await live.delete("/v1/groups/busy")
    assert response.status_code == 404
    assert problem_type(response) == "unknown-group"

    cases: list[tuple[httpx.Response, int, str]] = [
        (await live.get("/v1/topics/nope/events", params={"group": "g"}), 404, "unknown-topic"),
        (await live.get("/v1/topics/t/events", params={"group": "g", "commit": "x"}), 422, "validation-error"),
        (await live.get("/v1/topics/t/events", params={"commit": "auto"}), 422, "validation-error"),
        (await live.get("/v1/topics/t/events", params={"group": "g", "partitions": "0"}), 422, "validation-error"),
        (await live.get("/v1/topics/t/events", params={"group": "\x01"}), 400, "invalid-group-name"),
        (await live.get("/v1/topics/t/partitions/0/records", params={"group": "g"}), 422, "validation-error"),
        (await live.get("/v1/topics/t/partitions/0/records", params={"group": "g", "member_id": "m"}), 404, "unknown-member"),
        (await live.post("/v1/groups/g/members", json={"topic": "nope"}), 404, "unknown-topic"),
        (await live.post("/v1/groups/g/members", json={"topic": "t", "extra": 1}), 422, "validation-error"),
        (await live.post("/v1/groups/g/seek", json={"topic": "t", "to": "soon"}), 422, "validation-error"),
        (await live.post("/v1/groups/g/seek", json={"topic": "nope", "to": "earliest"}), 404, "unknown-topic"),
        (await live.post("/v1/groups/g/seek", content=b"[", headers={"content-type": "application/json"}), 400, "bad-json"),
    ]  # fmt: skip
    for response, status, slug in cases:
        assert (response.status_code, problem_type(response)) == (status, slug), response.text


async def test_ndjson_member_gets_its_id_in_a_header_and_an_assignment_line_first(
    live: httpx.AsyncClient,
) -> None:
    await create_topic(live, "t", 2)
    await produce(live, "t", {0: 1, 1: 1})
    async with live.stream(
        "GET",
        "/v1/topics/t/events",
        params={"group": "nd", "from": "earliest"},
        headers={"accept": "application/x-ndjson"},
    ) as response:
        member_id = response.headers["logway-member-id"]
        lines = response.aiter_lines()
        first = orjson.loads(await anext(lines))
        assert first == {
            "event": "assignment",
            "member_id": member_id,
            "generation": 1,
            "partitions": [0, 1],
        }
        # each line of records (and the assignment) is followed by the cursor after it
        cursor = orjson.loads(await anext(lines))
        assert cursor["event"] == "cursor"
        assert decode_cursor(cursor["cursor"]) == {0: 0, 1: 0}
        records = []
        for _ in range(2):
            records.append(orjson.loads(await anext(lines)))
            cursor = orjson.loads(await anext(lines))
            assert cursor["event"] == "cursor"
            assert decode_cursor(cursor["cursor"])[records[-1]["partition"]] == 1
        assert sorted(r["partition"] for r in records) == [0, 1]
