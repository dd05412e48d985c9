"""Records as the API returns them, in streams and pulls.

On the hot path of every stream and pull: a record becomes its JSON bytes by joining a few
byte strings. The `{"topic":..,"partition":..,"offset":` head is made once per batch, and a
stored JSON value is spliced in as it is, byte for byte: it is the producer's own JSON text
(gateway/produce/parse.py). Only a value with a raw line break (valid JSON whitespace, but
it would end an SSE `data:` line or an NDJSON line) is compacted, by msgspec in C.
"""

from __future__ import annotations

import base64

import msgspec
import orjson

from storage.types import Record, ValueFormat

_JSON = ValueFormat.JSON  # a module global: `ValueFormat.JSON` costs an enum lookup per record
_dumps = orjson.dumps


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def record_head(topic: str, partition: int) -> bytes:
    """What every record of one partition's batch starts with, up to its offset."""
    return b'{"topic":' + _dumps(topic) + b',"partition":%d,"offset":' % partition


def single_line(value: bytes) -> bytes:
    """A stored JSON value without raw line breaks (they can only be whitespace)."""
    if b"\n" in value or b"\r" in value:  # the producer sent it pretty-printed
        return msgspec.json.format(value, indent=-1)
    return value


def record_json(head: bytes, record: Record) -> bytes:
    """The record's JSON after `record_head`: {"topic","partition","offset","timestamp","key",
    "value"|"value_base64","headers"}, one line (it fits an SSE `data:` line and NDJSON)."""
    key = b"null" if record.key is None else _dumps(_text(record.key))
    if record.value_format is _JSON:
        value = b',"value":' + single_line(record.value)
    else:
        value = b',"value_base64":"' + base64.b64encode(record.value) + b'"'
    headers = b"{}"
    if record.headers:
        headers = _dumps({name: _text(text) for name, text in record.headers})
    return b"".join(
        (
            head,
            str(record.offset).encode(),
            b',"timestamp":',
            str(record.timestamp_ms).encode(),
            b',"key":',
            key,
            value,
            b',"headers":',
            headers,
            b"}",
        )
    )


def render_record(topic: str, partition: int, record: Record) -> bytes:
    """One record's JSON (`record_json` with its own head)."""
    return record_json(record_head(topic, partition), record)


def render_records(topic: str, partition: int, records: list[Record]) -> bytes:
    """A JSON array of rendered records, without building a list of dicts first."""
    head = record_head(topic, partition)
    return b"[" + b",".join(record_json(head, r) for r in records) + b"]"
