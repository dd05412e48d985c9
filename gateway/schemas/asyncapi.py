"""The AsyncAPI 3.0 document of the live topics (GET /asyncapi.json), built from values.

One channel per topic (its address the topic's HTTP path), with four operations: `produce`
(send: POST .../records) and three receives (SSE and NDJSON streams of .../events, pulls of
.../partitions/{p}/records). Each channel's `record` message carries the topic's newest
schema as its payload (a 2020-12 JSON Schema, marked with its schemaFormat), its key and
headers schemas, and the `logway-schema-version` header; the stream's control events
(`gap`, `assignment`, `error`, `expired`) and the cursor are shared components, taken from
the OpenAPI document so the two never disagree. Topic names are valid AsyncAPI keys as
they are (Kafka's `[A-Za-z0-9._-]`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.schemas.compatibility import Compatibility
from gateway.schemas.document import Contract
from gateway.schemas.registry import SCHEMA_VERSION_HEADER
from storage.types import SchemaVersion, TopicInfo

ASYNCAPI_VERSION = "3.0.0"
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
HTTP_BINDING = "0.3.0"
# OpenAPI components the stream messages use, copied (with what they reference).
SHARED_SCHEMAS = ("Cursor", "Gap", "Assignment", "Expired", "Problem")
_CONTROL = {
    "gap": ("Gap", "Retention deleted records the stream had not sent; it continues after them."),
    "assignment": (
        "Assignment",
        "The partitions a consumer-group stream reads changed (a new generation); sent before"
        " any record of the new generation.",
    ),
    "error": ("Problem", "The stream ends on this problem (e.g. the topic was deleted)."),
    "expired": (
        "Expired",
        "The stream's token expired; reconnect with a fresh one and the cursor.",
    ),
}


def document(
    topics: Sequence[tuple[TopicInfo, SchemaVersion | None, Compatibility]],
    server: Mapping[str, str],
    openapi_schemas: Mapping[str, Any],
) -> dict[str, Any]:
    """The AsyncAPI document: `server` is {host, protocol, pathname} as the client reached
    the gateway; `openapi_schemas` the OpenAPI components.schemas."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {name: _control_message(name) for name in _CONTROL}
    for info, latest, rule in topics:
        channels[info.name] = _channel(info, latest, rule)
        messages[f"{info.name}.record"] = _record_message(info.name, latest)
        operations.update(_operations(info.name))
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "logway topics",
            "version": "1.0.0",
            "description": (
                "The topics of this gateway as event channels, generated from the live topics"
                " and their newest schema versions. Records are produced with HTTP POST and"
                " received over Server-Sent Events, NDJSON streams or pulls; the HTTP details"
                " (bodies, problems, auth) are in the OpenAPI document at /openapi.json."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"logway": dict(server)},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": _shared(openapi_schemas),
        },
    }


def _channel(info: TopicInfo, latest: SchemaVersion | None, rule: Compatibility) -> dict[str, Any]:
    contract = (
        "no schema: any JSON value"
        if latest is None
        else f"schema version {latest.version} (compatibility {rule.value})"
    )
    return {
        "address": f"/v1/topics/{info.name}",
        "title": info.name,
        "description": f"Topic `{info.name}`: {info.partitions} partition(s), {contract}.",
        "messages": {
            "record": {"$ref": f"#/components/messages/{info.name}.record"},
            **{name: {"$ref": f"#/components/messages/{name}"} for name in _CONTROL},
        },
    }


def _record_message(topic: str, latest: SchemaVersion | None) -> dict[str, Any]:
    contract = None if latest is None else Contract.decode(latest.schema)
    headers: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
    if latest is not None:
        headers["properties"] = {
            SCHEMA_VERSION_HEADER: {
                "type": "string",
                "description": "The schema version the record was checked against.",
                "examples": [str(latest.version)],
            }
        }
    message: dict[str, Any] = {
        "name": "record",
        "title": f"A record of {topic}",
        "contentType": "application/json",
        "summary": "A record's value; key, headers, partition, offset and timestamp around it.",
        "description": (
            'The payload is the record\'s `value`. Produced as `{"records": [{"key",'
            ' "value", "headers"}]}`; received as the Record JSON `{"topic",'
            ' "partition", "offset", "timestamp", "key", "value", "headers"}` (an'
            " SSE `record` event whose `id:` is the Cursor, an NDJSON line, or an element of a"
            " pull's `records`)."
        ),
        "headers": headers,
        "payload": (
            {"schemaFormat": SCHEMA_FORMAT, "schema": contract.value}
            if contract is not None
            else {"description": "No schema is registered: any JSON value."}
        ),
    }
    if contract is not None and latest is not None:
        message["x-schema-version"] = latest.version
        if contract.key is not None:
            message["x-key-schema"] = contract.key
        if contract.headers is not None:
            message["x-headers-schema"] = contract.headers
    return message


def _control_message(name: str) -> dict[str, Any]:
    schema, description = _CONTROL[name]
    return {
        "name": name,
        "title": f"{name} event",
        "contentType": "application/json",
        "description": description
        + " In SSE it is `event: "
        + name
        + '` with this payload as `data:`; in NDJSON a line with `"event": "'
        + name
        + '"` and these members.',
        "payload": {"$ref": f"#/components/schemas/{schema}"},
    }


def _operations(topic: str) -> dict[str, Any]:
    channel = {"$ref": f"#/channels/{topic}"}
    record = {"$ref": f"#/channels/{topic}/messages/record"}
    stream_messages = [record] + [
        {"$ref": f"#/channels/{topic}/messages/{name}"} for name in _CONTROL
    ]
    stream_query = {
        "type": "object",
        "properties": {
            "from": {
                "type": "string",
                "description": "earliest, latest (default) or a ms timestamp",
            },
            "cursor": {"$ref": "#/components/schemas/Cursor"},
            "partitions": {"type": "string", "description": "comma-separated partitions"},
            "group": {"type": "string", "description": "join this consumer group"},
            "commit": {"type": "string", "enum": ["manual", "auto"]},
        },
    }
    return {
        f"{topic}.produce": {
            "action": "send",
            "channel": channel,
            "title": "Produce",
            "summary": f"POST /v1/topics/{topic}/records",
            "description": (
                "Append records (JSON or NDJSON body). On a topic with a schema every value"
                " must match the newest version, else the request is a 422"
                " `schema-violation` naming each pointer and nothing is written."
            ),
            "bindings": {"http": {"method": "POST", "bindingVersion": HTTP_BINDING}},
            "messages": [record],
        },
        f"{topic}.stream.sse": {
            "action": "receive",
            "channel": channel,
            "title": "Stream (Server-Sent Events)",
            "summary": f"GET /v1/topics/{topic}/events, Accept: text/event-stream",
            "description": (
                "`event: record` with `id: <cursor>` per record; reconnecting with the last"
                " id (Last-Event-ID) resumes with no loss and no duplicates. Control events:"
                " gap, assignment (consumer groups: `?group=`), error, expired."
            ),
            "bindings": {
                "http": {"method": "GET", "query": stream_query, "bindingVersion": HTTP_BINDING}
            },
            "messages": stream_messages,
        },
        f"{topic}.stream.ndjson": {
            "action": "receive",
            "channel": channel,
            "title": "Stream (NDJSON)",
            "summary": f"GET /v1/topics/{topic}/events, Accept: application/x-ndjson",
            "description": "One Record JSON per line; control lines carry an `event` member.",
            "bindings": {
                "http": {"method": "GET", "query": stream_query, "bindingVersion": HTTP_BINDING}
            },
            "messages": stream_messages,
        },
        f"{topic}.pull": {
            "action": "receive",
            "channel": channel,
            "title": "Pull",
            "summary": f"GET /v1/topics/{topic}/partitions/{{partition}}/records?offset=",
            "description": "Records of one partition from an offset, long-polling with wait_ms.",
            "bindings": {"http": {"method": "GET", "bindingVersion": HTTP_BINDING}},
            "messages": [record],
        },
    }


def _shared(openapi_schemas: Mapping[str, Any]) -> dict[str, Any]:
    """SHARED_SCHEMAS and every schema they reference (OpenAPI's `#/components/schemas/X`
    is the same path in AsyncAPI), without OpenAPI's `discriminator`."""
    shared: dict[str, Any] = {}
    pending = list(SHARED_SCHEMAS)
    while pending:
        name = pending.pop()
        if name not in shared:
            shared[name] = _without_discriminator(openapi_schemas[name])
            pending += _references(shared[name])
    return dict(sorted(shared.items()))


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [str(node["$ref"]).rsplit("/", 1)[-1]] if "$ref" in node else []
        return found + [name for value in node.values() for name in _references(value)]
    if isinstance(node, list):
        return [name for value in node for name in _references(value)]
    return []


def _without_discriminator(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_discriminator(v) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_without_discriminator(v) for v in node]
    return node
