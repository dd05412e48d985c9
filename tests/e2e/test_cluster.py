"""Real `logway serve --backend nats://...` gateways over a real 3-node JetStream cluster.

The cluster (tests/jetstream/cluster.py) is shared by this module's tests; each test uses
a JetStream namespace of its own (`?namespace=`), so none sees another's topics or groups.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.backends import parse_backend
from tests.e2e.conftest import Gateway, GatewayFactory, create_topic, free_port, sse_events
from tests.jetstream.cluster import NatsCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    nats_cluster = NatsCluster.start(tmp_path_factory.mktemp("nats-e2e"), size=3)
    try:
        yield nats_cluster
    finally:
        nats_cluster.stop()


def backend_url(cluster: NatsCluster, **params: str) -> str:
    """`nats://h1,h2,h3?namespace=<fresh>&...` for one test's gateways."""
    hosts = ",".join(url.removeprefix("nats://") for url in cluster.urls)
    query = "&".join(
        f"{k}={v}" for k, v in {"namespace": f"e{next(_namespaces)}", **params}.items()
    )
    return f"nats://{hosts}?{query}"


def test_parse_backend() -> None:
    assert parse_backend("embedded") is None
    three = parse_backend("nats://a:4222,b:4222,c:4222")
    assert three is not None
    assert (three.replicas, three.namespace) == (3, "logway")
    assert three.servers == ("nats://a:4222", "nats://b:4222", "nats://c:4222")
    one = parse_backend("nats://a:4222?replicas=1&namespace=prod")
    assert one is not None
    assert (one.replicas, one.namespace) == (1, "prod")
    bad = {
        "kafka://a": "must be 'embedded'",
        "nats://": "names no server",
        "nats://a?replicas=2": "replicas must be",
        "nats://a?colour=red": "unknown backend parameter",
    }
    for url, why in bad.items():
        with pytest.raises(ValueError, match=why):
            parse_backend(url)


@pytest.mark.parametrize("server", ["granian"])
def test_serve_on_jetstream_caps_records_per_request(
    cluster: NatsCluster, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """`--backend nats://...` serves from the cluster; a request may not outgrow one
    atomic batch (1000 records), refused whole with a 413 before anything is written."""
    gateway = start_gateway("--backend", backend_url(cluster))
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        create_topic(client, "capped", 1)
        too_many = {"records": [{"value": i} for i in range(1001)]}
        response = client.post("/v1/topics/capped/records", json=too_many)
        assert response.status_code == 413, response.text
        problem = response.json()
        assert problem["type"].endswith("/too-many-records")
        assert problem["max_records_per_request"] == 1000
        fits = {"records": [{"value": i} for i in range(1000)]}
        response = client.post("/v1/topics/capped/records", json=fits)
        assert response.status_code == 200, response.text
        assert response.json()["offsets"][-1]["offset"] == 999
        info = client.get("/v1/topics/capped").json()
        assert info["partitions"][0]["end_offset"] == 1000


def test_bad_backend_is_a_usage_error(tmp_path: Path) -> None:
    from tests.e2e.conftest import LOGWAY

    result = subprocess.run(
        [str(LOGWAY), "serve", "--backend", "nats://a?replicas=2", "--data-dir", str(tmp_path)],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"replicas must be 1, 3 or 5" in result.stderr


def test_append_too_large_is_a_413_problem() -> None:
    from gateway.problems import from_storage_error
    from storage.errors import AppendTooLarge

    problem = from_storage_error(AppendTooLarge(1001, 1000))
    assert (problem.type.status, problem.type.slug) == (413, "too-many-records")
    assert problem.body()["max_records_per_request"] == 1000


# -- two gateways behind nginx ---------------------------------------------------------------

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
SESSION_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0  # a guard against hanging only; nothing asserts a duration

NGINX_CONF = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
{user}
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    upstream logway {{
        server 127.0.0.1:{port_a} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{port_b} max_fails=1 fail_timeout=30s;
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://logway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 75s;
            proxy_connect_timeout 2s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


@dataclass
class Pair:
    a: Gateway
    b: Gateway
    nginx_url: str


@pytest.fixture
def pair(
    cluster: NatsCluster,
    start_gateway: GatewayFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pair]:
    """Two gateways on one namespace of the cluster, and nginx (the shape of
    docs/deploy/nginx.conf, cleartext here) balancing them."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian package `nginx`)")
    monkeypatch.setenv("LOGWAY_GROUP_SESSION_TIMEOUT_S", str(SESSION_TIMEOUT_S))
    url = backend_url(cluster)
    a = start_gateway("--backend", url, "--heartbeat-s", "0.5", data_dir=tmp_path / "a")
    b = start_gateway("--backend", url, "--heartbeat-s", "0.5", data_dir=tmp_path / "b")
    directory = tmp_path / "nginx"
    directory.mkdir()
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(
        NGINX_CONF.format(
            dir=directory,
            user="user root;" if os.geteuid() == 0 else "",
            port=port,
            port_a=a.url.rsplit(":", 1)[1],
            port_b=b.url.rsplit(":", 1)[1],
        )
    )
    process = subprocess.Popen(
        [NGINX, "-e", str(directory / "early.log"), "-p", str(directory), "-c", str(config),
         "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, (directory / "early.log").read_text()
                time.sleep(0.05)
        yield Pair(a, b, f"http://127.0.0.1:{port}")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def _assignments(client: httpx.AsyncClient, topic: str, group: str,
                       found: dict[str, dict[str, Any]], stop: asyncio.Event) -> None:  # fmt: skip
    """One SSE group member: record its latest assignment in `found` until `stop`."""
    params = {"group": group, "from": "earliest"}
    async with client.stream("GET", f"/v1/topics/{topic}/events", params=params,
                             headers={"Accept": "text/event-stream"}) as response:  # fmt: skip
        if response.status_code != 200:
            await response.aread()
        assert response.status_code == 200, response.text
        member = response.headers["logway-member-id"]
        async for event in sse_events(response):
            if event.event == "assignment":
                found[member] = event.json()
            elif event.event != "record":
                raise AssertionError(f"{member}: {event}")
            if stop.is_set():
                return


@pytest.mark.parametrize("server", ["granian"])
async def test_two_gateways_share_log_and_groups(pair: Pair) -> None:
    """Produce through one gateway, read through the other; SSE members of one group on
    both gateways get one disjoint, complete assignment."""
    async with (
        httpx.AsyncClient(base_url=pair.a.url, timeout=READ_TIMEOUT_S) as a,
        httpx.AsyncClient(base_url=pair.b.url, timeout=READ_TIMEOUT_S) as b,
    ):
        assert (await a.put("/v1/topics/shared", json={"partitions": 4})).status_code == 201
        records = [{"key": f"k{i}", "value": i} for i in range(200)]
        response = await a.post("/v1/topics/shared/records", json={"records": records})
        assert response.status_code == 200, response.text
        read: list[int] = []
        for p in range(4):
            pulled = await b.get(f"/v1/topics/shared/partitions/{p}/records",
                                 params={"offset": 0, "max_records": 1000})  # fmt: skip
            read += [r["value"] for r in pulled.json()["records"]]
        assert sorted(read) == list(range(200))

        found: dict[str, dict[str, Any]] = {}
        stop = asyncio.Event()
        members = [
            asyncio.ensure_future(_assignments(c, "shared", "g", found, stop)) for c in (a, b, a)
        ]
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                while True:
                    await asyncio.sleep(0.1)
                    done = [t for t in members if t.done()]
                    assert not done, [t.exception() for t in done]
                    latest = list(found.values())
                    if len(latest) == 3 and len({x["generation"] for x in latest}) == 1:
                        owned = sorted(p for x in latest for p in x["partitions"])
                        if owned == [0, 1, 2, 3]:
                            break
            description = (await b.get("/v1/groups/g")).json()
            assert sorted(m["member_id"] for m in description["members"]) == sorted(found)
        finally:
            stop.set()
            for task in members:
                task.cancel()
            await asyncio.gather(*members, return_exceptions=True)
