"""A Kafka listener on a free loopback port, in the test's event loop, over the same app
(and embedded backend in tmp_path) as the in-process HTTP client, and a raw connection
that speaks frames built with the listener's own codec (for the error paths no client
library will produce; the happy paths are driven by aiokafka and kafka-python)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from starlette.applications import Starlette

from gateway.context import Context
from gateway.kafka.dispatch import ApiKey
from gateway.kafka.server import KafkaListener, start_listener
from gateway.settings import Settings
from tests.gateway.kafka.frames import request_frame, response_body


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # reserved_fds is the gateway process's; this test process's open-files limit (1,024
    # on many machines) would leave the listener no connection share
    return replace(settings, kafka_port=0, reserved_fds=0)


@pytest.fixture
async def kafka(app: Starlette) -> AsyncIterator[KafkaListener]:
    ctx: Context = app.state.logway
    listener = await start_listener(ctx)
    try:
        yield listener
    finally:
        await listener.close()


@pytest.fixture
def bootstrap(kafka: KafkaListener) -> str:
    return f"127.0.0.1:{kafka.port}"


class RawKafka:
    """One connection; `call` sends a request and decodes its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.correlation_id = 0

    @classmethod
    async def connect(cls, port: int) -> RawKafka:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def frame(self, key: ApiKey, version: int, body: dict[str, Any]) -> bytes:
        self.correlation_id += 1
        return request_frame(key, version, self.correlation_id, body, "raw")

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self) -> bytes:
        (size,) = struct.unpack(">i", await self.reader.readexactly(4))
        return await self.reader.readexactly(size)

    async def call(self, key: ApiKey, version: int, body: dict[str, Any]) -> dict[str, Any]:
        await self.send(self.frame(key, version, body))
        return self.decode(key, version, await self.read_frame())

    def decode(self, key: ApiKey, version: int, frame: bytes) -> dict[str, Any]:
        correlation_id, body = response_body(key, version, frame)
        assert correlation_id == self.correlation_id
        return body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def raw(kafka: KafkaListener) -> AsyncIterator[RawKafka]:
    connection = await RawKafka.connect(kafka.port)
    try:
        yield connection
    finally:
        await connection.close()
