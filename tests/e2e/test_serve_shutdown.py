"""Stopping a real `logway serve`: SIGTERM drains cleanly, kill -9 loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import random
import signal
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.conftest import (
    SHUTDOWN_TIMEOUT_S,
    Gateway,
    GatewayFactory,
    create_topic,
    pull_all,
    sse_events,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOPIC = "orders"
PARTITIONS = 3


@dataclass
class Acknowledged:
    """Records the gateway answered 200 for: (partition, offset) -> the bytes sent."""

    records: dict[tuple[int, int], bytes] = field(default_factory=dict)
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    target: int = 0


async def _produce_until_refused(client: httpx.AsyncClient, acked: Acknowledged) -> None:
    """Produce single random-bytes records until the server stops answering them."""
    while True:
        value = os.urandom(random.randint(1, 2048))
        try:
            response = await client.post(
                f"/v1/topics/{TOPIC}/records",
                json={"records": [{"value_base64": base64.b64encode(value).decode()}]},
            )
        except httpx.TransportError:
            return
        if response.status_code != 200:  # e.g. 503 once shutdown has begun
            return
        [offset] = response.json()["offsets"]
        acked.records[(offset["partition"], offset["offset"])] = value
        if len(acked.records) >= acked.target:
            acked.enough.set()


def _assert_all_readable(gateway: Gateway, acked: Acknowledged) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        log = {
            (record["partition"], record["offset"]): base64.b64decode(record["value_base64"])
            for partition in range(PARTITIONS)
            for record in pull_all(client, TOPIC, partition)
        }
    missing = [key for key, value in acked.records.items() if log.get(key) != value]
    assert not missing, f"{len(missing)} of {len(acked.records)} acknowledged records lost"


@pytest.mark.parametrize("http2", [False, True], ids=["sse-http1", "sse-h2c"])
async def test_sigterm_ends_streams_cleanly_and_keeps_every_acknowledged_record(
    start_gateway: GatewayFactory, http2: bool
) -> None:
    gateway = start_gateway()
    with httpx.Client(base_url=gateway.url) as setup:
        create_topic(setup, TOPIC, PARTITIONS)
    acked = Acknowledged(target=50)
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
        httpx.AsyncClient(base_url=gateway.url, timeout=30, http1=not http2, http2=http2) as reader,
    ):

        async def read_stream() -> int:
            """Read until the server ends the stream; returns the record events seen."""
            seen = 0
            url = f"/v1/topics/{TOPIC}/events?from=earliest"
            async with reader.stream("GET", url, headers={"Accept": "text/event-stream"}) as r:
                assert r.status_code == 200
                assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
                async for event in sse_events(r):
                    seen += event.event == "record"
            return seen

        stream = asyncio.create_task(read_stream())
        producers = [asyncio.create_task(_produce_until_refused(client, acked)) for _ in range(4)]
        async with asyncio.timeout(30):
            await acked.enough.wait()
        gateway.process.send_signal(signal.SIGTERM)  # with produces in flight

        # The stream ends with a complete HTTP response (a torn one raises here).
        async with asyncio.timeout(30):
            seen = await stream
            await asyncio.gather(*producers)
        assert seen > 0
        # The watchdog would exit 1 had shutdown overrun --shutdown-timeout-s.
        returncode = await asyncio.to_thread(gateway.process.wait, SHUTDOWN_TIMEOUT_S + 15)
    assert returncode == 0, gateway.log()
    assert "Traceback" not in gateway.log()
    assert "panicked" not in gateway.log()  # Granian's runtime must not outlive Python

    restarted = start_gateway(data_dir=gateway.data_dir)
    _assert_all_readable(restarted, acked)


# httpcore can leave the socket of a request the dead server never answered for the garbage
# collector (the kill is the point of this test); gc.collect() below makes that happen here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_kill_9_during_concurrent_produces_loses_no_acknowledged_record(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway()
    with httpx.Client(base_url=gateway.url) as setup:
        create_topic(setup, TOPIC, PARTITIONS)
    acked = Acknowledged(target=300)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        producers = [asyncio.create_task(_produce_until_refused(client, acked)) for _ in range(16)]
        async with asyncio.timeout(60):
            await acked.enough.wait()
        gateway.kill()
        async with asyncio.timeout(30):
            await asyncio.gather(*producers)
    assert gateway.process.returncode == -signal.SIGKILL
    gc.collect()

    restarted = start_gateway(data_dir=gateway.data_dir)
    _assert_all_readable(restarted, acked)
