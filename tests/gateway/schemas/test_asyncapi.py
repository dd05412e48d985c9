"""GET /asyncapi.json: valid AsyncAPI 3.0 (the JSON Schema that @asyncapi/specs publishes,
pinned in clients/js devDependencies) and true to the live topics and schemas."""

from __future__ import annotations

import json
from typing import Any

import httpx
from jsonschema import Draft7Validator

from tests.e2e.js_harness import NODE_MODULES, node_modules_or_skip
from tests.gateway.conftest import check_response

ORDER = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "lines": {"type": "array", "prefixItems": [{"type": "string"}]},
    },
    "required": ["order_id"],
    "additionalProperties": False,
}


def _asyncapi_errors(doc: dict[str, Any]) -> list[str]:
    node_modules_or_skip("@asyncapi/specs")
    path = NODE_MODULES / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"
    validator = Draft7Validator(json.loads(path.read_text()))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


async def test_the_document_is_valid_asyncapi_3_and_follows_the_topics(
    client: httpx.AsyncClient,
) -> None:
    empty = check_response(await client.get("/asyncapi.json"), "/asyncapi.json")
    assert (empty["asyncapi"], empty["channels"], _asyncapi_errors(empty)) == ("3.0.0", {}, [])

    await client.put("/v1/topics/orders.v1", json={"partitions": 2})
    await client.put("/v1/topics/audit", json={"partitions": 1})
    contract = {"schema": ORDER, "key_schema": {"type": "string"}}
    assert (await client.post("/v1/topics/orders.v1/schemas", json=contract)).status_code == 201
    doc = (await client.get("/asyncapi.json")).json()
    assert _asyncapi_errors(doc) == []
    assert doc["servers"]["logway"] == {"host": "logway.test", "protocol": "http", "pathname": "/"}
    assert sorted(doc["channels"]) == ["audit", "orders.v1"]
    assert doc["channels"]["orders.v1"]["address"] == "/v1/topics/orders.v1"
    record = doc["components"]["messages"]["orders.v1.record"]
    assert record["payload"] == {
        "schemaFormat": "application/schema+json;version=draft-2020-12",
        "schema": ORDER,
    }
    assert record["x-key-schema"] == {"type": "string"}
    assert record["x-schema-version"] == 1
    assert "logway-schema-version" in record["headers"]["properties"]
    assert "schemaFormat" not in doc["components"]["messages"]["audit.record"]["payload"]
    operations = {
        name: (op["action"], op["bindings"]["http"]["method"])
        for name, op in doc["operations"].items()
        if name.startswith("orders.v1.")
    }
    assert operations == {
        "orders.v1.produce": ("send", "POST"),
        "orders.v1.stream.sse": ("receive", "GET"),
        "orders.v1.stream.ndjson": ("receive", "GET"),
        "orders.v1.pull": ("receive", "GET"),
    }
    sse = doc["operations"]["orders.v1.stream.sse"]["messages"]
    assert {m["$ref"].rsplit("/", 1)[1] for m in sse} == {
        "record",
        "gap",
        "assignment",
        "error",
        "expired",
    }
    assert {"Cursor", "Assignment", "Gap", "Problem", "Expired"} <= doc["components"][
        "schemas"
    ].keys()


def test_the_validator_catches_a_broken_document() -> None:
    broken = {
        "asyncapi": "3.0.0",
        "info": {"title": "x"},
        "operations": {"o": {"action": "publish"}},
    }
    assert _asyncapi_errors(broken)
