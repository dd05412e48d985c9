"""Real `logway serve --backend nats://...` gateways over a real 3-node JetStream cluster.

The cluster (tests/nats_cluster.py) is shared by this module's tests; each test uses
a JetStream namespace of its own (`?namespace=`), so none sees another's topics or groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.backends import parse_backend
from tests.e2e.conftest import Gateway, GatewayFactory, create_topic, free_port, sse_events
from tests.nats_cluster import NatsCluster

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.timeout(120)]

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


@pytest.mark.parametrize("server", ["granian"])
def test_a_keyed_retry_whose_records_jetstream_deleted_is_a_409(
    cluster: NatsCluster, start_gateway: GatewayFactory
) -> None:
    """The stream's max_bytes (retention.bytes) drops the first copy: the retry, answered
    from the shared answer table, is told so (docs/exactly-once.md) and writes nothing."""
    gateway = start_gateway("--backend", backend_url(cluster))
    key = {"Idempotency-Key": "run-7"}
    first = {"records": [{"value": "first"}]}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        topic = {"partitions": 1, "config": {"retention.bytes": 4096}}
        assert client.put("/v1/topics/kept", json=topic).status_code == 201
        assert client.post("/v1/topics/kept/records", json=first, headers=key).status_code == 200
        filler = {"records": [{"value": "x" * 1000}]}
        while client.get("/v1/topics/kept").json()["partitions"][0]["log_start_offset"] == 0:
            assert client.post("/v1/topics/kept/records", json=filler).status_code == 200
        before = client.get("/v1/topics/kept").json()
        retried = client.post("/v1/topics/kept/records", json=first, headers=key)
        assert retried.status_code == 409, retried.text
        assert retried.json()["type"].endswith("/idempotent-records-deleted")
        assert client.get("/v1/topics/kept").json() == before


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
    from gateway.http.problems import from_storage_error
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


async def _produce_until(client: httpx.AsyncClient, values: itertools.count[int],
                         acked: dict[int, tuple[int, int]], stop: asyncio.Event) -> None:  # fmt: skip
    """Produce batches of 10 through nginx until `stop`; remember what was acknowledged
    (value -> partition, offset). Failures (a node or a gateway going away) are retried."""
    while not stop.is_set():
        batch = [next(values) for _ in range(10)]
        try:
            response = await client.post(
                "/v1/topics/load/records", json={"records": [{"value": v} for v in batch]}
            )
        except httpx.TransportError:
            await asyncio.sleep(0.05)
            continue
        if response.status_code != 200:
            await asyncio.sleep(0.05)
            continue
        for value, place in zip(batch, response.json()["offsets"], strict=True):
            acked[value] = (place["partition"], place["offset"])


async def _consume(client: httpx.AsyncClient, seen: list[int], upstreams: list[str],
                   stop: asyncio.Event) -> None:  # fmt: skip
    """An SSE reader that reconnects through nginx with Last-Event-ID, as EventSource does."""
    cursor: str | None = None
    while not stop.is_set():
        headers = {"Accept": "text/event-stream"}
        if cursor:
            headers["Last-Event-ID"] = cursor
        try:
            async with client.stream("GET", "/v1/topics/load/events",
                                     params={"from": "earliest"}, headers=headers) as response:  # fmt: skip
                if response.status_code != 200:
                    await asyncio.sleep(0.1)
                    continue
                upstreams.append(response.headers.get("x-upstream", ""))
                async for event in sse_events(response):
                    if event.event == "record":
                        seen.append(event.json()["value"])
                        cursor = event.id
                    if stop.is_set():
                        return
        except httpx.TransportError:
            await asyncio.sleep(0.1)


async def _until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            while not condition():  # noqa: ASYNC110 (plain lists other tasks fill)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.mark.parametrize("server", ["granian"])
@pytest.mark.usefixtures("node_restarted")
async def test_node_and_gateway_killed_under_load(pair: Pair, cluster: NatsCluster) -> None:
    """SIGKILL one nats-server under load: the gateways keep serving once streams have
    leaders. Then SIGKILL the gateway serving an SSE stream: it reconnects through nginx
    to the other and resumes by cursor, with every acknowledged record delivered once and
    readable at its offset while the node is still down."""
    limits = httpx.Limits(max_connections=20)
    async with (
        httpx.AsyncClient(base_url=pair.nginx_url, timeout=READ_TIMEOUT_S, limits=limits) as proxy,
        httpx.AsyncClient(base_url=pair.b.url, timeout=READ_TIMEOUT_S) as direct,
    ):
        assert (await proxy.put("/v1/topics/load", json={"partitions": 3})).status_code == 201
        acked: dict[int, tuple[int, int]] = {}
        seen: list[int] = []
        upstreams: list[str] = []
        stop_producing, stop_consuming = asyncio.Event(), asyncio.Event()
        values = itertools.count()
        consumer = asyncio.ensure_future(_consume(proxy, seen, upstreams, stop_consuming))
        producers = [
            asyncio.ensure_future(_produce_until(proxy, values, acked, stop_producing))
            for _ in range(4)
        ]
        try:
            await _until(lambda: len(acked) >= 300 and bool(upstreams), "first records")
            cluster.kill(0)
            before_kill = len(acked)
            await _until(lambda: len(acked) >= before_kill + 300, "produces after a node died")

            # The gateway that serves the SSE stream dies.
            serving = upstreams[-1]
            victim = pair.a if serving.endswith(pair.a.url.rsplit(":", 1)[1]) else pair.b
            survivor = pair.b if victim is pair.a else pair.a
            streams_before = len(upstreams)
            victim.kill()
            before_gateway_kill = len(acked)
            await _until(lambda: len(upstreams) > streams_before, "the stream to reconnect")
            await _until(lambda: len(acked) >= before_gateway_kill + 200, "produces via nginx")
            assert upstreams[-1].endswith(survivor.url.rsplit(":", 1)[1])
        finally:
            stop_producing.set()
            await asyncio.gather(*producers, return_exceptions=True)
        try:
            await _until(lambda: set(acked) <= set(seen), "every acknowledged record")
        finally:
            stop_consuming.set()
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)

        duplicates = sorted(v for v in set(seen) if seen.count(v) > 1)
        assert not duplicates, duplicates[:10]
        # Every acknowledged record, byte for byte at its offset, from the survivor while
        # the node is still down: serving from two of three replicas is the point of R3.
        assert not cluster.nodes[0].running()
        survivor_client = direct if survivor is pair.b else None
        client = survivor_client or httpx.AsyncClient(base_url=survivor.url, timeout=READ_TIMEOUT_S)
        by_place: dict[tuple[int, int], int] = {}
        for p in range(3):
            offset = 0
            while True:
                params = {"offset": offset, "max_records": 1000}
                deadline = time.monotonic() + READ_TIMEOUT_S
                while True:  # 503 + Retry-After while a stream elects a leader
                    response = await client.get(
                        f"/v1/topics/load/partitions/{p}/records", params=params
                    )
                    if response.status_code != 503 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert response.status_code == 200, f"{response.text}\n{survivor.log()[-4000:]}"
                pulled = response.json()
                by_place.update({(p, r["offset"]): r["value"] for r in pulled["records"]})
                offset = pulled["next_offset"]
                if offset >= pulled["end_offset"]:
                    break
        if client is not direct:
            await client.aclose()
        lost = {v: place for v, place in acked.items() if by_place.get(place) != v}
        assert not lost, list(lost.items())[:10]
        # nats-py logs an error when its read loop dies; the connection then answers nothing
        # until the ping check replaces it, which the 503 retries above could hide.
        assert "ERROR nats.aio.client" not in survivor.log(), survivor.log()[-4000:]


@pytest.fixture
def node_restarted(cluster: NatsCluster) -> Iterator[None]:
    """Bring back any node a test killed, for the module's later tests."""
    yield
    for index, node in enumerate(cluster.nodes):
        if not node.running():
            cluster.restart(index)
    cluster.wait_healthy()


# -- Idempotency-Key across gateways ------------------------------------------------------


async def _pull_everything(client: httpx.AsyncClient, topic: str, partitions: int) -> list[Any]:
    """Every value of the topic, waiting out 503s while a stream elects a leader."""
    values: list[Any] = []
    for p in range(partitions):
        offset = 0
        while True:
            params = {"offset": offset, "max_records": 1000}
            async with asyncio.timeout(READ_TIMEOUT_S):
                while True:
                    response = await client.get(
                        f"/v1/topics/{topic}/partitions/{p}/records", params=params
                    )
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(0.2)
            assert response.status_code == 200, response.text
            pulled = response.json()
            values += [r["value"] for r in pulled["records"]]
            offset = pulled["next_offset"]
            if offset >= pulled["end_offset"]:
                break
    return values


@contextlib.asynccontextmanager
async def _two_gateways(
    cluster: NatsCluster, start_gateway: GatewayFactory, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two gateways over the cluster's one JetStream namespace, a client for each."""
    url = backend_url(cluster)
    a = start_gateway("--backend", url, data_dir=tmp_path / "a")
    b = start_gateway("--backend", url, data_dir=tmp_path / "b")
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=READ_TIMEOUT_S) as via_a,
        httpx.AsyncClient(base_url=b.url, timeout=READ_TIMEOUT_S) as via_b,
    ):
        yield via_a, via_b


@pytest.mark.parametrize("server", ["granian"])
async def test_one_key_sent_through_two_gateways_at_once_is_written_once(
    cluster: NatsCluster, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The same keyed request through two gateways at the same moment: JetStream's
    duplicate window (the Nats-Msg-Id each append carries) stores it once, with no lock
    shared by the gateways, and both answer the same offsets."""
    async with _two_gateways(cluster, start_gateway, tmp_path) as (via_a, via_b):
        assert (await via_a.put("/v1/topics/once", json={"partitions": 3})).status_code == 201
        sent: list[str] = []
        for round_ in range(12):
            records = [{"value": f"{round_}-{i}"} for i in range(round_ % 5 + 1)]
            records.append({"key": f"customer-{round_}", "value": f"{round_}-keyed"})
            sent += [r["value"] for r in records]
            body, headers = {"records": records}, {"Idempotency-Key": f"round-{round_}"}
            first, second = await asyncio.gather(
                via_a.post("/v1/topics/once/records", json=body, headers=headers),
                via_b.post("/v1/topics/once/records", json=body, headers=headers),
            )
            assert first.status_code == second.status_code == 200, (first.text, second.text)
            assert first.json() == second.json()
        stored = await _pull_everything(via_b, "once", 3)
    extra = Counter(stored) - Counter(sent)
    assert not extra, f"extra copies: {extra}"
    assert sorted(stored) == sorted(sent)


async def _produce_keyed(clients: list[httpx.AsyncClient], values: itertools.count[int],
                         acked: list[int], stop: asyncio.Event) -> None:  # fmt: skip
    """Batches of 10 keyless records (spread over every partition), each with an
    Idempotency-Key, retried with the same key through the other gateway until answered."""
    while not stop.is_set():
        batch = [next(values) for _ in range(10)]
        headers = {"Idempotency-Key": f"batch-{batch[0]}"}
        for attempt in itertools.count():
            client = clients[attempt % len(clients)]
            try:
                response = await client.post(
                    "/v1/topics/load/records",
                    json={"records": [{"value": v} for v in batch]},
                    headers=headers,
                )
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 200:
                acked.extend(batch)
                break
            assert response.status_code >= 500, response.text
            await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["granian"])
@pytest.mark.usefixtures("node_restarted")
async def test_a_node_killed_under_keyed_load_leaves_one_copy_of_every_record(
    cluster: NatsCluster, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """SIGKILL one nats-server while producers send multi-partition batches through two
    gateways: batches answered 5xx are retried with their Idempotency-Key through the
    other gateway, and afterwards the log holds every record exactly once."""
    async with _two_gateways(cluster, start_gateway, tmp_path) as (via_a, via_b):
        assert (await via_a.put("/v1/topics/load", json={"partitions": 3})).status_code == 201
        acked: list[int] = []
        values = itertools.count()
        stop = asyncio.Event()
        producers = [
            asyncio.ensure_future(_produce_keyed(clients, values, acked, stop))
            for clients in ([via_a, via_b], [via_b, via_a]) * 2
        ]
        try:
            await _until(lambda: len(acked) >= 300, "first records")
            cluster.kill(0)
            before_kill = len(acked)
            await _until(lambda: len(acked) >= before_kill + 600, "produces after a node died")
        finally:
            stop.set()
            await asyncio.gather(*producers)
        stored = await _pull_everything(via_b, "load", 3)
    copies = Counter(stored)
    extra = {value: n for value, n in copies.items() if n > 1}
    assert not extra, f"{len(extra)} records stored more than once: {list(extra.items())[:10]}"
    assert sorted(stored) == sorted(acked)
