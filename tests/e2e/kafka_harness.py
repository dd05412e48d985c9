"""A real `logway serve --kafka-port` for the Kafka end-to-end tests, and what they share.

The HTTP server does not matter to the Kafka listener, so these tests run on the default
(Granian) only: test modules set `server` with `pytest.fixture(name="server")` below.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Gateway, GatewayFactory, free_port

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


@dataclass
class KafkaGateway:
    gateway: Gateway
    kafka_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def url(self) -> str:
        return self.gateway.url


def start_kafka_gateway(
    start_gateway: GatewayFactory,
    *extra_args: str,
    kafka_port: int | None = None,
    data_dir: Path | None = None,
    port: int | None = None,
) -> KafkaGateway:
    """A gateway with the Kafka listener on `kafka_port` (a free one by default)."""
    kafka_port = kafka_port or free_port()
    gateway = start_gateway(
        "--kafka-port", str(kafka_port), *extra_args, data_dir=data_dir, port=port
    )
    return KafkaGateway(gateway, kafka_port)


@pytest.fixture(name="server")
def granian_only() -> str:
    return "granian"


def librdkafka_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings for these tests: Java's murmur2 partitioner (librdkafka's own
    default hashes keys with CRC32, so keys would land elsewhere than HTTP puts them)."""
    return {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "socket.connection.setup.timeout.ms": 5000,
        **overrides,
    }


def require_kcat() -> str:
    if KCAT is None:
        pytest.skip("kcat is not installed (Debian package kcat; .ci/run installs it)")
    return KCAT
