"""SDKs generated from openapi/openapi.yaml at test time work against a real gateway.

openapi-python-client generates a Python package and openapi-typescript a `schema.d.ts` for
openapi-fetch (tests/e2e/sdk_gen/generate.py, into tmp_path; nothing generated is
committed). Each produces and pulls records through its SDK, and sends bad input (a bad
record, an offset beyond the end, ...) that comes back as the SDK's typed Problem with the
members of its type; the Python one also gets 401, 403 and 429 as Problems from a gateway
with auth and a rate limit, and parses stream events into its SSE models. A spec change
that makes a generator fail or warn, or that breaks the typed TypeScript calls under
`tsc --strict`, fails these tests.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway, GatewayFactory
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
PROBLEMS = "https://logway.dev/problems/"


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

        _problem(models, get_topic.sync("gen-py-missing", client=client), 404, "unknown-topic")

    # the stream's first two SSE blocks are the SDK's SseRetry and SseRecordEvent
    url = f"{gateway.url}/v1/topics/gen-py/events?from=earliest&partitions=0"
    blocks: list[dict[str, str]] = []
    with httpx.stream("GET", url, timeout=10) as response:
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                blocks.append(fields)
                fields = {}
                if len(blocks) == 2:
                    break
    retry, event = blocks
    assert models.SseRetry.from_dict({"retry": int(retry["retry"])}).retry > 0
    record = models.SseRecordEvent.from_dict(event)
    assert (record.event, json.loads(record.data)["key"]) == ("record", "customer-1")
    assert record.id.startswith("1.")


def test_generated_python_client_describes_topics(generated_python: Any, gateway: Gateway) -> None:
    put_topic = _module("api.topics.put_topic")
    models = _module("models")
    with generated_python.Client(base_url=gateway.url, raise_on_unexpected_status=True) as client:
        created = put_topic.sync("gen-topic", client=client, body=models.TopicSpec(partitions=2))
        assert isinstance(created, models.TopicDescription)
        assert len(created.partitions) == 2


def _problem(models: Any, answer: Any, status: int, slug: str) -> Any:
    """`answer` is the SDK's parsed Problem model of that status and type."""
    assert isinstance(answer, models.Problem), answer
    assert (answer.status, answer.type_) == (status, models.ProblemType(PROBLEMS + slug))
    return answer


def test_generated_python_client_parses_bad_input_problems(
    generated_python: Any, gateway: Gateway
) -> None:
    """Bad input comes back as the SDK's typed Problem, with the members of its type."""
    put_topic = _module("api.topics.put_topic")
    produce = _module("api.records.produce")
    pull = _module("api.records.pull")
    models = _module("models")
    with generated_python.Client(base_url=gateway.url, raise_on_unexpected_status=True) as client:
        assert isinstance(
            put_topic.sync("gen-bad", client=client, body=models.TopicSpec(partitions=2)),
            models.TopicDescription,
        )
        bad_record = models.ProduceRequest(records=[{"value": 1}, {"value_base64": "no base64!"}])
        invalid = _problem(
            models, produce.sync("gen-bad", client=client, body=bad_record), 422, "validation-error"
        )
        assert [e.pointer for e in invalid.errors] == ["/records/1/value_base64"]
        conflict = _problem(
            models,
            put_topic.sync("gen-bad", client=client, body=models.TopicSpec(partitions=3)),
            409,
            "topic-exists",
        )
        assert conflict.existing_partitions == 2
        beyond = _problem(
            models, pull.sync("gen-bad", 0, client=client, offset=5), 416, "offset-out-of-range"
        )
        assert (beyond.offset, beyond.log_start_offset, beyond.end_offset) == (5, 0, 0)
        missing = _problem(models, pull.sync("gen-bad", 7, client=client), 404, "unknown-partition")
        assert missing.partition == 7
        # nothing was written by any of them
        assert isinstance(empty := pull.sync("gen-bad", 0, client=client), models.PullResponse)
        assert empty.end_offset == 0


def test_generated_python_client_parses_auth_and_rate_limit_problems(
    generated_python: Any, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.toml"
    reader = hashlib.sha256(b"reader-key").hexdigest()
    keys.write_text(f'[keys.reader]\nsha256 = "{reader}"\npermissions = ["consume:topic:public"]\n')
    config = tmp_path / "logway.toml"
    # one request per 1,000 s per principal: its second admitted request is a 429 (requests
    # refused by auth never reach the rate limiter)
    config.write_text(
        f'auth_api_keys_file = "{keys}"\nrate_limit_per_s = 0.001\nrate_limit_burst = 1\n'
    )
    gateway = start_gateway("--config", str(config))
    list_topics = _module("api.topics.list_topics")
    produce = _module("api.records.produce")
    models = _module("models")
    with generated_python.Client(base_url=gateway.url, raise_on_unexpected_status=True) as client:
        _problem(models, list_topics.sync(client=client), 401, "unauthorized")
    with generated_python.AuthenticatedClient(
        base_url=gateway.url, token="reader-key", raise_on_unexpected_status=True
    ) as reader_client:
        body = models.ProduceRequest(records=[{"value": 1}])
        forbidden = _problem(
            models, produce.sync("public", client=reader_client, body=body), 403, "forbidden"
        )
        assert (forbidden.action, forbidden.kind, forbidden.name) == (
            models.ProblemAction.PRODUCE,
            models.ProblemKind.TOPIC,
            "public",
        )
        assert isinstance(list_topics.sync(client=reader_client), models.TopicList)
        limited = list_topics.sync_detailed(client=reader_client)
        _problem(models, limited.parsed, 429, "rate-limited")
        assert int(limited.headers["retry-after"]) >= 1


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
