"""1,000 streams that never read, against a real gateway: its memory stays bounded and a
producer and another consumer keep working (they complete; no timing is asserted).

Each stalled stream is a raw socket with a small receive buffer that sends one SSE request
from the log start and never reads, so the gateway's writes to it block at once. The RSS
figures are printed (run with -s to see them) and bounded generously: what matters is that
memory does not grow with streams times data, which would be gigabytes here.
Measured (Granian, Hypercorn): about 1.1 and 0.33 MiB per stalled stream, flat in data.
"""

from __future__ import annotations

import asyncio
import resource
import socket

import httpx
import pytest

from bench.processes import status_kib
from tests.e2e.conftest import GatewayFactory, sse_events

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.xdist_group("memory"),
]

STALLED = 1000
BATCHES = 40  # per phase; two phases
RECORDS_PER_BATCH = 100
VALUE = (
    "x" * 2000
)  # 2 phases of 40 batches of 100 records of 2 KB: ~16 MiB, which every stalled stream wants


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # the gateway inherits it


async def _stall(port: int, topic: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    request = (
        f"GET /v1/topics/{topic}/events?from=earliest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    await asyncio.get_running_loop().sock_sendall(sock, request.encode())
    return sock


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
async def test_thousand_stalled_streams_cost_bounded_memory(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _raise_fd_limit(STALLED * 2 + 1024)
    # every socket comes from 127.0.0.1: lift the per-client caps above the test's streams
    monkeypatch.setenv("LOGWAY_MAX_STREAMS_PER_CLIENT", str(STALLED + 10))
    monkeypatch.setenv("LOGWAY_MAX_CONNECTIONS_PER_CLIENT", str(STALLED + 10))
    gateway = start_gateway("--heartbeat-s", "1")
    port = int(gateway.url.rsplit(":", 1)[1])
    sockets: list[socket.socket] = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        assert (await client.put("/v1/topics/big", json={"partitions": 2})).status_code == 201
        rss_start = status_kib(gateway.pid) / 1024
        try:
            for _ in range(STALLED // 100):
                sockets += await asyncio.gather(*(_stall(port, "big") for _n in range(100)))
            # every stalled stream is open (counted by the gateway itself)
            async with asyncio.timeout(60):
                while True:
                    metrics = (await client.get("/metrics")).text
                    line = next(
                        m for m in metrics.splitlines() if m.startswith("logway_open_streams ")
                    )
                    if float(line.split()[1]) >= STALLED:
                        break
                    await asyncio.sleep(0.2)
            rss_open = status_kib(gateway.pid) / 1024

            total = 2 * BATCHES * RECORDS_PER_BATCH
            seen = 0

            async def consume() -> None:
                """Another consumer, reading normally, gets every record."""
                nonlocal seen
                async with client.stream(
                    "GET",
                    "/v1/topics/big/events?from=earliest",
                    headers={"Accept": "text/event-stream"},
                ) as stream:
                    assert stream.status_code == 200
                    async for event in sse_events(stream):
                        if event.event == "record":
                            seen += 1
                            if seen == total:
                                return

            async def produce_phase(phase: int) -> None:
                for i in range(BATCHES):
                    first = (phase * BATCHES + i) * RECORDS_PER_BATCH
                    records = [
                        {"value": VALUE, "key": str(first + j)} for j in range(RECORDS_PER_BATCH)
                    ]
                    response = await client.post(
                        "/v1/topics/big/records", json={"records": records}
                    )
                    assert response.status_code == 200, response.text

            consumer = asyncio.create_task(consume())
            await produce_phase(0)
            async with asyncio.timeout(120):
                while seen < total // 2:
                    assert not consumer.done(), "the consumer's stream ended early"
                    await asyncio.sleep(0.1)
            rss_half = status_kib(gateway.pid) / 1024
            await produce_phase(1)
            async with asyncio.timeout(120):
                await consumer
            assert seen == total
            rss_after = status_kib(gateway.pid) / 1024
        finally:
            for sock in sockets:
                sock.close()
    half_mib = BATCHES * RECORDS_PER_BATCH * len(VALUE) / 2**20
    print(
        f"\n{gateway.server} RSS: {rss_start:.0f} MiB idle, {rss_open:.0f} MiB with {STALLED} "
        f"stalled streams, {rss_half:.0f} MiB after ~{half_mib:.0f} MiB produced, "
        f"{rss_after:.0f} MiB after ~{2 * half_mib:.0f} MiB"
    )
    # Each stalled stream holds at most one batch; twice the data must not mean more memory
    # (it would be ~8 MiB more per stream if streams buffered what they could not send).
    assert rss_after < rss_half * 1.25 + 32
