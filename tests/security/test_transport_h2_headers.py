"""The HTTP/2 header memory bomb (issue 18, item 2), against a real gateway with auth on.

HPACK lets a client put a 4 KB header into the connection's dynamic table once and then
name it with one byte: a request of ~4 KB on the wire that references it 4,000 times
decodes to ~16 MB of headers. With Granian's default 16 MiB header-list limit the gateway
decoded and kept all of it for every request in flight (the outside probe: 120 held
long polls added 1.8 GB; 1,000 such requests here took it past 2.4 GB before this test
stopped them). Now both servers refuse a decoded header list beyond
`max_request_head_bytes` (64 KiB): the stream gets a 431, and a header list far beyond it
ends the connection with ENHANCE_YOUR_CALM, so the peak RSS stays within `RSS_BOUND_MIB`.
HTTP/1.1 has no compression (a head costs what was sent); its heads are capped at 64 KiB
by Hypercorn and 408 KiB by Granian (its read buffer, see gateway/server.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from bench.processes import status_kib
from tests.e2e.conftest import SERVERS, GatewayFactory, start_gateway  # noqa: F401 (a fixture)
from tests.security.transport import API_KEY, RawH2, auth_config

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.xdist_group("memory"),
]

BOMB = b"x" * 4000  # fits HPACK's default 4,096-byte dynamic table with its name
REFS = 4000  # per request: ~4 KB on the wire, 16 MB decoded
REQUESTS = 1000
RSS_BOUND_MIB = 64  # the gateway's peak RSS may grow this much over the whole attack
HEAD_CAP = 64 * 1024  # Settings.max_request_head_bytes
H2_MAX_CONCURRENT_STREAMS = 100  # Settings.h2_max_concurrent_streams
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_HEADER_LIST_SIZE = 0x3, 0x6


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    """Both HTTP servers: each has its own HTTP/2 stack and limits."""
    name: str = request.param
    return name


def test_hpack_bomb_is_refused_and_memory_stays_bounded(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    gateway = start_gateway("--config", str(auth_config(tmp_path)))
    port = int(gateway.url.rsplit(":", 1)[1])
    with httpx.Client(base_url=gateway.url, headers={"X-API-Key": API_KEY}) as admin:
        assert admin.put("/v1/topics/t", json={"partitions": 1}).status_code == 201
    baseline_kib = status_kib(gateway.pid)
    limit_kib = baseline_kib + RSS_BOUND_MIB * 1024
    # Half the requests carry a valid key for a stream that would be held open, half none.
    authorized = [(b"x-api-key", API_KEY.encode())]
    outcomes: Counter[str] = Counter()
    sent = connections = 0
    while sent < REQUESTS:
        connection = RawH2.connect(port)
        connections += 1
        while sent < REQUESTS and not connection.closed:
            headers = authorized if sent % 2 else []
            connection.request("/v1/topics/t/events", headers, BOMB, REFS)
            sent += 1
            connection.pump(0.01)
            # stop before the machine runs out of memory if the bomb goes off
            assert status_kib(gateway.pid) < limit_kib, (
                f"RSS {status_kib(gateway.pid) // 1024} MiB after {sent} requests"
            )
        for _ in range(10):
            connection.pump(0.05)
        outcomes += connection.outcomes
        connection.close()
    peak_kib = status_kib(gateway.pid, "VmHWM")
    print(
        f"\n{gateway.server}: {sent} HPACK-bomb requests ({len(BOMB)} B x {REFS} refs) on "
        f"{connections} connections: {dict(outcomes)}; RSS {baseline_kib // 1024} MiB before, "
        f"peak {peak_kib // 1024} MiB (bound +{RSS_BOUND_MIB} MiB)"
    )
    assert peak_kib < limit_kib
    assert not [o for o in outcomes if o.startswith(("status 2", "status 401"))], outcomes
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
def test_heads_up_to_16_kib_pass_and_beyond_the_cap_are_refused(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    http2: bool,
) -> None:
    gateway = start_gateway("--config", str(auth_config(tmp_path)))
    headers = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=gateway.url, http1=not http2, http2=http2) as client:
        # a browser's cookies and a Last-Event-ID cursor of many partitions: legitimate
        cookie = {"cookie": "session=" + "c" * 16 * 1024}
        response = client.get("/v1/topics", headers={**headers, **cookie})
        assert response.status_code == 200, response.text
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")

    if not http2:
        huge = {"cookie": "session=" + "c" * 8 * HEAD_CAP}  # 512 KiB: beyond both servers
        response = httpx.get(f"{gateway.url}/v1/topics", headers={**headers, **huge})
        assert response.status_code == 431
        return
    # HTTP/2 by hand: httpx's pure-Python Huffman coder takes minutes for such a head
    connection = RawH2.connect(int(gateway.url.rsplit(":", 1)[1]))
    try:
        refs = 2 * HEAD_CAP // len(BOMB)
        connection.request("/v1/topics", [(b"x-api-key", API_KEY.encode())], BOMB, refs)
        for _ in range(20):
            connection.pump(0.05)
    finally:
        connection.close()
    # a 431 for the stream (Granian), or the connection ends with ENHANCE_YOUR_CALM (11)
    assert set(connection.outcomes) <= {"status 431", "goaway 11"}, connection.outcomes
    assert connection.outcomes


def test_http2_settings_bound_streams_and_header_lists(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
) -> None:
    gateway = start_gateway()
    connection = RawH2.connect(int(gateway.url.rsplit(":", 1)[1]))
    try:
        for _ in range(20):
            connection.pump(0.05)
    finally:
        connection.close()
    assert connection.settings[SETTINGS_MAX_CONCURRENT_STREAMS] == H2_MAX_CONCURRENT_STREAMS
    assert connection.settings[SETTINGS_MAX_HEADER_LIST_SIZE] == HEAD_CAP
