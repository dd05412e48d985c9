"""A real `logway serve` speaks HTTP/1.1, h2c (prior knowledge) and h2 over TLS (ALPN) on one port."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Gateway, GatewayFactory, create_topic, pull_all

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _curl(*args: str) -> tuple[str, str]:
    """Run curl; returns (body, HTTP version) using -w '%{http_version}' after a marker line."""
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail-with-body", "-w", "\n%{http_version}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    body, _, version = result.stdout.rpartition("\n")
    return body, version


def test_curl_produces_over_http1_and_h2c_then_pulls(gateway: Gateway) -> None:
    url = f"{gateway.url}/v1/topics/curl/records"
    record = json.dumps({"records": [{"key": "k", "value": {"n": 1}, "partition": 0}]})
    headers = ["-H", "Content-Type: application/json"]

    body, version = _curl("--http1.1", *headers, "--data", record, url)
    assert version == "1.1"
    assert json.loads(body)["offsets"][0]["offset"] == 0

    body, version = _curl("--http2-prior-knowledge", *headers, "--data", record, url)
    assert version == "2"
    assert json.loads(body)["offsets"][0]["offset"] == 1

    body, version = _curl(
        "--http2-prior-knowledge", f"{gateway.url}/v1/topics/curl/partitions/0/records?offset=0"
    )
    assert version == "2"
    pulled = json.loads(body)
    assert [(r["offset"], r["key"], r["value"]) for r in pulled["records"]] == [
        (0, "k", {"n": 1}),
        (1, "k", {"n": 1}),
    ]
    assert pulled["end_offset"] == 2


def test_httpx_negotiates_h2_over_tls_by_alpn(
    start_gateway: GatewayFactory, tls_cert: tuple[Path, Path]
) -> None:
    gateway = start_gateway(tls=tls_cert)
    with httpx.Client(base_url=gateway.url, http2=True, verify=gateway.verify()) as client:
        create_topic(client, "tls", 2)
        response = client.post(
            "/v1/topics/tls/records",
            json={"records": [{"value_base64": "AAEC/w==", "partition": 1}]},
        )
        assert response.status_code == 200, response.text
        assert response.http_version == "HTTP/2"
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "h2"
        [record] = pull_all(client, "tls", 1)
        assert record["value_base64"] == "AAEC/w=="

    # A client that offers only http/1.1 is still served on the same TLS port.
    _, version = _curl("--http1.1", "--cacert", str(tls_cert[0]), f"{gateway.url}/healthz")
    assert version == "1.1"
