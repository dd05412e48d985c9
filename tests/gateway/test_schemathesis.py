"""schemathesis against a live gateway (Hypercorn in a thread, EmbeddedBackend opened by the
app's own lifespan, auto-created topics): zero 5xx and zero responses outside the spec.

Bounded: a few dozen examples per operation. The stream operation never ends, so it is left
to test_api_streams; the long-poll and partition-count maxima are lowered for speed."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.routes.ops import openapi_document
from gateway.settings import Settings
from storage.types import Durability, DurabilityPolicy
from tests.gateway.conftest import free_port

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    app = create_app(
        Settings(
            data_dir=data_dir,
            durability=DurabilityPolicy(Durability.NEVER),
            auto_create_topics=True,
            default_partitions=2,
            max_body_bytes=256 * 1024,
        )
    )
    port = free_port()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["stop"] = stop = asyncio.Event()
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 2.0
        started.set()
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    import socket

    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(15)


def _bounded_spec() -> dict[str, Any]:
    raw = copy.deepcopy(openapi_document())
    pull = raw["paths"]["/v1/topics/{topic}/partitions/{partition}/records"]["get"]
    for parameter in pull["parameters"]:
        if parameter["name"] == "wait_ms":
            parameter["schema"]["maximum"] = 5
    raw["components"]["schemas"]["TopicSpec"]["properties"]["partitions"]["maximum"] = 4
    return raw


# NDJSON bodies are described as text; send the generated text as is.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
_full = schemathesis.openapi.from_dict(_bounded_spec())
_full.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
schema = _full.exclude(operation_id="stream")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_spec(case: Any, live_server: str) -> None:
    case.call_and_validate(base_url=live_server, checks=CHECKS)
