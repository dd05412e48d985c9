"""Produce request bodies (JSON and NDJSON) into validated records.

Parsing turns untrusted JSON into `NewRecord`s or raises a `Problem`; it never touches the
log, so a request is validated whole before anything is written.
"""

from __future__ import annotations

import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.http.body import as_int
from gateway.http.problems import Problem, validation_error
from storage.types import NewRecord, ValueFormat, records_of_values

RECORD_FIELDS = frozenset({"key", "value", "value_base64", "headers", "partition"})


@dataclass(frozen=True, slots=True)
class ProduceRecord:
    """A validated record and the partition the request named for it (None: let us pick)."""

    record: NewRecord
    partition: int | None


@dataclass(slots=True)
class ProduceBatch:
    """A produce request's validated records, in request order.

    `partitions[i]` is the partition record i named (None: let us pick), or `partitions` is
    None when no record named one; `keyed` says whether any record has a key. Placement
    uses both to skip per-record work for the common shapes (no partition, no key).
    """

    records: list[NewRecord] = field(default_factory=list)
    partitions: list[int | None] | None = None
    keyed: bool = False

    def add(self, record: NewRecord, partition: int | None = None) -> None:
        if partition is not None and self.partitions is None:
            self.partitions = [None] * len(self.records)
        self.records.append(record)
        if self.partitions is not None:
            self.partitions.append(partition)
        if record.key is not None:
            self.keyed = True

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class Limits:
    max_record_bytes: int
    max_records: int


def parse_record(obj: Any, pointer: str, limits: Limits) -> ProduceRecord:
    """Validate one record object of a produce request."""
    if not isinstance(obj, dict):
        raise validation_error(pointer, "a record must be a JSON object")
    unknown = obj.keys() - RECORD_FIELDS
    if unknown:
        raise validation_error(pointer, f"unknown member(s): {', '.join(sorted(unknown))}")
    has_value, has_base64 = "value" in obj, "value_base64" in obj
    if has_value == has_base64:
        raise validation_error(pointer, "give exactly one of value and value_base64")
    if has_value:
        value = orjson.dumps(obj["value"])
        value_format = ValueFormat.JSON
    else:
        encoded = obj["value_base64"]
        if not isinstance(encoded, str):
            raise validation_error(pointer + "/value_base64", "must be a base64 string")
        try:
            value = binascii.a2b_base64(encoded, strict_mode=True)
        except (binascii.Error, ValueError):
            raise validation_error(
                pointer + "/value_base64", "not valid base64 (RFC 4648, with padding)"
            ) from None
        value_format = ValueFormat.BYTES

    key_obj = obj.get("key")
    if key_obj is not None and not isinstance(key_obj, str):
        raise validation_error(pointer + "/key", "must be a string or null")
    key = None if key_obj is None else key_obj.encode("utf-8")

    headers_obj = obj.get("headers")
    headers: tuple[tuple[str, bytes], ...] = ()
    if headers_obj is not None:
        if not isinstance(headers_obj, dict):
            raise validation_error(pointer + "/headers", "must be an object of strings")
        items = []
        for name, text in headers_obj.items():
            if not isinstance(text, str):
                raise validation_error(f"{pointer}/headers/{_escape(name)}", "must be a string")
            if not name:
                raise validation_error(pointer + "/headers", "header names must not be empty")
            items.append((name, text.encode("utf-8")))
        headers = tuple(items)

    partition = obj.get("partition")
    if partition is not None:
        partition = as_int(partition)
        if partition is None or partition < 0:
            raise validation_error(pointer + "/partition", "must be a non-negative integer")

    size = len(value) + (len(key) if key else 0)
    size += sum(len(name.encode("utf-8")) + len(text) for name, text in headers)
    if size > limits.max_record_bytes:
        raise Problem(
            "record-too-large",
            f"{pointer}: key, value and headers take {size} bytes; the limit is "
            f"{limits.max_record_bytes}",
            pointer=pointer,
            max_record_bytes=limits.max_record_bytes,
        )
    return ProduceRecord(NewRecord(value, key, headers, value_format), partition)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _too_many(limits: Limits) -> Problem:
    return Problem(
        "too-many-records",
        f"a request may carry at most {limits.max_records} records",
        max_records_per_request=limits.max_records,
    )


def parse_json_body(body: bytes, limits: Limits) -> ProduceBatch:
    """`{"records": [...]}` → validated records, or a Problem for the first thing wrong."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem("bad-json", f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise validation_error("", 'the body must be an object {"records": [...]}')
    unknown = doc.keys() - {"records"}
    if unknown:
        raise validation_error("", f"unknown member(s): {', '.join(sorted(unknown))}")
    records = doc.get("records")
    if not isinstance(records, list):
        raise validation_error("/records", "must be an array of records")
    if len(records) > limits.max_records:
        raise _too_many(limits)
    dumps = orjson.dumps
    max_bytes = limits.max_record_bytes
    json_format = ValueFormat.JSON
    # The leading run of {"value": v} records (all of a typical large batch) is made into
    # records in one go; the rest, if any, one by one below.
    values: list[bytes] = []
    for obj in records:
        if type(obj) is dict and len(obj) == 1 and "value" in obj:
            value = dumps(obj["value"])
            if len(value) <= max_bytes:
                values.append(value)
                continue
        break
    batch = ProduceBatch(records_of_values(values, json_format))
    for i in range(len(values), len(records)):
        _add_record(batch, records[i], "/records/", i, limits)
    return batch


def _add_record(batch: ProduceBatch, obj: Any, prefix: str, index: int, limits: Limits) -> None:
    """Validate one record object into `batch`: the common shapes {"value": v} and {"key":
    "k", "value": v} directly; anything else, or anything over a limit, through
    parse_record, which names the error (at pointer prefix + index)."""
    if type(obj) is dict and "value" in obj:
        size = len(obj)
        if size == 1:
            value = orjson.dumps(obj["value"])
            if len(value) <= limits.max_record_bytes:
                batch.add(NewRecord(value, None, (), ValueFormat.JSON))
                return
        elif size == 2:
            key = obj.get("key")
            if type(key) is str:
                value = orjson.dumps(obj["value"])
                key_bytes = key.encode("utf-8")
                if len(value) + len(key_bytes) <= limits.max_record_bytes:
                    batch.add(NewRecord(value, key_bytes, (), ValueFormat.JSON))
                    return
    item = parse_record(obj, f"{prefix}{index}", limits)
    batch.add(item.record, item.partition)


async def ndjson_lines(chunks: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[bytes]:
    """Split a streamed body into lines as it arrives, holding at most one partial line.

    A line longer than `max_line_bytes` raises record-too-large without reading further.
    Blank lines are skipped; `\\r\\n` endings are fine (JSON ignores the `\\r`).
    """
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while (newline := buffer.find(b"\n", start)) != -1:
            line = bytes(buffer[start:newline])
            start = newline + 1
            if len(line) > max_line_bytes:
                raise _line_too_long(max_line_bytes)
            if line.strip():
                yield line
        del buffer[:start]
        if len(buffer) > max_line_bytes:
            raise _line_too_long(max_line_bytes)
    if bytes(buffer).strip():
        yield bytes(buffer)


def _line_too_long(max_line_bytes: int) -> Problem:
    return Problem(
        "record-too-large",
        f"an NDJSON line may be at most {max_line_bytes} bytes",
        max_line_bytes=max_line_bytes,
    )


def ndjson_line_limit(max_record_bytes: int) -> int:
    """JSON text of a record can exceed its raw size (base64 is 4/3, escapes more)."""
    return 2 * max_record_bytes + 4096


async def parse_ndjson(lines: AsyncIterator[bytes], limits: Limits) -> ProduceBatch:
    """One record object per line → validated records (line numbers count from 1)."""
    batch = ProduceBatch()
    number = 0
    async for line in lines:
        number += 1
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise Problem("bad-json", f"NDJSON record {number} is not JSON: {exc}") from None
        if len(batch) >= limits.max_records:
            raise _too_many(limits)
        _add_record(batch, obj, "/", number - 1, limits)
    return batch
