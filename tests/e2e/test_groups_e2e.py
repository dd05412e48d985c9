"""Consumer groups against real `logway serve` processes (Granian and Hypercorn): membership
over real SSE connections, and committed offsets across a restart (SIGTERM and kill -9).

Semantics 4: committed offsets survive restarts, records not committed are delivered again,
and a commit from an older generation is fenced.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import GatewayFactory
from tests.gateway.test_api_groups import describe, join_sse, settled, until


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
