"""Records as the API returns them, in streams and pulls.

On the hot path of every stream and pull: a record becomes its JSON bytes in one
`orjson.dumps`, and a stored JSON value is spliced in as an `orjson.Fragment` instead of
being parsed again.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from storage.types import Record, ValueFormat


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def render_record(topic: str, partition: int, record: Record) -> bytes:
    """The record's JSON: {"topic","partition","offset","timestamp","key","value"|"value_base64",
    "headers"}, one line (no raw newline, so it fits an SSE `data:` line and NDJSON)."""
    doc: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": None if record.key is None else _text(record.key),
    }
    if record.value_format is ValueFormat.JSON:
        value = record.value
        if b"\n" in value or b"\r" in value:  # stored by another writer with pretty-printing
            value = orjson.dumps(orjson.loads(value))
        doc["value"] = orjson.Fragment(value)
    else:
        doc["value_base64"] = base64.b64encode(record.value).decode("ascii")
    doc["headers"] = {name: _text(text) for name, text in record.headers}
    return orjson.dumps(doc)


def render_records(topic: str, partition: int, records: list[Record]) -> bytes:
    """A JSON array of rendered records, without building a list of dicts first."""
    return b"[" + b",".join(render_record(topic, partition, r) for r in records) + b"]"
