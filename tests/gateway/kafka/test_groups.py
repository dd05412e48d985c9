"""The consumer-group APIs over the in-process listener: raw frames at the versions clients
send (and the error paths no client library produces), next to the HTTP API of the same
app, which shares the groups' committed offsets and generations and keeps each group's
members to one protocol at a time."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from starlette.applications import Starlette

from gateway import config
from gateway.context import Context
from gateway.kafka.dispatch import ApiKey
from gateway.kafka.errors import ErrorCode
from gateway.kafka.server import KafkaListener, start_listener
from gateway.settings import Settings
from storage.types import TopicConfig
from tests.gateway.conftest import check_response, problem_type
from tests.gateway.kafka.conftest import RawKafka

TIMEOUT_S = 30.0  # guards against hanging only
SESSION_MS = 10_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Kafka's test brokers run without the initial delay too: a lone member is served at once
    return replace(settings, kafka_group_initial_rebalance_delay_ms=0)


@pytest.fixture
async def topic(app: Starlette) -> str:
    ctx: Context = app.state.logway
    await ctx.backend.create_topic("t", 3, TopicConfig())
    return "t"


def subscription(*topics: str) -> bytes:
    return bytes(ConsumerProtocolMemberMetadata(0, list(topics), b"").encode())


def assignment(**partitions: list[int]) -> bytes:
    return bytes(ConsumerProtocolMemberAssignment(0, list(partitions.items()), b"").encode())


def join_body(group: str, member_id: str = "", *, session_ms: int = SESSION_MS) -> dict[str, Any]:
    return {
        "group_id": group,
        "session_timeout_ms": session_ms,
        "rebalance_timeout_ms": 30_000,
        "member_id": member_id,
        "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": subscription("t")}],
    }


async def join(raw: RawKafka, group: str, version: int = 5) -> dict[str, Any]:
    """JoinGroup as clients do: from v4 the first answer only hands out a member id."""
    answer = await raw.call(ApiKey.JOIN_GROUP, version, join_body(group))
    if version >= 4:
        assert answer["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
        answer = await raw.call(ApiKey.JOIN_GROUP, version, join_body(group, answer["member_id"]))
    assert answer["error_code"] == ErrorCode.NONE, answer
    return answer


async def sync(
    raw: RawKafka, group: str, joined: dict[str, Any], assignments: dict[str, bytes] | None = None,
    version: int = 3,
) -> dict[str, Any]:  # fmt: skip
    body = {
        "group_id": group,
        "generation_id": joined["generation_id"],
        "member_id": joined["member_id"],
        "assignments": [{"member_id": m, "assignment": a} for m, a in (assignments or {}).items()],
    }
    return await raw.call(ApiKey.SYNC_GROUP, version, body)


async def commit(
    raw: RawKafka, group: str, member_id: str, generation: int, offsets: dict[int, int],
    version: int = 8, topic: str = "t",
) -> dict[tuple[str, int], int]:  # fmt: skip
    body = {
        "group_id": group,
        "generation_id_or_member_epoch": generation,
        "member_id": member_id,
        "topics": [
            {
                "name": topic,
                "partitions": [
                    {"partition_index": p, "committed_offset": o, "committed_metadata": ""}
                    for p, o in offsets.items()
                ],
            }
        ],
    }
    answer = await raw.call(ApiKey.OFFSET_COMMIT, version, body)
    return {
        (t["name"], p["partition_index"]): p["error_code"]
        for t in answer["topics"]
        for p in t["partitions"]
    }


async def fetch_offsets(raw: RawKafka, group: str, version: int = 7) -> dict[int, int]:
    body: dict[str, Any] = {"group_id": group, "topics": None}
    if version >= 8:
        body = {"groups": [{"group_id": group, "topics": None}]}
    answer = await raw.call(ApiKey.OFFSET_FETCH, version, body)
    topics = answer["groups"][0]["topics"] if version >= 8 else answer["topics"]
    return {p["partition_index"]: p["committed_offset"] for t in topics for p in t["partitions"]}


async def produce(client: httpx.AsyncClient, count: int) -> None:
    records = [{"value": i, "partition": i % 3} for i in range(count)]
    response = await client.post("/v1/topics/t/records", json={"records": records})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("join_version", "sync_version", "commit_version", "fetch_version"),
    [(0, 0, 2, 2), (5, 3, 7, 7), (9, 5, 9, 9)],
)
async def test_a_member_joins_syncs_commits_and_leaves_and_http_sees_all_of_it(
    raw: RawKafka,
    client: httpx.AsyncClient,
    topic: str,
    join_version: int,
    sync_version: int,
    commit_version: int,
    fetch_version: int,
) -> None:
    await produce(client, 6)
    joined = await join(raw, "g", join_version)
    member_id, generation = joined["member_id"], joined["generation_id"]
    assert (joined["leader"], generation, joined["protocol_name"]) == (member_id, 1, "range")
    assert [m["member_id"] for m in joined["members"]] == [member_id]
    assert ConsumerProtocolMemberMetadata.decode(joined["members"][0]["metadata"]).subscription == [
        "t"
    ]
    mine = assignment(t=[0, 1, 2])
    synced = await sync(raw, "g", joined, {member_id: mine}, sync_version)
    assert (synced["error_code"], synced["assignment"]) == (ErrorCode.NONE, mine)
    beat = {"group_id": "g", "generation_id": generation, "member_id": member_id}
    assert (await raw.call(ApiKey.HEARTBEAT, 4, beat))["error_code"] == ErrorCode.NONE
    errors = await commit(raw, "g", member_id, generation, {0: 2, 1: 1}, commit_version)
    assert set(errors.values()) == {ErrorCode.NONE}
    assert await fetch_offsets(raw, "g", fetch_version) == {0: 2, 1: 1}

    described = check_response(await client.get("/v1/groups/g"), "/v1/groups/{group}")
    assert (described["state"], described["generation"], described["protocol"]) == (
        "Stable",
        1,
        "range",
    )
    assert described["members"] == [
        {
            "member_id": member_id,
            "topic": "t",
            "partitions": [0, 1, 2],
            "client": "kafka",
            "client_id": "raw",
        }
    ]
    committed = {p["partition"]: p["committed_offset"] for p in described["partitions"]}
    assert committed == {0: 2, 1: 1, 2: None}

    leave: dict[str, Any] = {"group_id": "g", "member_id": member_id}
    if join_version >= 5:
        leave = {"group_id": "g", "members": [{"member_id": member_id}]}
    left = await raw.call(ApiKey.LEAVE_GROUP, 5 if join_version >= 5 else 0, leave)
    assert left["error_code"] == ErrorCode.NONE
    described = check_response(await client.get("/v1/groups/g"), "/v1/groups/{group}")
    assert (described["state"], described["generation"], described["members"]) == ("Empty", 2, [])


async def test_a_commit_from_a_fenced_generation_or_a_stranger_changes_nothing(
    kafka: KafkaListener, raw: RawKafka, client: httpx.AsyncClient, topic: str
) -> None:
    await produce(client, 15)  # five records per partition
    first = await join(raw, "g")
    await sync(raw, "g", first, {first["member_id"]: assignment(t=[0, 1, 2])})
    assert set((await commit(raw, "g", first["member_id"], 1, {0: 1})).values()) == {0}
    other = await RawKafka.connect(kafka.port)
    try:
        second_join = asyncio.ensure_future(join(other, "g"))
        beat = {"group_id": "g", "generation_id": 1, "member_id": first["member_id"]}
        while (await raw.call(ApiKey.HEARTBEAT, 4, beat))["error_code"] == ErrorCode.NONE:
            pass  # until the newcomer's join has begun a rebalance
        # preparing a rebalance: the current generation still commits (eager clients do now)
        assert set((await commit(raw, "g", first["member_id"], 1, {0: 2})).values()) == {0}
        rejoined = await raw.call(ApiKey.JOIN_GROUP, 5, join_body("g", first["member_id"]))
        second = await asyncio.wait_for(second_join, TIMEOUT_S)
        assert rejoined["generation_id"] == second["generation_id"] == 2
        # completing: the assignment is not out yet
        refused = await commit(raw, "g", first["member_id"], 2, {0: 3})
        assert set(refused.values()) == {ErrorCode.REBALANCE_IN_PROGRESS}
        await sync(raw, "g", rejoined, {first["member_id"]: assignment(t=[0, 1])})
        for member_id, generation, error in [
            (first["member_id"], 1, ErrorCode.ILLEGAL_GENERATION),
            ("someone-else", 2, ErrorCode.UNKNOWN_MEMBER_ID),
            ("", -1, ErrorCode.UNKNOWN_MEMBER_ID),  # no self-assigned commits in a live group
        ]:
            assert set((await commit(raw, "g", member_id, generation, {0: 4})).values()) == {error}
    finally:
        await other.close()
    assert await fetch_offsets(raw, "g") == {0: 2}
    described = (await client.get("/v1/groups/g")).json()
    assert [p["committed_offset"] for p in described["partitions"] if p["partition"] == 0] == [2]


async def test_each_partition_of_a_commit_is_checked_before_the_group_decides(
    raw: RawKafka, client: httpx.AsyncClient, app: Starlette
) -> None:
    ctx: Context = app.state.logway
    await ctx.backend.create_topic("t", 5, TopicConfig())
    records = [{"value": i, "partition": i} for i in range(5)]  # one per partition
    assert (await client.post("/v1/topics/t/records", json={"records": records})).status_code == 200
    body = {
        "group_id": "solo",
        "generation_id_or_member_epoch": -1,
        "member_id": "",
        "topics": [
            {"name": "t", "partitions": [
                {"partition_index": 0, "committed_offset": 1, "committed_metadata": "ok"},
                {"partition_index": 1, "committed_offset": 2, "committed_metadata": ""},
                {"partition_index": 2, "committed_offset": -5, "committed_metadata": None},
                {"partition_index": 7, "committed_offset": 0, "committed_metadata": ""},
                {"partition_index": 3, "committed_offset": 0, "committed_metadata": "x" * 4097},
            ]},
            {"name": "nope", "partitions": [
                {"partition_index": 0, "committed_offset": 0, "committed_metadata": ""},
            ]},
        ],
    }  # fmt: skip
    answer = await raw.call(ApiKey.OFFSET_COMMIT, 8, body)
    errors = [(t["name"], p["error_code"]) for t in answer["topics"] for p in t["partitions"]]
    assert errors == [
        ("t", ErrorCode.NONE),
        ("t", ErrorCode.OFFSET_OUT_OF_RANGE),  # beyond the end offset
        ("t", ErrorCode.OFFSET_OUT_OF_RANGE),
        ("t", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("t", ErrorCode.OFFSET_METADATA_TOO_LARGE),
        ("nope", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    assert await fetch_offsets(raw, "solo") == {0: 1}
    described = check_response(await client.get("/v1/groups/solo"), "/v1/groups/{group}")
    assert [(p["partition"], p["committed_offset"]) for p in described["partitions"]] == [(0, 1)]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"session_timeout_ms": 5999}, ErrorCode.INVALID_SESSION_TIMEOUT),
        ({"session_timeout_ms": 1_800_001}, ErrorCode.INVALID_SESSION_TIMEOUT),
        ({"group_id": ""}, ErrorCode.INVALID_GROUP_ID),
        ({"protocol_type": ""}, ErrorCode.INCONSISTENT_GROUP_PROTOCOL),
        ({"protocols": []}, ErrorCode.INCONSISTENT_GROUP_PROTOCOL),
    ],
)
async def test_a_join_the_broker_cannot_take_is_answered_with_its_reason(
    raw: RawKafka, client: httpx.AsyncClient, change: dict[str, Any], error: ErrorCode
) -> None:
    answer = await raw.call(ApiKey.JOIN_GROUP, 7, {**join_body("g"), **change})
    assert (answer["error_code"], answer["generation_id"]) == (error, -1)
    assert (await client.get("/v1/groups")).json() == {"groups": []}


async def test_a_group_has_members_of_one_protocol_at_a_time_and_one_generation_sequence(
    raw: RawKafka, client: httpx.AsyncClient, topic: str
) -> None:
    await produce(client, 3)
    pull = await client.post("/v1/groups/g/members", json={"topic": "t"})
    assert pull.status_code == 201, pull.text
    http_member = pull.json()
    given_id = await raw.call(ApiKey.JOIN_GROUP, 5, join_body("g"))
    assert given_id["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
    refused = await raw.call(ApiKey.JOIN_GROUP, 5, join_body("g", given_id["member_id"]))
    assert refused["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    refused = await raw.call(ApiKey.JOIN_GROUP, 3, join_body("g"))
    assert refused["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert set((await commit(raw, "g", "", -1, {0: 1})).values()) == {ErrorCode.UNKNOWN_MEMBER_ID}
    left = await client.delete(f"/v1/groups/g/members/{http_member['member_id']}")
    assert left.status_code == 204
    http_generation = (await client.get("/v1/groups/g")).json()["generation"]
    assert http_generation == http_member["generation"] + 1

    joined = await join(raw, "g")
    assert joined["generation_id"] == http_generation + 1  # one sequence across protocols
    for response, path in [
        (await client.post("/v1/groups/g/members", json={"topic": "t"}), "/v1/groups/{group}/members"),
        (await client.post("/v1/groups/g/seek", json={"topic": "t", "to": "earliest"}), "/v1/groups/{group}/seek"),
    ]:  # fmt: skip
        assert response.status_code == 409
        assert problem_type(response) == "group-protocol-conflict"
        check_response(response, path)
    async with client.stream(
        "GET", "/v1/topics/t/events?group=g", headers={"accept": "text/event-stream"}
    ) as stream:
        assert stream.status_code == 409
    deleted = await client.delete("/v1/groups/g")
    assert (deleted.status_code, problem_type(deleted)) == (409, "group-not-empty")
    listed = check_response(await client.get("/v1/groups"), "/v1/groups")
    assert listed["groups"] == [
        {
            "group": "g",
            "state": "CompletingRebalance",
            "generation": joined["generation_id"],
            "members": 1,
        }
    ]

    await raw.call(ApiKey.LEAVE_GROUP, 0, {"group_id": "g", "member_id": joined["member_id"]})
    kafka_last = joined["generation_id"] + 1  # leaving emptied the group in a generation
    pull = await client.post("/v1/groups/g/members", json={"topic": "t"})
    assert pull.status_code == 201, pull.text
    assert pull.json()["generation"] > kafka_last


async def test_committed_offsets_are_shared_both_ways(
    raw: RawKafka, client: httpx.AsyncClient, topic: str
) -> None:
    await produce(client, 6)  # two records per partition
    assert set((await commit(raw, "shared", "", -1, {0: 1, 1: 2})).values()) == {ErrorCode.NONE}
    pull = (await client.post("/v1/groups/shared/members", json={"topic": "t"})).json()
    member_id, generation = pull["member_id"], pull["generation"]
    records = await client.get(
        "/v1/topics/t/partitions/0/records", params={"group": "shared", "member_id": member_id}
    )
    assert [r["offset"] for r in records.json()["records"]] == [1]  # where Kafka committed
    committed = await client.post(
        "/v1/groups/shared/offsets",
        json={"member_id": member_id, "generation": generation,
              "offsets": [{"topic": "t", "partition": 2, "offset": 2}]},
    )  # fmt: skip
    assert committed.status_code == 204, committed.text
    assert await fetch_offsets(raw, "shared") == {0: 1, 1: 2, 2: 2}


async def test_describe_and_list_groups_show_both_protocols_members(
    raw: RawKafka, client: httpx.AsyncClient, topic: str
) -> None:
    joined = await join(raw, "kafka-group")
    await sync(raw, "kafka-group", joined, {joined["member_id"]: assignment(t=[0, 1, 2])})
    pull = (await client.post("/v1/groups/http-group/members", json={"topic": "t"})).json()
    await commit(raw, "offsets-only", "", -1, {0: 0})
    body = {"groups": ["kafka-group", "http-group", "offsets-only", "nobody"],
            "include_authorized_operations": True}  # fmt: skip
    described = {
        g["group_id"]: g for g in (await raw.call(ApiKey.DESCRIBE_GROUPS, 5, body))["groups"]
    }
    kafka_group = described["kafka-group"]
    assert (
        kafka_group["group_state"],
        kafka_group["protocol_type"],
        kafka_group["protocol_data"],
    ) == ("Stable", "consumer", "range")
    (member,) = kafka_group["members"]
    assert (member["member_id"], member["client_id"], member["client_host"]) == (
        joined["member_id"],
        "raw",
        "/127.0.0.1",
    )
    decoded = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
    assert [tuple(a) for a in decoded.assignment] == [("t", [0, 1, 2])]
    http_group = described["http-group"]
    assert (
        http_group["group_state"],
        http_group["protocol_type"],
        http_group["protocol_data"],
    ) == ("Stable", "consumer", "sticky")
    (member,) = http_group["members"]
    assert (member["member_id"], member["client_id"]) == (pull["member_id"], "logway-http")
    assert ConsumerProtocolMemberMetadata.decode(member["member_metadata"]).subscription == ["t"]
    decoded = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
    assert [tuple(a) for a in decoded.assignment] == [("t", pull["partitions"])]
    assert described["offsets-only"]["group_state"] == "Empty"
    assert described["nobody"]["group_state"] == "Dead"
    assert described["nobody"]["error_code"] == ErrorCode.NONE
    assert kafka_group["authorized_operations"] == 1 << 3 | 1 << 6 | 1 << 8  # auth off: all

    listed = await raw.call(ApiKey.LIST_GROUPS, 5, {"states_filter": [], "types_filter": []})
    assert sorted(
        (g["group_id"], g["protocol_type"], g["group_state"]) for g in listed["groups"]
    ) == [
        ("http-group", "consumer", "Stable"),
        ("kafka-group", "consumer", "Stable"),
        ("offsets-only", "", "Empty"),
    ]
    stable = await raw.call(ApiKey.LIST_GROUPS, 4, {"states_filter": ["stable"]})
    assert sorted(g["group_id"] for g in stable["groups"]) == ["http-group", "kafka-group"]
    old = await raw.call(ApiKey.LIST_GROUPS, 0, {})
    assert len(old["groups"]) == 3


async def test_a_waiting_join_ends_when_the_listener_closes(
    app: Starlette, raw: RawKafka, kafka: KafkaListener, topic: str
) -> None:
    first = await join(raw, "g")
    await sync(raw, "g", first, {first["member_id"]: b""})
    other = await RawKafka.connect(kafka.port)
    await other.send(other.frame(ApiKey.JOIN_GROUP, 3, join_body("g")))  # waits for the first
    await kafka.close()
    with pytest.raises(asyncio.IncompleteReadError):
        await asyncio.wait_for(other.read_frame(), TIMEOUT_S)
    await other.close()
    ctx: Context = app.state.logway
    listener = await start_listener(ctx)  # the groups are let go of: a new listener starts clean
    await listener.close()


async def test_aiokafka_members_share_a_topic_and_hand_over_as_one_stops(
    bootstrap: str, client: httpx.AsyncClient, topic: str
) -> None:
    await produce(client, 30)
    consumers = [
        AIOKafkaConsumer("t", bootstrap_servers=bootstrap, group_id="team",
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         session_timeout_ms=6000, heartbeat_interval_ms=100)
        for _ in range(2)
    ]  # fmt: skip
    seen: set[tuple[int, int]] = set()

    async def consume(consumer: AIOKafkaConsumer, until: int) -> None:
        while len(seen) < until:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                seen.update((r.partition, r.offset) for r in records)
            if batch:
                await consumer.commit()

    for consumer in consumers:
        await consumer.start()
    try:
        while not all(c.assignment() for c in consumers):
            await asyncio.wait_for(
                asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers)), TIMEOUT_S
            )
        assert sorted(p.partition for c in consumers for p in c.assignment()) == [0, 1, 2]
        await consumers[0].stop()
        await asyncio.wait_for(consume(consumers[1], 30), TIMEOUT_S)
        assert {p.partition for p in consumers[1].assignment()} == {0, 1, 2}
    finally:
        for consumer in consumers:
            await consumer.stop()
    assert len(seen) == 30
    described = (await client.get("/v1/groups/team")).json()
    assert {p["partition"]: p["committed_offset"] for p in described["partitions"]} == {
        0: 10,
        1: 10,
        2: 10,
    }


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("kafka_group_initial_rebalance_delay_ms = -1\n", "must not be negative"),
        ("kafka_group_min_session_timeout_ms = 0\n", "at least 1"),
        ("kafka_group_min_session_timeout_ms = 9\nkafka_group_max_session_timeout_ms = 8\n",
         "at most"),
    ],
)  # fmt: skip
def test_group_settings_that_cannot_work_are_refused(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "logway.toml"
    path.write_text(toml)
    with pytest.raises(config.ConfigError, match=message):
        config.load({}, path, {})
    path.write_text("kafka_group_initial_rebalance_delay_ms = 0\n")
    assert config.load({}, path, {}).kafka_group_initial_rebalance_delay_ms == 0
