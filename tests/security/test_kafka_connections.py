"""What a Kafka client may cost the gateway: frame sizes, silent and trickling
connections, connections per address and in total, failed SASL attempts.

The HTTP side bounds all of these (issue 18, items 2, 4 and 8; test_transport_*.py,
test_auth_failures.py); these are the same attacks on `logway serve --kafka-port`, with
raw sockets from 127.0.0.2, 127.0.0.3... (Linux routes all of 127/8 to loopback) while the
well-behaved client stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import ConfigError, validate
from gateway.connections import descriptor_budget, kafka_connection_share
from gateway.http.proxy import parse_networks
from gateway.kafka.admission import (
    ConnectionCaps,
    Deadline,
    FrameLimits,
    FramesInFlight,
    SaslFailures,
)
from gateway.kafka.dispatch import ApiKey
from gateway.kafka.errors import ErrorCode
from gateway.settings import KiB, MiB, Settings
from tests.e2e.conftest import (
    SERVERS,
    Gateway,
    GatewayFactory,
    free_port,
    start_gateway,  # noqa: F401 (a fixture)
)
from tests.security.kafka_raw import KafkaSocket
from tests.security.transport import (
    API_KEY,
    GUARD_S,
    auth_config,
    closed_by_server,
    create_and_produce,
    open_fd_count,
    raise_own_fd_limit,
    silent_flood,
)

pytest.importorskip("crc32c", reason="the Kafka listener needs the kafka extra")


@pytest.fixture
def server() -> str:
    """The Kafka listener is the same under either HTTP server: the default one."""
    return "granian"


def _kafka_gateway(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    config: Path | None = None,
    fd_limit: int | None = None,
) -> tuple[Gateway, int]:
    kafka_port = free_port()
    args = ["--kafka-port", str(kafka_port)]
    if config is not None:
        args += ["--config", str(config)]
    return start_gateway(*args, fd_limit=fd_limit), kafka_port


@contextmanager
def _connection(port: int, source: str = "127.0.0.1") -> Iterator[KafkaSocket]:
    connection = KafkaSocket(port, source)
    try:
        yield connection
    finally:
        connection.close()


def _answers(connection: KafkaSocket) -> bool:
    """Whether the connection is served (an ApiVersions answered), not reset or closed."""
    try:
        error_code: int = connection.api_versions()["error_code"]
    except OSError:
        return False
    return error_code == ErrorCode.NONE


# -- against a real gateway ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_an_oversized_frame_closes_the_connection_before_its_body_is_read(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Before SASL, a frame beyond 64 KiB; after, one beyond kafka_max_request_bytes (64
    MiB); and size prefixes of 2 GiB: each closes the connection on its prefix alone, so a
    client cannot make the gateway hold a request's worth of memory it may not send.
    Defaults only: main's code read up to 100 MiB per frame, before SASL too."""
    _, kafka_port = _kafka_gateway(start_gateway, auth_config(tmp_path))
    defaults = Settings()
    for prefix in (defaults.kafka_sasl_max_receive_bytes + 1, 0x7FFF_FFFF, -(2**31)):
        with _connection(kafka_port) as attacker:
            attacker.api_versions()  # a connection the listener serves
            attacker.send(struct.pack(">i", prefix) + b"\x00" * 1024)
            assert attacker.wait_until_closed(), f"a frame of {prefix} bytes before SASL"
    with _connection(kafka_port) as principal:
        assert principal.login(API_KEY)["error_code"] == ErrorCode.NONE
        # past SASL, a request beyond the pre-auth bound is served...
        topics = [{"name": f"t{i:05}-" + "x" * 200} for i in range(400)]  # ~84 KiB
        answer = principal.call(ApiKey.METADATA, 4, {"topics": topics})
        assert len(answer["topics"]) == len(topics)
        # ... and one beyond kafka_max_request_bytes is not
        principal.send(struct.pack(">i", defaults.kafka_max_request_bytes + 1) + b"\x00" * 1024)
        assert principal.wait_until_closed()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_silent_trickling_and_idle_kafka_connections_are_closed(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """With auth on, a connection must authenticate within the setup timeout, whether it
    sends nothing, half a frame a byte at a time, or requests that need no SASL; once
    authenticated, it must send a request within the idle timeout. One that does stays."""
    config = auth_config(
        tmp_path,
        "kafka_connection_setup_timeout_ms = 1000\nkafka_connections_max_idle_ms = 4000\n",
    )
    _, kafka_port = _kafka_gateway(start_gateway, config)
    with (
        _connection(kafka_port, "127.0.0.2") as silent,
        _connection(kafka_port, "127.0.0.2") as trickling,
        _connection(kafka_port, "127.0.0.2") as unauthenticated,
        _connection(kafka_port, "127.0.0.2") as idle,
        _connection(kafka_port) as active,
    ):
        assert idle.login(API_KEY)["error_code"] == ErrorCode.NONE
        assert active.login(API_KEY)["error_code"] == ErrorCode.NONE
        # a frame that takes longer to trickle (a byte per loop) than the test may run
        frame = trickling.frame(ApiKey.API_VERSIONS, 3, {"client_software_name": "s" * 500})
        open_ones = {"silent": silent, "trickling": trickling,
                     "unauthenticated": unauthenticated, "idle": idle}  # fmt: skip
        sent = 0
        deadline = time.monotonic() + GUARD_S
        while open_ones and time.monotonic() < deadline:
            if "trickling" in open_ones:
                with contextlib.suppress(OSError):  # closed by the server meanwhile
                    trickling.send(frame[sent : sent + 1])
                sent += 1
            if "unauthenticated" in open_ones:
                assert _answers(unauthenticated) or unauthenticated.closed_by_server()
            answer = active.call(ApiKey.METADATA, 4, {"topics": None})
            assert answer["brokers"], "the active connection is served throughout"
            for name, connection in list(open_ones.items()):
                if connection.closed_by_server():
                    del open_ones[name]
            time.sleep(0.2)
        assert not open_ones, f"still open: {sorted(open_ones)}"
        assert sent < len(frame)  # closed while trickling
        assert active.call(ApiKey.METADATA, 4, {"topics": None})["brokers"]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_kafka_connections_are_capped_per_address_and_in_total(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    config = tmp_path / "caps.toml"
    config.write_text("kafka_max_connections = 12\nkafka_max_connections_per_client = 5\n")
    gateway, kafka_port = _kafka_gateway(start_gateway, config)
    held: dict[str, list[KafkaSocket]] = {}
    try:

        def served(source: str, count: int) -> int:
            connections = held.setdefault(source, [])
            before = len(connections)
            for _ in range(count):
                # a busy machine may see the gateway's reset before connect() returns
                with contextlib.suppress(ConnectionResetError):
                    connections.append(KafkaSocket(kafka_port, source))
            return sum(_answers(c) for c in connections[before:])  # in connect order

        assert served("127.0.0.2", 8) == 5  # the per-address cap
        assert served("127.0.0.3", 8) == 5
        assert served("127.0.0.4", 5) == 2  # the total: 12
        assert httpx.get(f"{gateway.url}/healthz", timeout=GUARD_S).status_code == 200
        for connection in held.pop("127.0.0.2"):  # it leaves: its 5 places are free again
            connection.close()
        deadline = time.monotonic() + GUARD_S
        while (again := served("127.0.0.4", 1)) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # until the gateway has seen the closes
        assert again == 1
    finally:
        for connections in held.values():
            for connection in connections:
                connection.close()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.xdist_group("descriptors")  # fills the descriptor budget: not beside other such tests
@pytest.mark.parametrize("server", SERVERS)  # each caps HTTP its own way (connections.py)
def test_a_kafka_flood_leaves_http_and_the_log_their_descriptors(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
) -> None:
    """2,100 silent Kafka connections from 30 addresses (70 each: under every per-address
    cap), more than the gateway's 2,048 open files: the Kafka listener keeps its share
    of the budget (half of what reserved_fds leaves: 512) and resets the rest, so new
    HTTP connections get /healthz and the log opens 4 topics of 8 partitions."""
    raise_own_fd_limit(4000)
    gateway, kafka_port = _kafka_gateway(start_gateway, fd_limit=2048)
    share = kafka_connection_share(replace(Settings(), kafka_port=kafka_port), 2048)
    with silent_flood(kafka_port) as attack:
        time.sleep(1)  # let the server take what it will
        flooded_fds = open_fd_count(gateway.pid)
        with httpx.Client(base_url=gateway.url, timeout=GUARD_S) as client:  # connects now
            assert client.get("/healthz").status_code == 200
            create_and_produce(client)
        still_open = sum(not closed_by_server(sock) for sock in attack)
        print(
            f"\n2,100 silent Kafka connections: {still_open} held by the gateway (share "
            f"{share}); gateway descriptors {flooded_fds} of 2048 during the flood, "
            f"{open_fd_count(gateway.pid)} with 4 new topics of 8 partitions"
        )
        assert still_open <= share


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_failed_sasl_authentications_are_limited_per_address(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """After auth_failure_burst wrong passwords from one address, even the right one is
    refused there (the credential is not looked at); another address is not affected.
    Each failure ends its connection, as in Kafka."""
    config = auth_config(tmp_path, "auth_failure_burst = 3\nauth_failure_limit_per_s = 0.01\n")
    _, kafka_port = _kafka_gateway(start_gateway, config)
    for attempt in range(3):
        with _connection(kafka_port, "127.0.0.2") as guesser:
            answer = guesser.login(f"lw_guess_{attempt}_0123456789abcdef")
            assert answer["error_code"] == ErrorCode.SASL_AUTHENTICATION_FAILED
            assert guesser.wait_until_closed()
    with _connection(kafka_port, "127.0.0.2") as guesser:
        answer = guesser.login(API_KEY)
        assert answer["error_code"] == ErrorCode.SASL_AUTHENTICATION_FAILED
        assert "too many failed authentications" in answer["error_message"]
    with _connection(kafka_port) as other:
        assert other.login(API_KEY)["error_code"] == ErrorCode.NONE
        assert other.call(ApiKey.METADATA, 4, {"topics": None})["brokers"]


# -- the rules, in-process ------------------------------------------------------------------


def test_caps_count_per_address_and_in_total_and_exempt_trusted_proxies() -> None:
    caps = ConnectionCaps(total=6, per_client=2, trusted=parse_networks(["10.9.0.0/16"]))
    assert [caps.admit("10.0.0.1") for _ in range(2)] == [None, None]
    assert "kafka_max_connections_per_client" in (caps.admit("10.0.0.1") or "")
    assert [caps.admit("2001:db8::1") for _ in range(2)] == [None, None]
    assert "kafka_max_connections_per_client" in (caps.admit("2001:db8::2") or "")  # one /64
    assert [caps.admit("10.9.0.1") for _ in range(2)] == [None, None]  # a trusted proxy
    assert "kafka_max_connections" in (caps.admit("10.0.0.2") or "")
    caps.release("10.0.0.1")
    assert caps.admit("10.0.0.1") is None


def test_frames_are_bounded_by_their_prefix_smaller_before_sasl() -> None:
    limits = FrameLimits(authenticated_bytes=1 * MiB, unauthenticated_bytes=64 * KiB)
    assert limits.refusal(64 * KiB, authenticated=False) is None
    assert "kafka_sasl_max_receive_bytes" in (limits.refusal(64 * KiB + 1, False) or "")
    assert limits.refusal(1 * MiB, authenticated=True) is None
    for size in (1 * MiB + 1, 0, -1, -(2**31), 2**31 - 1):
        assert limits.refusal(size, authenticated=True) is not None


async def test_a_connection_holds_at_most_one_largest_frame_in_flight() -> None:
    in_flight = FramesInFlight(limit=100)
    await in_flight.take(60)
    await in_flight.take(40)  # pipelined: fits
    waiting = asyncio.ensure_future(in_flight.take(100))  # one alone would fit, not beside
    await asyncio.sleep(0)
    in_flight.give_back(60)
    await asyncio.sleep(0)
    assert not waiting.done()
    in_flight.give_back(40)
    await asyncio.wait_for(waiting, GUARD_S)
    assert in_flight.held == 100


def test_the_deadline_runs_from_the_opening_then_from_the_last_request_never_mid_answer() -> None:
    deadline = Deadline(setup_s=10, idle_s=600, opened_at=100.0, last_active_at=100.0)
    assert deadline.expires_at() == 110.0
    deadline.active(105.0, set_up=False)  # ApiVersions before SASL: still setting up
    assert deadline.expires_at() == 110.0
    deadline.active(106.0, set_up=True)
    assert deadline.expires_at() == 706.0
    deadline.answering = 1  # a Fetch waiting for records
    assert deadline.expires_at() is None


def test_sasl_failures_take_from_a_bucket_per_address() -> None:
    failures = SaslFailures(rate_per_s=1.0, burst=2)
    for _ in range(2):
        failures.failed("10.0.0.1", now=0.0)
    assert failures.wait_s("10.0.0.1", now=0.0) > 0
    assert failures.wait_s("10.0.0.2", now=0.0) == 0
    assert failures.wait_s("10.0.0.1", now=1.0) == 0
    assert SaslFailures(rate_per_s=0.0, burst=1).wait_s("10.0.0.1", now=0.0) == 0  # off


def test_kafka_takes_its_share_of_the_descriptor_budget_from_http() -> None:
    settings = Settings(reserved_fds=1024, kafka_port=9092)
    assert kafka_connection_share(settings, fd_limit=2048) == 512  # half of what is left
    assert kafka_connection_share(replace(settings, kafka_max_connections=100), 2048) == 100
    assert kafka_connection_share(replace(settings, kafka_port=None), 2048) == 0
    budget = descriptor_budget(settings, fd_limit=2048, in_use=40)
    assert (budget.connections, budget.kafka_connections) == (2048 - 40 - 1024 - 512, 512)
    assert budget.fd_ceiling == 2048 - 1024


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"kafka_max_request_bytes": 0}, "kafka_max_request_bytes"),
        ({"kafka_sasl_max_receive_bytes": 0}, "kafka_sasl_max_receive_bytes"),
        ({"kafka_connection_setup_timeout_ms": 0}, "kafka_connection_setup_timeout_ms"),
        ({"kafka_connections_max_idle_ms": 0}, "kafka_connections_max_idle_ms"),
        ({"kafka_max_connections": 0}, "kafka_max_connections"),
        ({"kafka_max_connections_per_client": -1}, "kafka_max_connections_per_client"),
    ],
)
def test_kafka_connection_settings_are_checked_at_start(changes: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        validate(replace(Settings(), **changes))


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_kafka_python_lives_within_the_bounds_and_reconnects_after_an_idle_close(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """A client nobody here wrote (kafka-python), over SASL/PLAIN, with a short idle
    timeout and a small per-address cap: it produces, sits idle until the gateway closes
    its connections, produces again on new ones, and a consumer group reads everything."""
    from kafka import KafkaConsumer, KafkaProducer

    config = auth_config(
        tmp_path, "kafka_connections_max_idle_ms = 2000\nkafka_max_connections_per_client = 10\n"
    )
    gateway, kafka_port = _kafka_gateway(start_gateway, config)
    with httpx.Client(base_url=gateway.url, headers={"X-API-Key": API_KEY}) as client:
        assert client.put("/v1/topics/orders", json={"partitions": 3}).status_code == 201
    sasl = {"bootstrap_servers": f"127.0.0.1:{kafka_port}", "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN", "sasl_plain_username": "svc",
            "sasl_plain_password": API_KEY}  # fmt: skip
    producer = KafkaProducer(acks="all", retries=5, **sasl)
    try:
        first = [producer.send("orders", key=b"k%d" % i, value=b"a%d" % i) for i in range(30)]
        assert all(f.get(timeout=GUARD_S) for f in first)
        deadline = time.monotonic() + GUARD_S
        while "kafka_connections_max_idle_ms" not in gateway.log():
            assert time.monotonic() < deadline, "the gateway never closed the idle producer"
            time.sleep(0.2)
        second = [producer.send("orders", key=b"k%d" % i, value=b"b%d" % i) for i in range(30)]
        assert all(f.get(timeout=GUARD_S) for f in second)
    finally:
        producer.close()
    consumer = KafkaConsumer("orders", group_id="billing", auto_offset_reset="earliest",
                             consumer_timeout_ms=int(GUARD_S * 1000), **sasl)  # fmt: skip
    try:
        values = set()
        for message in consumer:
            values.add(message.value)
            if len(values) == 60:
                break
        consumer.commit()
    finally:
        consumer.close()
    assert values == {b"a%d" % i for i in range(30)} | {b"b%d" % i for i in range(30)}
