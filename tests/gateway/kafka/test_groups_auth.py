"""Consumer groups over Kafka with auth on: the group rights are HTTP's, ListGroups shows
what `GET /v1/groups` would, and a member id belongs to the principal that joined."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.applications import Starlette

from gateway.context import Context
from gateway.kafka.dispatch import ApiKey
from gateway.kafka.errors import ErrorCode
from gateway.kafka.server import KafkaListener, start_listener
from gateway.settings import Settings
from storage.types import TopicConfig
from tests.gateway.kafka.conftest import RawKafka
from tests.gateway.kafka.test_groups import commit, join, join_body

KEYS = {
    "alice": ("lw_alice_0123456789", ["consume:topic:t", "consume:group:team"]),
    "bob": ("lw_bob_0123456789", ["consume:topic:t", "consume:group:team"]),
    "mallory": ("lw_mallory_0123456789", ["consume:topic:t", "consume:group:other"]),
}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        "".join(
            f'[keys.{name}]\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
            f"permissions = {permissions!r}\n".replace("'", '"')
            for name, (key, permissions) in KEYS.items()
        )
    )
    return replace(settings, auth_api_keys_file=keys, kafka_group_initial_rebalance_delay_ms=0)


@pytest.fixture
async def secured(app: Starlette) -> AsyncIterator[KafkaListener]:
    ctx: Context = app.state.logway
    await ctx.backend.create_topic("t", 3, TopicConfig())
    listener = await start_listener(ctx)
    try:
        yield listener
    finally:
        await listener.close()


async def login(listener: KafkaListener, name: str) -> RawKafka:
    raw = await RawKafka.connect(listener.port)
    assert (await raw.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}))["error_code"] == 0
    token = {"auth_bytes": b"\0" + name.encode() + b"\0" + KEYS[name][0].encode()}
    assert (await raw.call(ApiKey.SASL_AUTHENTICATE, 2, token))["error_code"] == 0
    return raw


async def test_a_principal_without_the_group_right_is_refused_everywhere(
    secured: KafkaListener,
) -> None:
    alice, mallory = await login(secured, "alice"), await login(secured, "mallory")
    try:
        joined = await join(alice, "team")
        refused = await mallory.call(ApiKey.JOIN_GROUP, 5, join_body("team"))
        assert refused["error_code"] == ErrorCode.GROUP_AUTHORIZATION_FAILED
        beat = {"group_id": "team", "generation_id": 1, "member_id": joined["member_id"]}
        assert (await mallory.call(ApiKey.HEARTBEAT, 4, beat))["error_code"] == (
            ErrorCode.GROUP_AUTHORIZATION_FAILED
        )
        fetched = await mallory.call(ApiKey.OFFSET_FETCH, 7, {"group_id": "team", "topics": None})
        assert fetched["error_code"] == ErrorCode.GROUP_AUTHORIZATION_FAILED
        errors = await commit(mallory, "team", joined["member_id"], 1, {0: 0})
        assert set(errors.values()) == {ErrorCode.GROUP_AUTHORIZATION_FAILED}
        body = {"groups": ["team"], "include_authorized_operations": True}
        described = (await mallory.call(ApiKey.DESCRIBE_GROUPS, 5, body))["groups"][0]
        assert (described["error_code"], described["members"]) == (
            ErrorCode.GROUP_AUTHORIZATION_FAILED, []
        )  # fmt: skip
        assert (await alice.call(ApiKey.DESCRIBE_GROUPS, 5, body))["groups"][0][
            "authorized_operations"
        ] == 1 << 3 | 1 << 8  # READ and DESCRIBE, no DELETE without admin
        listed = await mallory.call(ApiKey.LIST_GROUPS, 4, {"states_filter": []})
        assert listed["groups"] == []
        listed = await alice.call(ApiKey.LIST_GROUPS, 4, {"states_filter": []})
        assert [g["group_id"] for g in listed["groups"]] == ["team"]
    finally:
        await alice.close()
        await mallory.close()


async def test_a_member_id_is_unknown_to_every_other_principal(secured: KafkaListener) -> None:
    alice, bob = await login(secured, "alice"), await login(secured, "bob")
    try:
        joined = await join(alice, "team")
        beat = {"group_id": "team", "generation_id": 1, "member_id": joined["member_id"]}
        assert (await bob.call(ApiKey.HEARTBEAT, 4, beat))["error_code"] == (
            ErrorCode.UNKNOWN_MEMBER_ID
        )
        errors = await commit(bob, "team", joined["member_id"], 1, {0: 0})
        assert set(errors.values()) == {ErrorCode.UNKNOWN_MEMBER_ID}
        left = await bob.call(
            ApiKey.LEAVE_GROUP, 0, {"group_id": "team", "member_id": joined["member_id"]}
        )
        assert left["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
        assert (await alice.call(ApiKey.HEARTBEAT, 4, beat))["error_code"] == ErrorCode.NONE
    finally:
        await alice.close()
        await bob.close()
