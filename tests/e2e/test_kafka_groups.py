"""Consumer groups over Kafka, with clients nobody here wrote, against a real `logway serve
--kafka-port`: kcat's balanced consumer, three librdkafka members handing over as one
leaves, aiokafka and kafka-python resuming each other's commits, and an SSE member and a
Kafka member of one group sharing its committed offsets (and never its membership)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer, KafkaError
from kafka import KafkaConsumer

from tests.e2e.conftest import GatewayFactory, create_topic
from tests.e2e.kafka_harness import (
    KafkaGateway,
    granian_only,
    librdkafka_config,
    require_kcat,
    start_kafka_gateway,
)
from tests.gateway.routes.test_groups import join_sse, until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
server = granian_only
TIMEOUT_S = 30.0  # guards against hanging only; nothing asserts a duration
# Kafka's smallest session timeout, and heartbeats often enough that members learn of a
# rebalance quickly (the defaults, 45 s and 3 s, would only make the tests slower)
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 250}


@pytest.fixture
def kafka_gateway(start_gateway: GatewayFactory, tmp_path: Path) -> KafkaGateway:
    config = tmp_path / "logway.toml"
    # as Kafka's test brokers do: no initial rebalance delay, so a lone member starts at once
    config.write_text("kafka_group_initial_rebalance_delay_ms = 0\n")
    return start_kafka_gateway(start_gateway, "--config", str(config))


def produce(client: httpx.Client, topic: str, partitions: int, count: int, start: int = 0) -> None:
    records = [{"value": i, "partition": i % partitions} for i in range(start, start + count)]
    response = client.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert response.status_code == 200, response.text


def committed(client: httpx.Client, group: str) -> dict[int, int | None]:
    response = client.get(f"/v1/groups/{group}")
    assert response.status_code == 200, response.text
    return {p["partition"]: p["committed_offset"] for p in response.json()["partitions"]}


def ends(client: httpx.Client, topic: str) -> dict[int, int]:
    partitions = client.get(f"/v1/topics/{topic}").json()["partitions"]
    return {p["partition"]: p["end_offset"] for p in partitions}


def test_kcat_consumes_with_a_group_and_resumes_where_it_committed(
    kafka_gateway: KafkaGateway,
) -> None:
    kcat = require_kcat()
    command = [kcat, "-b", kafka_gateway.bootstrap, "-G", "kcat-group", "-e", "-q",
               "-X", "auto.offset.reset=earliest", "-f", "%p %o\\n", "events"]  # fmt: skip
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "events", 2)
        produce(client, "events", 2, 20)
        first = subprocess.run(command, capture_output=True, check=True, timeout=TIMEOUT_S)
        assert sorted(first.stdout.decode().split("\n")[:-1]) == sorted(
            f"{p} {o}" for p in (0, 1) for o in range(10)
        )
        assert committed(client, "kcat-group") == {0: 10, 1: 10}  # committed as kcat closed
        produce(client, "events", 2, 4, start=20)
        second = subprocess.run(command, capture_output=True, check=True, timeout=TIMEOUT_S)
        assert sorted(second.stdout.decode().split("\n")[:-1]) == [
            "0 10", "0 11", "1 10", "1 11"
        ]  # fmt: skip
        assert committed(client, "kcat-group") == {0: 12, 1: 12}


def _consumer(bootstrap: str, group: str, **overrides: Any) -> Consumer:
    return Consumer(
        librdkafka_config(bootstrap, **{
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **FAST_GROUP,
            **overrides,
        })
    )  # fmt: skip


def _poll(consumers: Iterable[Consumer], seen: dict[str, set[tuple[int, int]]]) -> None:
    """One round: each consumer takes what it has and commits it (after "processing")."""
    for consumer in consumers:
        messages = consumer.consume(num_messages=100, timeout=0.05)
        records = set()
        for message in messages:
            assert message.error() is None, message.error()
            offset, partition = message.offset(), message.partition()
            assert offset is not None
            assert partition is not None
            records.add((partition, offset))
        if records:
            seen.setdefault(consumer.memberid() or "", set()).update(records)
            consumer.commit(asynchronous=False)


def _owned(consumers: Iterable[Consumer]) -> list[int]:
    return sorted(tp.partition for c in consumers for tp in c.assignment())


def test_three_librdkafka_members_share_a_topic_and_two_take_over_as_one_leaves(
    kafka_gateway: KafkaGateway,
) -> None:
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "orders", 6)
        members = [_consumer(kafka_gateway.bootstrap, "payments") for _ in range(3)]
        seen: dict[str, set[tuple[int, int]]] = {}
        try:
            for member in members:
                member.subscribe(["orders"])
            deadline = time.monotonic() + TIMEOUT_S
            while not (_owned(members) == list(range(6)) and all(m.assignment() for m in members)):
                assert time.monotonic() < deadline, "three members never shared the topic"
                _poll(members, seen)
            described = client.get("/v1/groups/payments").json()
            assert (described["state"], described["protocol"]) == ("Stable", "range")
            assert sorted(m["member_id"] for m in described["members"]) == sorted(
                m.memberid() for m in members
            )
            produce(client, "orders", 6, 300)
            while len(set().union(*seen.values())) < 300:
                assert time.monotonic() < deadline, "the three members did not read everything"
                _poll(members, seen)
            assert len([m for m in members if seen.get(m.memberid() or "")]) == 3

            leaving = members.pop()
            leaving.close()  # LeaveGroup: its partitions go to the others at once
            produce(client, "orders", 6, 300, start=300)
            deadline = time.monotonic() + TIMEOUT_S
            while len(set().union(*seen.values())) < 600 or _owned(members) != list(range(6)):
                assert time.monotonic() < deadline, "the two left did not take over"
                _poll(members, seen)
        finally:
            for member in members:
                member.close()
        consumed = set().union(*seen.values())
        assert consumed == {(p, o) for p in range(6) for o in range(100)}  # every record
        assert committed(client, "payments") == ends(client, "orders")


_MEMBER_SCRIPT = """
import sys, confluent_kafka
consumer = confluent_kafka.Consumer({
    "bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000, "heartbeat.interval.ms": 250,
})
consumer.subscribe([sys.argv[3]])
while True:
    consumer.poll(0.1)
    if consumer.assignment():
        print("assigned", flush=True)
"""


def test_a_member_killed_without_leaving_is_expired_after_its_session_timeout(
    kafka_gateway: KafkaGateway,
) -> None:
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "jobs", 2)
        survivor = _consumer(kafka_gateway.bootstrap, "workers")
        survivor.subscribe(["jobs"])
        doomed = subprocess.Popen(
            [sys.executable, "-c", _MEMBER_SCRIPT, kafka_gateway.bootstrap, "workers", "jobs"],
            stdout=subprocess.PIPE,
        )
        try:
            assert doomed.stdout is not None
            seen: dict[str, set[tuple[int, int]]] = {}
            deadline = time.monotonic() + TIMEOUT_S
            while len(survivor.assignment()) != 1:  # until the group is split in two
                assert time.monotonic() < deadline, "the two members never split the topic"
                _poll([survivor], seen)
            assert doomed.stdout.readline() == b"assigned\n"
            doomed.kill()  # no LeaveGroup: only the session timeout can tell
            doomed.wait(TIMEOUT_S)
            produce(client, "jobs", 2, 10)
            while len(set().union(set(), *seen.values())) < 10:
                assert time.monotonic() < deadline, (
                    "the dead member's partition was never handed on"
                )
                _poll([survivor], seen)
            assert sorted(tp.partition for tp in survivor.assignment()) == [0, 1]
        finally:
            if doomed.poll() is None:
                doomed.kill()
            doomed.communicate()
            survivor.close()
        assert committed(client, "workers") == {0: 5, 1: 5}


async def test_aiokafka_and_kafka_python_resume_each_others_commits(
    kafka_gateway: KafkaGateway,
) -> None:
    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "mixed", 3)
        produce(client, "mixed", 3, 30)
    consumer = AIOKafkaConsumer("mixed", bootstrap_servers=kafka_gateway.bootstrap,
                                group_id="readers", auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=6000,
                                heartbeat_interval_ms=250)  # fmt: skip
    await consumer.start()
    first: set[tuple[int, int]] = set()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while len(first) < 30:
                batch = await consumer.getmany(timeout_ms=200)
                first.update((r.partition, r.offset) for rs in batch.values() for r in rs)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert first == {(p, o) for p in range(3) for o in range(10)}

    with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
        assert committed(client, "readers") == {0: 10, 1: 10, 2: 10}
        produce(client, "mixed", 3, 6, start=30)
        reader = KafkaConsumer("mixed", bootstrap_servers=kafka_gateway.bootstrap,
                               group_id="readers", enable_auto_commit=False,
                               auto_offset_reset="earliest", session_timeout_ms=6000,
                               heartbeat_interval_ms=250,
                               consumer_timeout_ms=int(TIMEOUT_S * 1000))  # fmt: skip
        try:
            second = {(m.partition, m.offset) for _, m in zip(range(6), reader, strict=False)}
            reader.commit()
        finally:
            reader.close()
        assert second == {(p, o) for p in range(3) for o in (10, 11)}  # where aiokafka committed
        assert committed(client, "readers") == {0: 12, 1: 12, 2: 12}


def _join_refused(consumer: Consumer) -> KafkaError:
    """Poll until the consumer reports why its JoinGroup failed."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and (error := message.error()) is not None:
            return error
        assert not consumer.assignment()
    raise AssertionError("the join was never refused")


async def test_an_sse_member_and_a_kafka_member_share_committed_offsets_not_membership(
    kafka_gateway: KafkaGateway,
) -> None:
    async with httpx.AsyncClient(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as live:
        assert (await live.put("/v1/topics/shop", json={"partitions": 2})).status_code == 201
        with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
            produce(client, "shop", 2, 10)
        kafka = _consumer(kafka_gateway.bootstrap, "shop-group")
        kafka.subscribe(["shop"])
        seen: dict[str, set[tuple[int, int]]] = {}
        async with asyncio.timeout(TIMEOUT_S):
            while len(seen.get(kafka.memberid() or "", set())) < 10:
                await asyncio.to_thread(_poll, [kafka], seen)
        # a Kafka member holds the group: an SSE stream of it is refused
        refused = await live.get(
            "/v1/topics/shop/events",
            params={"group": "shop-group"},
            headers={"accept": "text/event-stream"},
        )
        assert refused.status_code == 409
        assert refused.json()["type"].endswith("/group-protocol-conflict")
        kafka.close()

        # the SSE member starts where the Kafka member committed
        with httpx.Client(base_url=kafka_gateway.url, timeout=TIMEOUT_S) as client:
            produce(client, "shop", 2, 4, start=10)
        member = await join_sse(live, "shop", "shop-group", **{"from": "earliest"})
        await until(lambda: _at_least(member.records, 4), "the SSE member read nothing")
        assert sorted((r["partition"], r["offset"]) for r in member.records) == [
            (0, 5), (0, 6), (1, 5), (1, 6)
        ]  # fmt: skip
        commit = await live.post(
            "/v1/groups/shop-group/offsets",
            json={"member_id": member.member_id, "generation": member.assignment["generation"],
                  "offsets": [{"topic": "shop", "partition": 0, "offset": 7},
                              {"topic": "shop", "partition": 1, "offset": 6}]},
        )  # fmt: skip
        assert commit.status_code == 204, commit.text

        # an SSE member holds the group: a Kafka member is refused, and joins once it left
        kafka = _consumer(kafka_gateway.bootstrap, "shop-group")
        kafka.subscribe(["shop"])
        try:
            error = await asyncio.to_thread(_join_refused, kafka)
            assert error.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL
            await member.close()
            seen = {}
            async with asyncio.timeout(TIMEOUT_S):
                while len(seen.get(kafka.memberid() or "", set())) < 1:
                    await asyncio.to_thread(_poll, [kafka], seen)
            assert seen[kafka.memberid() or ""] == {(1, 6)}  # where the SSE member committed
        finally:
            kafka.close()


async def _at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count
