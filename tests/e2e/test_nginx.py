"""A real nginx, configured from docs/deploy/nginx.conf, in front of a real gateway.

nginx speaks HTTP/2 over TLS to the client and HTTP/1.1 keep-alive to the gateway, under
the prefix /logway/. The config is the documented file with only its ports, file paths and
`proxy_read_timeout` substituted (tests/e2e/proxies.py: each replaced line must be in the
file, so the test breaks when the template drifts), plus `proxy_bind 127.0.0.2` so the
gateway can tell nginx (trusted: LOGWAY_TRUSTED_PROXIES=127.0.0.2) from a direct client on
127.0.0.1. tests/e2e/test_proxies.py runs the same file through restarts and outages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway, GatewayFactory, SseEvent, sse_events
from tests.e2e.js_harness import gateway_port
from tests.e2e.proxies import PREFIX, Proxy, assert_idle_stream_outlives, executable, start_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROXY_READ_TIMEOUT_S = 2
HEARTBEAT_S = 0.5
PROXY_SOURCE = "127.0.0.2"  # nginx connects to the gateway from here (Linux routes all 127/8)
READ_TIMEOUT_S = 30.0  # a guard against hanging only; nothing asserts a duration
SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def proxied(
    request: pytest.FixtureRequest,
    start_gateway: GatewayFactory,
    tls_cert: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Proxy, Gateway]]:
    """A gateway that trusts 127.0.0.2 and logs JSON access lines, and nginx in front of it.

    Indirect parameters: more {template line: replacement} for one test.
    """
    if executable("nginx") is None:
        pytest.skip("nginx is not installed (Debian package `nginx`; .ci/run installs it)")
    monkeypatch.setenv("LOGWAY_TRUSTED_PROXIES", PROXY_SOURCE)
    monkeypatch.setenv("LOGWAY_ACCESS_LOG_JSON", "true")
    gateway = start_gateway("--heartbeat-s", str(HEARTBEAT_S))
    extra = {
        "proxy_read_timeout 75s;": f"proxy_read_timeout {PROXY_READ_TIMEOUT_S}s;",
        "proxy_http_version 1.1;": f"proxy_http_version 1.1;\n            proxy_bind {PROXY_SOURCE};",
        **getattr(request, "param", {}),
    }
    nginx = start_proxy("nginx", tmp_path / "nginx", [gateway_port(gateway)], tls_cert, extra)
    try:
        yield nginx, gateway
    finally:
        nginx.stop()


def _client(nginx: Proxy, tls_cert: tuple[Path, Path]) -> httpx.AsyncClient:
    import ssl

    return httpx.AsyncClient(
        base_url=nginx.url,
        http2=True,
        verify=ssl.create_default_context(cafile=str(tls_cert[0])),
        timeout=READ_TIMEOUT_S,
    )


async def _produce(client: httpx.AsyncClient, topic: str, values: list[int]) -> None:
    response = await client.post(
        f"/v1/topics/{topic}/records",
        json={"records": [{"value": v, "partition": v % 2} for v in values]},
    )
    assert response.status_code == 200, response.text


async def _records(response: httpx.Response, count: int) -> list[SseEvent]:
    got: list[SseEvent] = []
    async with asyncio.timeout(READ_TIMEOUT_S):
        async for event in sse_events(response):
            if event.event == "record":
                got.append(event)
                if len(got) == count:
                    return got
    raise AssertionError(f"the stream ended after {len(got)} of {count} records")


def _access_lines(gateway: Gateway) -> list[dict[str, Any]]:
    lines = []
    for line in gateway.log().splitlines():
        if line.startswith("{") and '"route"' in line:
            lines.append(json.loads(line))
    return lines


async def test_streams_through_nginx_over_h2_and_resume_with_last_event_id(
    proxied: tuple[Proxy, Gateway], tls_cert: tuple[Path, Path]
) -> None:
    nginx, _ = proxied
    async with _client(nginx, tls_cert) as client:
        created = await client.put("/v1/topics/orders", json={"partitions": 2})
        assert created.status_code == 201, created.text
        assert created.http_version == "HTTP/2"

        async with client.stream("GET", "/v1/topics/orders/events", headers=SSE) as stream:
            assert stream.status_code == 200
            assert stream.http_version == "HTTP/2"
            await _produce(client, "orders", list(range(10)))  # produced while streaming
            first = await _records(stream, 10)
        assert sorted(e.json()["value"] for e in first) == list(range(10))

        await _produce(client, "orders", list(range(10, 20)))  # while no stream is open
        resume = {**SSE, "Last-Event-ID": first[-1].id or ""}
        async with client.stream("GET", "/v1/topics/orders/events", headers=resume) as stream:
            await _produce(client, "orders", list(range(20, 25)))
            rest = await _records(stream, 15)
        # nothing lost, nothing twice across the reconnect through the proxy
        assert sorted(e.json()["value"] for e in rest) == list(range(10, 25))

        # /metrics through the proxy: the real server's fsyncs (--fsync always) are timed
        metrics = (await client.get("/metrics")).text
        fsyncs = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("logway_fsync_duration_seconds_count")
        ]
        assert fsyncs
        assert fsyncs[0] >= 3
        consumed = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith('logway_records_consumed_total{topic="orders"}')
        ]
        # read for streams: at least what they delivered (a closed stream may have read on
        # until the gateway saw the disconnect)
        assert consumed
        assert consumed[0] >= 25


async def test_idle_stream_outlives_proxy_read_timeout(
    proxied: tuple[Proxy, Gateway], tls_cert: tuple[Path, Path]
) -> None:
    nginx, _ = proxied
    async with _client(nginx, tls_cert) as client:
        # two proxy_read_timeouts with no record: only heartbeats arrive
        await assert_idle_stream_outlives(client, 2 * PROXY_READ_TIMEOUT_S + 0.5)


async def test_forwarded_headers_and_prefix_only_from_the_trusted_proxy(
    proxied: tuple[Proxy, Gateway], tls_cert: tuple[Path, Path]
) -> None:
    nginx, gateway = proxied
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Prefix": "/evil",
              "X-Forwarded-Proto": "https"}  # fmt: skip
    async with _client(nginx, tls_cert) as client:
        # through nginx: the prefix is the server URL; a forged X-Forwarded-For from the
        # client is ignored (nginx appends the real address, which is the one believed)
        doc = await client.get("/openapi.json", headers={"X-Forwarded-For": "203.0.113.9"})
        assert doc.status_code == 200
        assert doc.json()["servers"] == [{"url": PREFIX}]
    async with httpx.AsyncClient(base_url=gateway.url, timeout=READ_TIMEOUT_S) as direct:
        doc = await direct.get("/openapi.json", headers=forged)
        assert doc.json()["servers"] == [{"url": "/"}]
        # bad input through a forged prefix changes nothing either
        bad = await direct.post("/v1/topics/x/records", content=b"{", headers={
            **forged, "Content-Type": "application/json"})  # fmt: skip
        assert bad.status_code == 404
        assert bad.headers["content-type"] == "application/problem+json"

    lines = [line for line in _access_lines(gateway) if line["path"].endswith("/openapi.json")]
    proxied_line, direct_line = lines[0], lines[1]
    assert proxied_line["client"] == "127.0.0.1"  # the nginx client, not the forged address
    assert proxied_line["scheme"] == "https"
    assert proxied_line["path"] == f"{PREFIX}/openapi.json"
    assert direct_line["client"] == "127.0.0.1"
    assert direct_line["scheme"] == "http"  # a direct client cannot claim https
    assert direct_line["path"] == "/openapi.json"


async def test_bad_input_through_nginx_is_a_problem_and_writes_nothing(
    proxied: tuple[Proxy, Gateway], tls_cert: tuple[Path, Path]
) -> None:
    nginx, _ = proxied
    async with _client(nginx, tls_cert) as client:
        assert (await client.put("/v1/topics/t", json={"partitions": 1})).status_code == 201
        bad = await client.post(
            "/v1/topics/t/records",
            content=b'{"records": [',
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["type"].endswith("/bad-json")
        topic = (await client.get("/v1/topics/t")).json()
        assert topic["partitions"][0]["end_offset"] == 0


@pytest.mark.parametrize(
    "proxied", [{"limit_conn logway_clients 1000;": "limit_conn logway_clients 1;"}], indirect=True
)
async def test_concurrent_requests_per_client_capped_at_the_proxy(
    proxied: tuple[Proxy, Gateway], tls_cert: tuple[Path, Path]
) -> None:
    nginx, gateway = proxied
    async with httpx.AsyncClient(base_url=gateway.url) as direct:
        assert (await direct.put("/v1/topics/c", json={"partitions": 1})).status_code == 201
    async with (
        _client(nginx, tls_cert) as client,
        client.stream("GET", "/v1/topics/c/events", headers=SSE) as stream,
    ):
        assert stream.status_code == 200
        refused = await client.get("/v1/topics/c")  # a second request while one is open
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["type"].endswith("/too-many-streams")
    # Closing the connection frees the slot (httpx leaves an abandoned h2 stream open; a
    # browser's EventSource.close() resets it).
    async with _client(nginx, tls_cert) as client, asyncio.timeout(READ_TIMEOUT_S):
        while (await client.get("/v1/topics/c")).status_code == 429:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
