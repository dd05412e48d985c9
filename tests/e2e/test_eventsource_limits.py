"""A standard EventSource refused by the gateway's stream limits comes back, not gives up.

The client is the `eventsource` package from npm (tests/e2e/eventsource.py), a WHATWG
EventSource that fails for good on any status but 200. The gateway allows one stream
(`max_streams = 1` in its TOML file); the EventSource asks while an httpx stream holds that
slot, is refused, and must be reading once the slot is free: it sees the record produced
after the refusal, and never gives up. Without the gateway's `retry:` answer it stops at the
first refusal (a 503 `stream-capacity`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import GatewayFactory
from tests.e2e.eventsource import EventSourceClient
from tests.e2e.js_harness import node_modules_or_skip

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(90),
    pytest.mark.parametrize("server", ["granian"]),  # the limit is the subject, not the server
]

READ_TIMEOUT_S = 30.0  # a guard against hanging only; nothing asserts a duration


async def _until(condition: Callable[[], object], what: str, client: EventSourceClient) -> None:
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            while not condition():  # noqa: ASYNC110 (the client's reader thread fills it)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}\n{client.report()}") from None


async def test_eventsource_waits_out_stream_capacity(
    start_gateway: GatewayFactory, tmp_path: Path, eventsources: list[EventSourceClient]
) -> None:
    node_modules_or_skip("eventsource")
    config = tmp_path / "logway.toml"
    config.write_text("max_streams = 1\n")
    gateway = start_gateway("--config", str(config))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=READ_TIMEOUT_S) as client:
        created = await client.put("/v1/topics/full", json={"partitions": 1})
        assert created.status_code == 201, created.text
        async with client.stream("GET", "/v1/topics/full/events") as holder:
            assert holder.status_code == 200
            refused = await client.get(
                "/v1/topics/full/events", headers={"Accept": "text/event-stream"}
            )
            assert refused.status_code == 200  # what an EventSource can live with
            assert refused.text.startswith(": stream-capacity: "), refused.text
            assert "\nretry: " in refused.text
            plain = await client.get("/v1/topics/full/events", headers={"Accept": "*/*"})
            assert plain.status_code == 503  # curl and the others get the problem
            assert plain.json()["type"].endswith("/stream-capacity")

            source = EventSourceClient.follow(f"{gateway.url}/v1/topics/full/events?from=earliest")
            eventsources.append(source)
            await _until(lambda: source.opens >= 1 and source.errors, "a refusal", source)
            assert not source.records
        # the slot is free: the EventSource's next try gets the stream
        produced = await client.post("/v1/topics/full/records", json={"records": [{"value": "x"}]})
        assert produced.status_code == 200, produced.text
        await _until(lambda: source.records or source.gave_up, "the record", source)
    assert source.gave_up is None, f"the EventSource gave up: {source.gave_up}\n{source.report()}"
    assert source.values() == ["x"]
