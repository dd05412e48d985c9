"""librdkafka against a gateway killed with -9 mid-stream, and SASL/PLAIN over a real
listener with auth on (API keys in a TOML file, as an operator configures them)."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import KafkaError, Message, Producer

from tests.e2e.conftest import GatewayFactory, create_topic, pull_all
from tests.e2e.kafka_harness import granian_only, librdkafka_config, start_kafka_gateway

pytestmark = pytest.mark.e2e
server = granian_only
TIMEOUT_S = 60.0  # guards against hanging only; nothing asserts a duration
RECORDS = 30_000
PARTITIONS = 3


@pytest.mark.slow
def test_every_successful_delivery_survives_kill_9(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    first = start_kafka_gateway(start_gateway)
    http_port = int(first.url.rsplit(":", 1)[1])
    with httpx.Client(base_url=first.url, timeout=TIMEOUT_S) as client:
        create_topic(client, "durable", PARTITIONS)
    producer = Producer(
        librdkafka_config(first.bootstrap, **{
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": int(TIMEOUT_S * 1000),
            "reconnect.backoff.max.ms": 200,
        })
    )  # fmt: skip
    delivered: dict[tuple[int, int], bytes] = {}
    failed: list[KafkaError] = []
    lock = threading.Lock()

    def report(error: KafkaError | None, message: Message) -> None:
        with lock:
            if error is not None:
                failed.append(error)
                return
            partition, offset, value = message.partition(), message.offset(), message.value()
            assert partition is not None
            assert offset is not None
            assert value is not None
            delivered[(partition, offset)] = value

    killed_after = 0
    for i in range(RECORDS):
        producer.produce("durable", b"%d" % i, b"key-%d" % (i % 97), on_delivery=report)
        producer.poll(0)
        if i == RECORDS // 3:
            deadline = time.monotonic() + TIMEOUT_S
            while len(delivered) < RECORDS // 10 and time.monotonic() < deadline:
                producer.poll(0.05)
            killed_after = len(delivered)
            first.gateway.kill()  # kill -9 while batches are in flight
        if i == RECORDS // 2:
            start_kafka_gateway(
                start_gateway,
                kafka_port=first.kafka_port,
                data_dir=first.gateway.data_dir,
                port=http_port,
            )
    assert producer.flush(TIMEOUT_S) == 0
    assert killed_after > 0
    assert len(delivered) > killed_after  # the producer carried on after the restart
    with httpx.Client(base_url=first.url, timeout=TIMEOUT_S) as client:
        stored = {
            (p, record["offset"]): record
            for p in range(PARTITIONS)
            for record in pull_all(client, "durable", p)
        }
    missing = [where for where in delivered if where not in stored]
    assert missing == []
    for where, value in delivered.items():
        assert stored[where]["value"] == int(value)  # the digits are JSON: a number
    # a batch in flight at the kill may have been written and then retried (at least once)
    assert len(stored) >= len({v for v in delivered.values()})


def _keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    digest = hashlib.sha256(b"lw_services_key").hexdigest()
    path.write_text(
        f'[keys.payments]\nsha256 = "{digest}"\npermissions = ["admin:topic:payments*"]\n'
    )
    return path


def test_librdkafka_sasl_plain_uses_the_gateways_api_keys(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = tmp_path / "logway.toml"
    config.write_text(f'auth_api_keys_file = "{_keys_file(tmp_path)}"\nauto_create_topics = true\n')
    gateway = start_kafka_gateway(start_gateway, "--config", str(config))

    def producer(password: str) -> Producer:
        return Producer(
            librdkafka_config(gateway.bootstrap, **{
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "PLAIN",
                "sasl.username": "payments",
                "sasl.password": password,
                "message.timeout.ms": 5000,
            })
        )  # fmt: skip

    outcomes: dict[str | None, KafkaError | None] = {}

    def report(error: KafkaError | None, message: Message) -> None:
        outcomes[message.topic()] = error

    allowed = producer("lw_services_key")
    allowed.produce("payments", b'{"amount": 5}', on_delivery=report)
    allowed.produce("orders", b"{}", on_delivery=report)
    assert allowed.flush(TIMEOUT_S) == 0
    assert outcomes["payments"] is None
    refused = outcomes["orders"]
    assert refused is not None
    assert refused.code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    )

    errors: list[KafkaError] = []
    stranger = Producer(
        librdkafka_config(gateway.bootstrap, **{
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": "payments",
            "sasl.password": "wrong",
            "error_cb": errors.append,
        })
    )  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    while not errors and time.monotonic() < deadline:
        stranger.poll(0.1)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    stranger.flush(0)
    with httpx.Client(
        base_url=gateway.url, timeout=TIMEOUT_S, headers={"X-API-Key": "lw_services_key"}
    ) as client:
        partitions = client.get("/v1/topics/payments").json()["partitions"]
        values = [
            r["value"] for p in partitions for r in pull_all(client, "payments", p["partition"])
        ]
        assert values == [{"amount": 5}]
