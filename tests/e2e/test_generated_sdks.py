"""SDKs generated from openapi/openapi.yaml at test time work against a real gateway.

openapi-python-client generates a Python package and openapi-typescript a `schema.d.ts` for
openapi-fetch (tests/e2e/sdk_gen/generate.py, into tmp_path; nothing generated is
committed). Each produces and pulls records through its SDK. A spec change that makes a
generator fail or warn, or that breaks the typed TypeScript calls under `tsc --strict`,
fails these tests.
"""

from __future__ import annotations

import base64
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Gateway
from tests.e2e.js_harness import (
    assert_passed,
    missing_tool,
    node_modules_or_skip,
    node_or_skip,
    run_node,
)
from tests.e2e.sdk_gen.generate import (
    OPENAPI_PYTHON_CLIENT,
    compile_typescript,
    generate_python,
    generate_typescript,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PACKAGE = "logway_generated"


@pytest.fixture
def server() -> str:
    """The default HTTP server (the protocol tests cover both)."""
    return "granian"


@pytest.fixture(scope="module")
def generated_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Import a freshly generated `logway_generated` (once per module), then forget it."""
    if not OPENAPI_PYTHON_CLIENT.exists():
        missing_tool("openapi-python-client is not installed (it is in the test extra)")
    path = str(generate_python(tmp_path_factory.mktemp("sdk")))
    sys.path.insert(0, path)
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(path)
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_python_client_produces_and_pulls(
    generated_python: Any, gateway: Gateway
) -> None:
    get_topic = _module("api.topics.get_topic")
    produce = _module("api.records.produce")
    pull = _module("api.records.pull")
    models = _module("models")
    problem_type = models.ProblemType

    with generated_python.Client(base_url=gateway.url, raise_on_unexpected_status=True) as client:
        # the gateway auto-creates the topic (3 partitions), so producing alone proves the flow;
        # put_topic and get_topic are proven by the next test
        records = [
            {"key": "customer-1", "value": {"order": 1, "note": "ünïcødé"}, "headers": {"t": "1"}, "partition": 0},
            {"key": None, "value_base64": base64.b64encode(b"\x00\x01\xff").decode(), "partition": 0},
            {"value": [1, 2, 3], "partition": 1},
        ]  # fmt: skip
        produced = produce.sync(
            "gen-py",
            client=client,
            body=models.ProduceRequest(records=records),
            idempotency_key="gen-py-1",
        )
        assert isinstance(produced, models.ProduceResponse), produced
        assert [(o.partition, o.offset) for o in produced.offsets] == [(0, 0), (0, 1), (1, 0)]
        again = produce.sync_detailed(
            "gen-py",
            client=client,
            body=models.ProduceRequest(records=records),
            idempotency_key="gen-py-1",
        )
        assert again.headers.get("idempotent-replayed") == "true"

        pulled = pull.sync("gen-py", 0, client=client, offset=0, max_records=10)
        assert isinstance(pulled, models.PullResponse), pulled
        assert (pulled.next_offset, pulled.end_offset) == (2, 2)
        first, second = pulled.records  # Record has a oneOf: the generator leaves it a dict
        assert (first["key"], first["value"], first["headers"]) == (
            "customer-1",
            {"order": 1, "note": "ünïcødé"},
            {"t": "1"},
        )
        assert base64.b64decode(second["value_base64"]) == b"\x00\x01\xff"

        missing = get_topic.sync("gen-py-missing", client=client)
        assert isinstance(missing, models.Problem)
        assert missing.status == 404
        assert missing.type_ == problem_type("https://logway.dev/problems/unknown-topic")


def test_generated_python_client_describes_topics(generated_python: Any, gateway: Gateway) -> None:
    put_topic = _module("api.topics.put_topic")
    models = _module("models")
    with generated_python.Client(base_url=gateway.url, raise_on_unexpected_status=True) as client:
        created = put_topic.sync("gen-topic", client=client, body=models.TopicSpec(partitions=2))
        assert isinstance(created, models.TopicDescription)
        assert len(created.partitions) == 2


def test_generated_typescript_types_with_openapi_fetch_produce_and_pull(
    tmp_path: Path, gateway: Gateway
) -> None:
    node_or_skip()
    node_modules_or_skip("openapi-typescript", "openapi-fetch", "typescript")
    program = compile_typescript(generate_typescript(tmp_path))
    result = run_node(
        [str(program)], {**os.environ, "LOGWAY_URL": gateway.url}, 60.0, cwd=program.parent
    )
    assert_passed(result, "the openapi-fetch program")
    assert '"ok":true' in result.stdout
