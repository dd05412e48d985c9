"""Kafka consumer groups over the JetStream backend: committed offsets go to JetStream's
group store and Kafka's generations into the shared membership state (the Advance event
through the KV bucket), so HTTP's groups continue after them on any gateway."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.kafka.dispatch import ApiKey
from gateway.kafka.errors import ErrorCode
from gateway.kafka.server import KafkaListener
from gateway.settings import Settings
from storage.jetstream import JetStreamBackend
from storage.types import NewRecord, TopicConfig
from tests.gateway.kafka.conftest import RawKafka
from tests.gateway.kafka.test_groups import commit, fetch_offsets, join, join_body, sync
from tests.gateway.kafka.test_jetstream import jetstream_kafka

pytestmark = pytest.mark.nats
__all__ = ["jetstream_kafka"]  # the fixture, shared with the listener's JetStream tests


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, kafka_group_initial_rebalance_delay_ms=0)


async def test_a_kafka_group_on_jetstream_shares_offsets_and_generations_with_http(
    jetstream_kafka: tuple[JetStreamBackend, KafkaListener],
) -> None:
    _, listener = jetstream_kafka
    ctx = listener.broker.ctx
    await ctx.backend.create_topic("t", 3, TopicConfig())
    for partition in range(3):
        await ctx.backend.append("t", partition, [NewRecord(value=b"1"), NewRecord(value=b"2")])
    raw = await RawKafka.connect(listener.port)
    try:
        joined = await join(raw, "g")
        await sync(raw, "g", joined, {joined["member_id"]: b""})
        errors = await commit(raw, "g", joined["member_id"], joined["generation_id"], {0: 2, 2: 1})
        assert set(errors.values()) == {ErrorCode.NONE}
        assert await ctx.backend.committed_offsets("g") != {}
        described = await ctx.groups.describe("g")
        assert [m.client for m in described.members] == ["kafka"]
        left = await raw.call(
            ApiKey.LEAVE_GROUP, 0, {"group_id": "g", "member_id": joined["member_id"]}
        )
        assert left["error_code"] == ErrorCode.NONE
        member = await ctx.groups.join("g", "t")
        assert member.generation > joined["generation_id"] + 1  # after Kafka's, also its last
        assert member.assignment.starting_offsets == {0: 2, 1: None, 2: 1}
        given = await raw.call(ApiKey.JOIN_GROUP, 5, join_body("g"))
        refused = await raw.call(ApiKey.JOIN_GROUP, 5, join_body("g", given["member_id"]))
        assert refused["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        await member.commit(member.assignment.generation, {1: 2})
        assert await fetch_offsets(raw, "g") == {0: 2, 1: 2, 2: 1}
        await member.leave()
    finally:
        await raw.close()
