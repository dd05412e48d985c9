"""SASL/PLAIN onto the gateway's API keys and their permissions, with aiokafka."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from starlette.applications import Starlette

from gateway.context import Context
from gateway.kafka.dispatch import ApiKey
from gateway.kafka.errors import ErrorCode
from gateway.kafka.server import start_listener
from gateway.settings import Settings
from storage.types import TopicConfig
from tests.gateway.kafka.batches import produced_batch
from tests.gateway.kafka.conftest import RawKafka

WRITER_KEY = "lw_writer_0123456789"
READER_KEY = "lw_reader_0123456789"
ADMIN_KEY = "lw_admin_0123456789"


def _keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(
        f"""
[keys.writer]
sha256 = "{hashlib.sha256(WRITER_KEY.encode()).hexdigest()}"
permissions = ["admin:topic:orders*"]

[keys.admin]
sha256 = "{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}"
permissions = ["admin:topic:*"]

[keys.reader]
sha256 = "{hashlib.sha256(READER_KEY.encode()).hexdigest()}"
permissions = ["consume:topic:orders*"]
"""
    )
    return path


SECRET = "a-test-secret-of-at-least-32-bytes!!"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return replace(settings, auth_api_keys_file=_keys_file(tmp_path), jwt_hs256_secret=SECRET)


@pytest.fixture
async def secured(app: Starlette) -> AsyncIterator[str]:
    listener = await start_listener(app.state.logway)
    try:
        yield f"127.0.0.1:{listener.port}"
    finally:
        await listener.close()


def _sasl(password: str) -> dict[str, str]:
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "someone", "sasl_plain_password": password}  # fmt: skip


async def test_sasl_plain_maps_onto_api_keys_and_their_permissions(
    secured: str, app: Starlette
) -> None:
    ctx: Context = app.state.logway
    await ctx.backend.create_topic("orders", 1, TopicConfig())
    writer = AIOKafkaProducer(bootstrap_servers=secured, **_sasl(WRITER_KEY))
    await writer.start()
    try:
        await writer.send_and_wait("orders", b"1")
    finally:
        await writer.stop()
    reader = AIOKafkaProducer(bootstrap_servers=secured, **_sasl(READER_KEY))
    await reader.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await reader.send_and_wait("orders", b"2")
    finally:
        await reader.stop()
    stranger = AIOKafkaProducer(bootstrap_servers=secured, request_timeout_ms=3000,
                                **_sasl("not-a-key"))  # fmt: skip
    with pytest.raises(KafkaError):
        await stranger.start()
    await stranger.stop()
    assert [r.value for r in await ctx.backend.read("orders", 0, 0, 10, 1 << 20)] == [b"1"]


async def test_sasl_handshake_v0_takes_a_bare_token(secured: str) -> None:
    """librdkafka needs v0 offered; a v0 client sends the PLAIN token as a bare frame."""
    port = int(secured.rsplit(":", 1)[1])
    raw = await RawKafka.connect(port)
    try:
        before = await raw.call(ApiKey.METADATA, 4, {"topics": [{"name": "orders"}]})
        assert before["topics"][0]["error_code"] == ErrorCode.SASL_AUTHENTICATION_FAILED
        handshake = await raw.call(ApiKey.SASL_HANDSHAKE, 0, {"mechanism": "PLAIN"})
        assert handshake == {"error_code": 0, "mechanisms": ["PLAIN"]}
        token = b"\x00someone\x00" + READER_KEY.encode()
        await raw.send(struct.pack(">i", len(token)) + token)
        assert await raw.read_frame() == b""
        after = await raw.call(ApiKey.METADATA, 4, {"topics": [{"name": "orders"}]})
        assert after["topics"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    finally:
        await raw.close()
    stranger = await RawKafka.connect(port)
    try:
        await stranger.call(ApiKey.SASL_HANDSHAKE, 0, {"mechanism": "PLAIN"})
        token = b"\x00someone\x00wrong"
        await stranger.send(struct.pack(">i", len(token)) + token)
        assert await asyncio.wait_for(stranger.reader.read(), 10) == b""  # closed
    finally:
        await stranger.close()


async def test_a_jwt_password_sets_the_session_lifetime(secured: str) -> None:
    """KIP-368: the client learns when to re-authenticate from the token's expiry."""
    token = jwt.encode(
        {"sub": "svc", "exp": int(time.time()) + 600, "permissions": ["consume:topic:orders*"]},
        SECRET,
        algorithm="HS256",
    )
    raw = await RawKafka.connect(int(secured.rsplit(":", 1)[1]))
    try:
        await raw.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
        answer = await raw.call(
            ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\x00svc\x00" + token.encode()}
        )
        assert answer["error_code"] == 0
        assert 0 < answer["session_lifetime_ms"] <= 600_000
        refused = await raw.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\x00svc\x00x"})
        assert refused["error_code"] == ErrorCode.ILLEGAL_SASL_STATE  # no handshake before it
    finally:
        await raw.close()


async def _login(port: int, key: str) -> RawKafka:
    raw = await RawKafka.connect(port)
    await raw.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
    answer = await raw.call(
        ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\x00u\x00" + key.encode()}
    )
    assert answer["error_code"] == 0
    return raw


async def test_a_producer_id_belongs_to_its_principal(secured: str, app: Starlette) -> None:
    ctx: Context = app.state.logway
    await ctx.backend.create_topic("orders", 1, TopicConfig())
    port = int(secured.rsplit(":", 1)[1])
    owner, other = await _login(port, WRITER_KEY), await _login(port, ADMIN_KEY)
    try:
        init = await owner.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None})
        pid = init["producer_id"]
        stolen = produced_batch([(None, b"x", [])], producer_id=pid, producer_epoch=5,
                                base_sequence=0)  # fmt: skip
        request = {"acks": -1, "timeout_ms": 1000, "topic_data": [
            {"name": "orders", "partition_data": [{"index": 0, "records": stolen}]}]}  # fmt: skip
        answer = await other.call(ApiKey.PRODUCE, 9, request)
        refused = answer["responses"][0]["partition_responses"][0]
        assert refused["error_code"] == ErrorCode.INVALID_PRODUCER_ID_MAPPING
        bump = await other.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None,
                                                             "producer_id": pid,
                                                             "producer_epoch": 0})  # fmt: skip
        assert bump["error_code"] == ErrorCode.INVALID_PRODUCER_ID_MAPPING
        mine = produced_batch([(None, b"y", [])], producer_id=pid, producer_epoch=0,
                              base_sequence=0)  # fmt: skip
        request["topic_data"][0]["partition_data"][0]["records"] = mine  # type: ignore[index]
        answer = await owner.call(ApiKey.PRODUCE, 9, request)
        assert answer["responses"][0]["partition_responses"][0]["error_code"] == 0
    finally:
        await owner.close()
        await other.close()
    assert [r.value for r in await ctx.backend.read("orders", 0, 0, 10, 1 << 20)] == [b"y"]
