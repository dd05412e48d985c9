"""One `logway serve` per embedded data dir: a second one over the same directory would
append to the same segments from another process and corrupt the log. It is refused in
one line (exit 2) while the first serves on; a kill -9 leaves no stale lock behind."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.e2e.conftest import LOGWAY, GatewayFactory, free_port
from tests.e2e.kafka_harness import granian_only

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
server = granian_only


def test_a_second_serve_on_the_same_data_dir_is_refused_and_a_kill_9_leaves_no_lock(
    start_gateway: GatewayFactory,
) -> None:
    first = start_gateway()
    with httpx.Client(base_url=first.url, timeout=30) as client:
        assert client.put("/v1/topics/orders", json={"partitions": 1}).status_code == 201
        produced = client.post("/v1/topics/orders/records", json={"records": [{"value": 1}]})
        assert produced.status_code == 200, produced.text
    args = ["serve", "--port", str(free_port()), "--data-dir", str(first.data_dir)]
    second = subprocess.run([str(LOGWAY), *args], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stderr
    assert second.stderr == (
        f"logway serve: data dir {first.data_dir} is in use by another process "
        f"(pid {first.pid}): one logway serve per data dir\n"
    )
    with httpx.Client(base_url=first.url, timeout=30) as client:  # the first serves on
        assert client.get("/v1/topics/orders/partitions/0/records").status_code == 200
    first.kill()
    restarted = start_gateway(data_dir=first.data_dir)
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        pulled = client.get("/v1/topics/orders/partitions/0/records", params={"offset": 0})
        assert pulled.status_code == 200, pulled.text
        assert [r["value"] for r in pulled.json()["records"]] == [1]
