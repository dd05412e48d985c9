"""Deployment features in process: /metrics, rate and stream limits, CORS, trusted proxies,
and the settings loader (TOML < LOGWAY_* < flags)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from gateway import config
from gateway.app import create_app
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from storage.types import TopicConfig, TopicPartition
from tests.gateway.conftest import BASE_URL, assert_told_to_retry, serve_app

PROBLEM = "application/problem+json"
EVENT_SOURCE = {"Accept": "text/event-stream"}  # what every EventSource sends


@contextlib.asynccontextmanager
async def _client(app: Starlette, client: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app, client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
        yield c


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + slug)
    return body


# -- metrics ----------------------------------------------------------------------------------


async def test_metrics_count_records_latency_log_size_and_lag(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(settings, backend)
    async with _client(app) as client:
        assert (await client.put("/v1/topics/t", json={"partitions": 1})).status_code == 201
        records = [{"key": "k", "value": "abc"}, {"value": 1}, {"value": 22}]
        assert (await client.post("/v1/topics/t/records", json={"records": records})).is_success
        bad = await client.post(
            "/v1/topics/t/records", content=b"{", headers={"content-type": "application/json"}
        )
        _problem(bad, 400, "bad-json")
        pulled = await client.get("/v1/topics/t/partitions/0/records?offset=0")
        assert len(pulled.json()["records"]) == 3
        await client.get("/no/such/path")
        await backend.commit_offsets("g", {TopicPartition("t", 0): 1})

        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    s = _samples(response.text)
    topic = (("topic", "t"),)
    part = (("partition", "0"), ("topic", "t"))
    assert s[("logway_records_produced_total", topic)] == 3  # the bad request wrote nothing
    assert s[("logway_bytes_produced_total", topic)] == len(b'k"abc"122')
    assert s[("logway_records_consumed_total", topic)] == 3
    assert s[("logway_log_end_offset", part)] == 3
    assert s[("logway_log_size_bytes", part)] > 0
    assert s[("logway_consumer_group_lag", (("group", "g"), *part))] == 2
    assert s[("logway_consumer_group_committed_offset", (("group", "g"), *part))] == 1
    assert s[("logway_open_streams", ())] == 0
    latency = "logway_http_request_duration_seconds_count"
    produce = (("method", "POST"), ("route", "/v1/topics/{topic}/records"))
    assert s[(latency, (*produce, ("status", "200")))] == 1
    assert s[(latency, (*produce, ("status", "400")))] == 1
    assert s[(latency, (("method", "GET"), ("route", "<unmatched>"), ("status", "404")))] == 1


async def test_streamed_records_are_counted_as_consumed(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(settings, backend)
    url, stop, task = await serve_app(app)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await client.put("/v1/topics/s", json={"partitions": 1})
            await client.post("/v1/topics/s/records", json={"records": [{"value": 1}] * 4})
            async with client.stream("GET", "/v1/topics/s/events?from=earliest") as stream:
                got = 0
                async for line in stream.aiter_lines():
                    got += line.startswith("data: ")
                    if got == 4:
                        break
                metrics = _samples((await client.get("/metrics")).text)
                assert metrics[("logway_open_streams", ())] == 1
        assert metrics[("logway_records_consumed_total", (("topic", "s"),))] == 4
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# -- limits -----------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after_and_writes_nothing(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(replace(settings, rate_limit_per_s=0.01, rate_limit_burst=2), backend)
    async with _client(app) as client:
        assert (await client.put("/v1/topics/r", json={"partitions": 1})).status_code == 201
        assert (
            await client.post("/v1/topics/r/records", json={"records": [{"value": 1}]})
        ).is_success
        refused = await client.post("/v1/topics/r/records", json={"records": [{"value": 2}]})
        _problem(refused, 429, "rate-limited")
        assert int(refused.headers["retry-after"]) >= 1
        told = await client.get("/v1/topics/r/events", headers=EVENT_SOURCE)
        assert_told_to_retry(told, "rate-limited")
        for _ in range(3):  # probes and scrapes are never limited
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
    async with _client(app, client="127.0.0.9") as other:  # another client has its own bucket
        info = await other.get("/v1/topics/r")
        assert info.json()["partitions"][0]["end_offset"] == 1


async def test_stream_limits_per_client_and_in_total(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(replace(settings, max_streams=2, max_streams_per_client=1), backend)
    await backend.create_topic("s", 1, TopicConfig())
    url, stop, task = await serve_app(app)
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            client.stream("GET", "/v1/topics/s/events") as first,
        ):
            assert first.status_code == 200
            second = await client.get("/v1/topics/s/events")
            _problem(second, 429, "too-many-streams")
            assert second.headers["retry-after"] == "1"
            # an EventSource would give up for good on a 429: it is told to come back
            told = await client.get("/v1/topics/s/events", headers=EVENT_SOURCE)
            assert_told_to_retry(told, "too-many-streams")
            # other requests of the same client still pass
            assert (await client.get("/v1/topics/s")).status_code == 200
        # the first stream closed: its slot is free again
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            client.stream("GET", "/v1/topics/s/events") as again,
        ):
            assert again.status_code == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    app = create_app(replace(settings, max_streams=1), backend)
    url, stop, task = await serve_app(app)
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            client.stream("GET", "/v1/topics/s/events") as first,
        ):
            assert first.status_code == 200
            _problem(await client.get("/v1/topics/s/events"), 503, "stream-capacity")
            told = await client.get("/v1/topics/s/events", headers=EVENT_SOURCE)
            assert_told_to_retry(told, "stream-capacity")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# -- CORS -------------------------------------------------------------------------------------

ORIGIN = "https://app.example"


async def test_cors_allows_listed_origins_with_credentials_and_refuses_others(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(
        replace(settings, cors_origins=(ORIGIN,), cors_allow_credentials=True), backend
    )
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,idempotency-key",
    }
    async with _client(app) as client:
        ok = await client.options("/v1/topics/t/records", headers={"Origin": ORIGIN, **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        assert ok.headers["access-control-allow-credentials"] == "true"
        assert "POST" in ok.headers["access-control-allow-methods"]

        evil = await client.options(
            "/v1/topics/t/records", headers={"Origin": "https://evil.example", **preflight}
        )
        _problem(evil, 400, "cors-rejected")
        assert "access-control-allow-origin" not in evil.headers

        simple = await client.get("/v1/topics", headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "retry-after" in simple.headers["access-control-expose-headers"].lower()
        refused = await client.get("/v1/topics", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in refused.headers


async def test_cors_never_allows_credentials_with_a_wildcard(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    with pytest.raises(ValueError, match="never"):
        create_app(replace(settings, cors_origins=("*",), cors_allow_credentials=True), backend)
    with pytest.raises(ValueError, match="not an origin"):
        create_app(replace(settings, cors_origins=("app.example",)), backend)
    app = create_app(replace(settings, cors_origins=("*",)), backend)
    async with _client(app) as client:
        response = await client.get("/v1/topics", headers={"Origin": "https://any.example"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers


# -- trusted proxies --------------------------------------------------------------------------


async def test_forwarded_prefix_only_from_trusted_peers(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    forwarded = {"X-Forwarded-Prefix": "/logway", "X-Forwarded-Proto": "https"}
    trusting = create_app(replace(settings, trusted_proxies=("127.0.0.0/8",)), backend)
    async with _client(trusting) as client:
        doc = (await client.get("/openapi.json", headers=forwarded)).json()
        assert doc["servers"] == [{"url": "/logway"}]
        # routes still match under the prefix; a bogus prefix is ignored, not routed
        assert (await client.get("/v1/topics", headers=forwarded)).status_code == 200
        bogus = await client.get("/openapi.json", headers={"X-Forwarded-Prefix": "/a/../b"})
        assert bogus.json()["servers"] == [{"url": "/"}]
    others = create_app(replace(settings, trusted_proxies=("10.0.0.0/8",)), backend)
    async with _client(others) as client:
        doc = (await client.get("/openapi.json", headers=forwarded)).json()
        assert doc["servers"] == [{"url": "/"}]


async def test_forwarded_for_picks_the_rightmost_untrusted_hop(
    settings: Settings, backend: EmbeddedBackend
) -> None:
    # the per-client stream limit is keyed by the forwarded client address
    app = create_app(
        replace(settings, trusted_proxies=("127.0.0.1", "10.0.0.0/8"), rate_limit_per_s=0.01,
                rate_limit_burst=1),
        backend,
    )  # fmt: skip
    async with _client(app) as proxy:
        hop = {"X-Forwarded-For": "198.51.100.7, 203.0.113.5, 10.1.2.3"}
        assert (await proxy.get("/v1/topics", headers=hop)).status_code == 200
        # same rightmost untrusted hop (203.0.113.5), whatever the client claims before it
        spoofed = {"X-Forwarded-For": "192.0.2.1, 203.0.113.5, 10.1.2.3"}
        _problem(await proxy.get("/v1/topics", headers=spoofed), 429, "rate-limited")
        # another real client behind the same proxy has its own bucket
        other = {"X-Forwarded-For": "203.0.113.6"}
        assert (await proxy.get("/v1/topics", headers=other)).status_code == 200


# -- configuration ----------------------------------------------------------------------------


def test_settings_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "logway.toml"
    toml.write_text(
        'port = 9000\nmax_streams = 7\ntrusted_proxies = ["10.0.0.0/8"]\nfsync = "never"\n'
        "heartbeat_s = 2.5\n"
    )
    env = {"LOGWAY_MAX_STREAMS": "8", "LOGWAY_CORS_ORIGINS": "https://a.example,https://b.example"}
    flags = {"port": 9100}
    settings = config.load(flags, toml, env)
    assert settings.port == 9100  # flag beats file
    assert settings.max_streams == 8  # environment beats file
    assert settings.trusted_proxies == ("10.0.0.0/8",)
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.durability.mode.value == "never"
    assert settings.heartbeat_s == 2.5
    reloaded = tmp_path / "printed.toml"
    reloaded.write_text(config.describe(settings))
    assert config.load({}, reloaded, {}) == settings  # --print-config round-trips


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("max_stream = 3\n", {}, "unknown setting 'max_stream'"),
        ("max_streams = 'many'\n", {}, "max_streams"),
        ("", {"LOGWAY_PORTT": "1"}, "unknown setting 'portt'"),
        ("", {"LOGWAY_ACCESS_LOG_JSON": "maybe"}, "access_log_json"),
        ("trusted_proxies = ['not-an-address']\n", {}, "trusted_proxies"),
        ("cors_origins = ['*']\ncors_allow_credentials = true\n", {}, "never"),
        ("port = \n", {}, "logway.toml"),
        ('fsync = "sometimes"\n', {}, "fsync"),
        (
            "retention_check_interval_ms = 0\n",
            {},
            "retention_check_interval_ms: must be at least 1",
        ),
    ],
)
def test_bad_settings_are_refused_with_their_name(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "logway.toml"
    path.write_text(toml)
    with pytest.raises(config.ConfigError, match=message):
        config.load({}, path, env)


def test_print_config_shows_effective_settings_and_refuses_unknown_ones(tmp_path: Path) -> None:
    logway = Path(sys.executable).parent / "logway"
    secret = "s3cret-of-at-least-32-bytes-long!!"
    env = {
        "LOGWAY_MAX_STREAMS_PER_CLIENT": "5",
        "LOGWAY_JWT_HS256_SECRET": secret,
        "PATH": "/usr/bin:/bin",
    }
    shown = subprocess.run(
        [str(logway), "serve", "--print-config", "--port", "9999"],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "max_streams_per_client = 5\n" in shown.stdout
    assert "port = 9999\n" in shown.stdout
    assert 'jwt_hs256_secret = "********"\n' in shown.stdout
    assert secret not in shown.stdout
    refused = subprocess.run(
        [str(logway), "serve", "--print-config"],
        env={**env, "LOGWAY_NO_SUCH": "1"}, capture_output=True, text=True, check=False,
        timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "unknown setting 'no_such'" in refused.stderr
