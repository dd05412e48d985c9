"""Real `logway serve --backend nats://...` gateways over a real 3-node JetStream cluster.

The cluster (tests/jetstream/cluster.py) is shared by this module's tests; each test uses
a JetStream namespace of its own (`?namespace=`), so none sees another's topics or groups.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.backends import parse_backend
from tests.e2e.conftest import GatewayFactory, create_topic
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
    import subprocess

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
