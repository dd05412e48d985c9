"""Consumer groups against real `logway serve` processes (Granian and Hypercorn): membership
over real SSE connections, and committed offsets across a restart (SIGTERM and kill -9).

Semantics 4: committed offsets survive restarts, records not committed are delivered again,
and a commit from an older generation is fenced.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import GatewayFactory
from tests.gateway.routes.test_groups import describe, join_sse, settled, until

pytestmark = pytest.mark.e2e


async def _true(value: bool) -> bool:
    return value


async def produce(client: httpx.AsyncClient, topic: str, per_partition: dict[int, int]) -> None:
    records = [
        {"value": {"p": p, "i": i}, "partition": p}
        for p, count in per_partition.items()
        for i in range(count)
    ]
    response = await client.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert response.status_code == 200, response.text


async def commit(
    client: httpx.AsyncClient, group: str, member_id: str, generation: int, offsets: dict[int, int]
) -> httpx.Response:
    body: dict[str, Any] = {
        "member_id": member_id,
        "generation": generation,
        "offsets": [{"topic": "t", "partition": p, "offset": o} for p, o in offsets.items()],
    }
    return await client.post(f"/v1/groups/{group}/offsets", json=body)


async def test_three_members_split_six_partitions_and_two_take_over(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        assert (await client.put("/v1/topics/t", json={"partitions": 6})).status_code == 201
        members = [await join_sse(client, "t", "g") for _ in range(3)]
        await until(lambda: _true(settled(members, 6)), "three members never settled")
        generation = members[0].assignment["generation"]
        await members[0].close()
        rest = members[1:]
        await until(
            lambda: _true(settled(rest, 6) and rest[0].assignment["generation"] > generation),
            "two members never took over all six partitions",
        )
        for member in rest:
            await member.close()


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
async def test_committed_offsets_survive_a_restart_and_the_rest_is_redelivered(
    start_gateway: GatewayFactory, stop: str
) -> None:
    gateway = start_gateway()
    committed = {0: 4, 1: 7, 2: 10}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        assert (await client.put("/v1/topics/t", json={"partitions": 3})).status_code == 201
        await produce(client, "t", {0: 10, 1: 10, 2: 10})
        member = await join_sse(client, "t", "g", **{"from": "earliest"})
        await until(lambda: _true(len(member.records) == 30), "records did not arrive")
        old_generation = member.assignment["generation"]
        response = await commit(client, "g", member.member_id, old_generation, committed)
        assert response.status_code == 204, response.text
        if stop == "sigterm":
            gateway.terminate()
        else:
            gateway.kill()
        await member.close()

    gateway = start_gateway(data_dir=gateway.data_dir)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        # from=latest would skip everything: the committed offsets must win
        member = await join_sse(client, "t", "g", **{"from": "latest"})
        assert member.assignment["partitions"] == [0, 1, 2]
        await produce(client, "t", {0: 1, 1: 1, 2: 1})
        await until(lambda: _true(len(member.records) == 6 + 3 + 0 + 3), "no redelivery")
        for p, start in committed.items():
            assert member.offsets(p) == list(range(start, 11))
        generation = member.assignment["generation"]
        assert generation > old_generation
        fenced = await commit(client, "g", member.member_id, old_generation, {0: 11})
        assert fenced.status_code == 409
        assert fenced.json()["type"].endswith("/fenced-generation")
        group = await describe(client, "g")
        assert [p["committed_offset"] for p in group["partitions"]] == [4, 7, 10]
        assert [p["lag"] for p in group["partitions"]] == [7, 4, 1]
        response = await commit(client, "g", member.member_id, generation, {0: 11, 1: 11, 2: 11})
        assert response.status_code == 204
        assert [p["lag"] for p in (await describe(client, "g"))["partitions"]] == [0, 0, 0]
        await member.close()


async def test_commit_auto_resumes_where_it_left_off_after_a_restart(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        assert (await client.put("/v1/topics/t", json={"partitions": 3})).status_code == 201
        await produce(client, "t", {0: 5, 1: 5, 2: 5})
        member = await join_sse(client, "t", "g", commit="auto", **{"from": "earliest"})
        await until(lambda: _true(len(member.records) == 15), "records did not arrive")

        async def all_committed() -> bool:
            group = await describe(client, "g")
            return [p["committed_offset"] for p in group["partitions"]] == [5, 5, 5]

        await until(all_committed, "commit=auto never committed what was written")
        gateway.terminate()
        await member.close()

    gateway = start_gateway(data_dir=gateway.data_dir)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        await produce(client, "t", {0: 1, 1: 1, 2: 1})
        member = await join_sse(client, "t", "g", commit="auto", **{"from": "earliest"})
        await until(lambda: _true(len(member.records) == 3), "new records did not arrive")
        assert sorted((r["partition"], r["offset"]) for r in member.records) == [
            (0, 5),
            (1, 5),
            (2, 5),
        ]
        await member.close()


RAW_SSE_CLIENT = r"""
import socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
sock.connect(("127.0.0.1", port))
sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += sock.recv(4096)
for line in head.split(b"\r\n\r\n")[0].decode().split("\r\n"):
    if line.lower().startswith("logway-member-id:"):
        print(line.split(":", 1)[1].strip(), flush=True)
while sock.recv(4096):
    pass
"""


async def test_a_frozen_client_is_removed_after_the_session_timeout(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member whose client process is SIGSTOPped: its connection stays open (no FIN), the
    gateway's writes block once the buffers are full, heartbeats stop, and after the
    session timeout the other member owns every partition."""
    monkeypatch.setenv("LOGWAY_GROUP_SESSION_TIMEOUT_S", "3")  # the gateway inherits it
    gateway = start_gateway()
    port = gateway.url.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=gateway.url) as admin:  # before the client joins
        assert (await admin.put("/v1/topics/big", json={"partitions": 2})).status_code == 201
    frozen = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RAW_SSE_CLIENT,
        port,
        "/v1/topics/big/events?group=g&from=earliest",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            assert frozen.stdout is not None
            frozen_id = (await frozen.stdout.readline()).decode().strip()
            healthy = await join_sse(client, "big", "g", **{"from": "earliest"})

            async def both_members() -> bool:
                return len(healthy.assignment["partitions"]) == 1 and {
                    m["member_id"] for m in (await describe(client, "g"))["members"]
                } == {frozen_id, healthy.member_id}

            await until(both_members, "the two members never settled")
            os.kill(frozen.pid, signal.SIGSTOP)
            value = {"blob": "x" * 60_000}
            for _ in range(10):  # several MB for the frozen member's partition: buffers fill
                records = [{"value": value, "partition": p} for p in (0, 1) for _ in range(10)]
                response = await client.post("/v1/topics/big/records", json={"records": records})
                assert response.status_code == 200
            await until(
                lambda: _true(healthy.assignment["partitions"] == [0, 1]),
                "the frozen member was never removed",
            )
            group = await describe(client, "g")
            assert [m["member_id"] for m in group["members"]] == [healthy.member_id]
            await healthy.close()
    finally:
        frozen.kill()  # by its PID; a stopped process dies of SIGKILL too
        await frozen.wait()
