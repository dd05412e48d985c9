"""Idle connections, connection caps and the descriptor reserve (issue 18, item 4).

The outside probe held 20,600 TCP connections that sent nothing for minutes; the gateway
ran out of file descriptors and /healthz, topic creation and produce all timed out ("Too
many open files"). Here attackers connect from 127.0.0.2, 127.0.0.3... (Linux routes all
of 127/8 to loopback) and the well-behaved client from 127.0.0.1; the gateway runs with a
small open-files limit so that "thousands" is enough to reach it.
"""

from __future__ import annotations

import functools
import resource
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import ConfigError, validate
from gateway.connections import (
    REQUEST_MIN_BYTES,
    ConnectionRules,
    DescriptorShortage,
    Peer,
    Reason,
    descriptor_budget,
)
from gateway.http.proxy import parse_networks
from gateway.settings import Settings
from tests.e2e.conftest import (
    LOGWAY,
    SERVERS,
    GatewayFactory,
    free_port,
    start_gateway,  # noqa: F401 (a fixture)
)
from tests.security.transport import (
    API_KEY,
    GUARD_S,
    H2_PREFACE,
    RawH2,
    auth_config,
    closed_by_server,
    connect_many,
    create_and_produce,
    eventually,
    open_fd_count,
    raise_own_fd_limit,
    silent_flood,
    wait_until_closed,
)

ATTACKERS = ("127.0.0.2", "127.0.0.3")
PER_CLIENT_DEFAULT = Settings().max_connections_per_client


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    """Both HTTP servers: each has its own gaps (see gateway/connections.py)."""
    name: str = request.param
    return name


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _still_open(sockets: list[socket.socket]) -> int:
    return sum(not closed_by_server(s) for s in sockets)


# -- against a real gateway ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_connections_that_send_no_request_are_closed(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
) -> None:
    """With the default request_head_timeout_s (10 s): nothing, or less than a request."""
    gateway = start_gateway()
    port = _port(gateway.url)
    payloads = {
        "nothing": b"",
        "one byte of the h2 preface": b"P",
        "most of the h2 preface": H2_PREFACE[:20],
        "half an HTTP/1.1 head": b"GET /healthz HTTP/1.1\r\nHost: a\r\n",
    }
    sockets = {name: connect_many(port, ATTACKERS[0], 1, p)[0] for name, p in payloads.items()}
    try:
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
        closed = wait_until_closed(list(sockets.values()))
        assert dict(zip(sockets, closed, strict=True)) == dict.fromkeys(sockets, True)
    finally:
        for sock in sockets.values():
            sock.close()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_idle_connections_are_closed_streams_are_not(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """HTTP/2 connections with no stream left (after a 401 or a refused stream, or none
    ever opened) and HTTP/1.1 ones after a 429 are closed; a stream with nothing to say is
    not."""
    config = auth_config(tmp_path, "max_streams_per_client = 1\n")
    gateway = start_gateway(
        "--config", str(config),
        "--request-head-timeout-s", "2",
        "--connection-idle-timeout-s", "3",
        "--heartbeat-s", "1",
    )  # fmt: skip
    port = _port(gateway.url)
    key = {"X-API-Key": API_KEY}
    events = "/v1/topics/quiet/events"
    sse = {"Accept": "text/event-stream"}
    with httpx.Client(base_url=gateway.url, headers=key, timeout=GUARD_S) as client:
        assert client.put("/v1/topics/quiet", json={"partitions": 1}).status_code == 201
        with client.stream("GET", events, headers=sse) as stream:
            assert stream.status_code == 200
            refused_h1 = socket.create_connection(("127.0.0.1", port))  # 429 too-many-streams
            request = f"GET {events} HTTP/1.1\r\nHost: a\r\nX-API-Key: {API_KEY}\r\n\r\n"
            refused_h1.sendall(request.encode())
            # refused by the stream limit; an SSE request, so told to retry with a 200
            # (gateway/http/event_source.py) rather than a 429
            h2_refused = RawH2.connect(port)
            h2_refused.request(events, [(b"x-api-key", API_KEY.encode())], b"", 0)
            h2_unauthenticated = RawH2.connect(port)  # 401
            h2_unauthenticated.request("/v1/topics", [], b"", 0)
            h2_no_stream = RawH2.connect(port)
            connections = [h2_refused, h2_unauthenticated, h2_no_stream]
            deadline = time.monotonic() + GUARD_S
            while time.monotonic() < deadline and not all(c.closed for c in connections):
                for connection in connections:
                    connection.pump(0.05)
            refused_h1_closed = wait_until_closed([refused_h1])[0]
            for connection in connections:
                connection.close()
            refused_h1.close()
            assert h2_refused.outcomes["status 200"] == 1, h2_refused.outcomes
            assert h2_unauthenticated.outcomes["status 401"] == 1
            assert [c.closed for c in connections] == [True, True, True]
            assert refused_h1_closed
            # the stream lived through all of it, on heartbeats: a record still arrives
            record = {"records": [{"value": 1}]}
            response = client.post(events.replace("events", "records"), json=record)
            assert response.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    assert '"value":1' in line.replace(" ", "")
                    break


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.xdist_group("descriptors")
def test_thousands_of_idle_connections_leave_healthz_topics_and_produce_working(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
) -> None:
    """Two addresses open 2,500 connections each (HTTP/2 preface, then nothing), more than
    the gateway's 4,096 open files: each keeps max_connections_per_client (1,000);
    everyone else, and the log, keep working."""
    per_attacker = 2500
    raise_own_fd_limit(len(ATTACKERS) * per_attacker + 1024)
    gateway = start_gateway(fd_limit=4096)
    port = _port(gateway.url)
    attack = [connect_many(port, source, per_attacker, H2_PREFACE) for source in ATTACKERS]
    try:
        with httpx.Client(base_url=gateway.url, timeout=GUARD_S) as client:
            assert eventually(lambda: client.get("/healthz")).status_code == 200
            response = eventually(lambda: client.put("/v1/topics/alive", json={"partitions": 8}))
            assert response.status_code == 201
            record = {"records": [{"value": 1}]}
            response = eventually(lambda: client.post("/v1/topics/alive/records", json=record))
            assert response.status_code == 200
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline:
            still_open = [_still_open(sockets) for sockets in attack]
            if max(still_open) <= PER_CLIENT_DEFAULT:
                break
            time.sleep(0.2)
        print(
            f"\n{gateway.server}: {per_attacker} connections from each of {ATTACKERS}: "
            f"{still_open} left open by the gateway; gateway descriptors "
            f"{open_fd_count(gateway.pid)} of 4096"
        )
        assert max(still_open) <= PER_CLIENT_DEFAULT
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    finally:
        for sockets in attack:
            for sock in sockets:
                sock.close()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.xdist_group("descriptors")
def test_the_log_keeps_its_descriptors_when_connections_take_the_rest(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
) -> None:
    """2,100 silent connections from 30 addresses (70 each: under the per-client cap),
    more than the gateway's 2,048 open files, of which it keeps 1,024 for the log: a
    client connected before creates 4 topics of 8 partitions and produces to each; new
    connections get in again once the silent ones are closed (request_head_timeout_s)."""
    raise_own_fd_limit(4000)
    gateway = start_gateway(fd_limit=2048)
    port = _port(gateway.url)
    with httpx.Client(base_url=gateway.url, timeout=GUARD_S) as client:
        assert client.get("/healthz").status_code == 200  # connected before the flood
        with silent_flood(port):
            time.sleep(1)  # let the server take what it will
            flooded_fds = open_fd_count(gateway.pid)
            create_and_produce(client)
            print(
                f"\n{gateway.server}: 2,100 silent connections: gateway descriptors "
                f"{flooded_fds} of 2048 during the flood, {open_fd_count(gateway.pid)} with "
                "4 new topics of 8 partitions"
            )
    assert eventually(lambda: httpx.get(f"{gateway.url}/healthz", timeout=2)).status_code == 200


@pytest.mark.e2e
def test_serve_refuses_to_start_when_the_limit_leaves_no_room(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(LOGWAY), "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        preexec_fn=functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, (256, 256)),
    )
    assert result.returncode == 1
    assert "leaves no descriptor for connections" in result.stderr
    assert "reserved_fds is 1024" in result.stderr


# -- the rules, in-process ------------------------------------------------------------------


def _peer(fd: int, host: str, *, received: int, quiet_ms: int, age_ms: int = 0) -> Peer:
    """A connection from `host` that received `received` bytes, silent for `quiet_ms`."""
    last_received = age_ms if received == 0 else quiet_ms
    return Peer(fd, (host, 40000 + fd), quiet_ms, last_received, received)


def test_rules_close_what_never_asked_after_the_head_timeout() -> None:
    rules = ConnectionRules(head_timeout_s=10, idle_timeout_s=75, per_client=0)
    young = _peer(1, "10.0.0.1", received=0, quiet_ms=9_000, age_ms=9_000)
    old = _peer(2, "10.0.0.1", received=0, quiet_ms=10_000, age_ms=10_000)
    asked = _peer(3, "10.0.0.1", received=REQUEST_MIN_BYTES, quiet_ms=60_000)
    assert rules.decide([young, old, asked], now=100.0) == [(old, Reason.NO_REQUEST)]
    # a trickle of bytes does not make a connection younger: the first sighting dates it
    trickling = _peer(1, "10.0.0.1", received=5, quiet_ms=0)
    assert rules.decide([trickling], now=101.5) == [(trickling, Reason.NO_REQUEST)]


def test_rules_close_idle_connections_but_not_quiet_ones() -> None:
    rules = ConnectionRules(head_timeout_s=10, idle_timeout_s=75, per_client=0)
    idle = _peer(1, "10.0.0.1", received=500, quiet_ms=75_000)
    streaming = Peer(2, ("10.0.0.1", 2), 1_000, 300_000, 500)  # heartbeats go out
    stalled = Peer(3, ("10.0.0.1", 3), 90_000, 90_000, 500, queued=True)  # client stopped reading
    assert rules.decide([idle, streaming, stalled], now=0.0) == [(idle, Reason.IDLE)]


def test_rules_cap_each_client_closing_the_newest_quiet_connections() -> None:
    rules = ConnectionRules(
        head_timeout_s=10, idle_timeout_s=75, per_client=2, trusted=parse_networks(["10.9.0.0/16"])
    )
    busy = [_peer(fd, "10.0.0.1", received=900, quiet_ms=10) for fd in (1, 2)]
    silent_old = _peer(3, "10.0.0.1", received=0, quiet_ms=5_000, age_ms=5_000)
    silent_new = _peer(4, "10.0.0.1", received=0, quiet_ms=100, age_ms=100)
    quiet = _peer(5, "10.0.0.1", received=900, quiet_ms=2_000)
    proxy = [_peer(fd, "10.9.0.1", received=0, quiet_ms=1, age_ms=1) for fd in range(10, 20)]
    ipv6 = [_peer(fd, f"2001:db8::{fd}", received=0, quiet_ms=1, age_ms=1) for fd in (30, 31, 32)]
    decided = rules.decide([*busy, silent_old, silent_new, quiet, *proxy, *ipv6], now=0.0)
    # 10.0.0.1 holds 5: the 3 beyond the cap are the silent ones (newest first), then the
    # quiet one; the busy ones stay. The trusted proxy is not capped; one IPv6 /64 is.
    assert decided == [
        (silent_new, Reason.OVER_CAP),
        (silent_old, Reason.OVER_CAP),
        (quiet, Reason.OVER_CAP),
        (ipv6[0], Reason.OVER_CAP),
    ]


def test_budget_leaves_reserved_fds_to_the_log() -> None:
    settings = Settings(reserved_fds=1024, max_connections=100_000)
    budget = descriptor_budget(settings, fd_limit=4096, in_use=40)
    assert budget.connections == 4096 - 40 - 1024
    assert budget.fd_ceiling == 4096 - 1024
    capped = descriptor_budget(Settings(max_connections=100), fd_limit=4096, in_use=40)
    assert capped.connections == 100
    with pytest.raises(DescriptorShortage, match="reserved_fds"):
        descriptor_budget(settings, fd_limit=1024, in_use=40)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"connection_idle_timeout_s": 10.0}, "connection_idle_timeout_s"),  # < heartbeat_s
        ({"max_request_head_bytes": 4096}, "max_request_head_bytes"),
        ({"request_head_timeout_s": 0.0}, "request_head_timeout_s"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_connections_per_client": -1}, "max_connections_per_client"),
        ({"reserved_fds": -1}, "reserved_fds"),
        ({"h2_max_concurrent_streams": 0}, "h2_max_concurrent_streams"),
    ],
)
def test_connection_settings_are_checked_at_start(changes: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        validate(replace(Settings(), **changes))
