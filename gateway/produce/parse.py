"""Produce request bodies (JSON and NDJSON) into validated records.

Parsing turns untrusted JSON into `NewRecord`s or raises a `Problem`; it never touches the
log, so a request is validated whole before anything is written.

msgspec decodes a body into typed structs in C and keeps each `value` as `msgspec.Raw`: the
request's own bytes of that JSON value (syntax checked, never parsed into Python objects nor
serialised again) become the record's value, byte for byte, so integers of any size stay
exact. A body the structs refuse is decoded again into Python objects only to name what is
wrong (`parse_record`), with the messages and JSON pointers (`/records/3/key`) of the
problem+json answer; the common case pays for none of that.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import msgspec

from gateway.http.body import as_int
from gateway.http.problems import Problem, validation_error
from storage.types import NewRecord, ValueFormat, records_of_values

RECORD_FIELDS = frozenset({"key", "value", "value_base64", "headers", "partition"})


class _Record(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One record object as sent; an absent `value` is the empty Raw (a JSON value never is)."""

    value: msgspec.Raw = msgspec.Raw()
    value_base64: str | msgspec.UnsetType = msgspec.UNSET
    key: str | None = None
    headers: dict[str, str] | None = None
    partition: int | float | None = None  # 2.0 is an integer to JSON Schema; checked below


class _Body(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    records: list[_Record]


class _PlainRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """{"value": v} and nothing else: most records of a large batch."""

    value: msgspec.Raw = msgspec.Raw()


class _PlainBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    records: list[_PlainRecord]


_BODY = msgspec.json.Decoder(_Body)
_PLAIN_BODY = msgspec.json.Decoder(_PlainBody)
_RECORD = msgspec.json.Decoder(_Record)
_VALUE = attrgetter("value")
_PATH_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")


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


def _checked(item: _Record, pointer: str, limits: Limits) -> ProduceRecord:
    """The checks a record's types cannot express: exactly one of value and value_base64,
    base64 itself, non-empty header names, an integral partition, the size limit."""
    has_value, has_base64 = len(item.value) > 0, item.value_base64 is not msgspec.UNSET
    if has_value == has_base64:
        raise validation_error(pointer, "give exactly one of value and value_base64")
    if has_value:
        value = bytes(item.value)
        value_format = ValueFormat.JSON
    else:
        try:
            value = binascii.a2b_base64(str(item.value_base64), strict_mode=True)
        except (binascii.Error, ValueError):
            raise validation_error(
                pointer + "/value_base64", "not valid base64 (RFC 4648, with padding)"
            ) from None
        value_format = ValueFormat.BYTES
    key = None if item.key is None else item.key.encode("utf-8")
    headers: tuple[tuple[str, bytes], ...] = ()
    if item.headers:
        if "" in item.headers:
            raise validation_error(pointer + "/headers", "header names must not be empty")
        headers = tuple((name, text.encode("utf-8")) for name, text in item.headers.items())
    partition = None
    if item.partition is not None:
        partition = as_int(item.partition)
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


def parse_record(obj: Any, pointer: str, limits: Limits) -> ProduceRecord:
    """Validate one record object given as Python objects (what `msgspec.json.decode` makes
    of a record the typed decoders refused): the type errors, each at its pointer."""
    if not isinstance(obj, dict):
        raise validation_error(pointer, "a record must be a JSON object")
    unknown = obj.keys() - RECORD_FIELDS
    if unknown:
        raise validation_error(pointer, f"unknown member(s): {', '.join(sorted(unknown))}")
    encoded = obj.get("value_base64", msgspec.UNSET)
    if not isinstance(encoded, str | msgspec.UnsetType):
        raise validation_error(pointer + "/value_base64", "must be a base64 string")
    key = obj.get("key")
    if key is not None and not isinstance(key, str):
        raise validation_error(pointer + "/key", "must be a string or null")
    headers = obj.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise validation_error(pointer + "/headers", "must be an object of strings")
        for name, text in headers.items():
            if not isinstance(text, str):
                raise validation_error(f"{pointer}/headers/{_escape(name)}", "must be a string")
    partition = obj.get("partition")
    if partition is not None and (isinstance(partition, bool) or as_int(partition) is None):
        raise validation_error(pointer + "/partition", "must be a non-negative integer")
    value = msgspec.Raw(msgspec.json.encode(obj["value"])) if "value" in obj else msgspec.Raw()
    item = _Record(value, encoded, key, headers, partition)
    return _checked(item, pointer, limits)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _too_many(limits: Limits) -> Problem:
    return Problem(
        "too-many-records",
        f"a request may carry at most {limits.max_records} records",
        max_records_per_request=limits.max_records,
    )


def _not_json(what: str, exc: Exception) -> Problem:
    return Problem("bad-json", f"{what} is not JSON: {exc}")


def _utf8(data: bytes) -> None:
    """msgspec checks the UTF-8 of the strings it decodes but not inside a Raw value."""
    if not data.isascii():
        data.decode("utf-8")  # UnicodeDecodeError (a ValueError) for anything else


def _records(items: list[_Record], prefix: str, limits: Limits) -> ProduceBatch:
    """Typed record objects → a batch, each checked at its pointer (prefix + index)."""
    batch = ProduceBatch()
    for i, item in enumerate(items):
        checked = _checked(item, f"{prefix}{i}", limits)
        batch.add(checked.record, checked.partition)
    return batch


def _plain_records(items: list[_PlainRecord], limits: Limits) -> ProduceBatch | None:
    """{"value": v} records → a batch with no Python code run per record, or None when a
    value is missing or over the size limit (the full path names which)."""
    values = list(map(bytes, map(_VALUE, items)))
    if not all(map(len, values)) or max(map(len, values), default=0) > limits.max_record_bytes:
        return None
    return ProduceBatch(records_of_values(values, ValueFormat.JSON))


def _named(error: msgspec.ValidationError, prefix: str) -> Problem:
    """msgspec's own words, for a refusal `parse_record` could not name (`$.records[3].key`
    becomes /records/3/key)."""
    reason, _, path = str(error).rpartition(" - at `")
    if not reason:
        return validation_error(prefix.rstrip("/"), str(error))
    steps = _PATH_STEP.findall(path.removeprefix("$").removesuffix("`"))
    return validation_error(prefix.rstrip("/") + "".join(f"/{a or b}" for a, b in steps), reason)


def _body_refusal(body: bytes, error: msgspec.ValidationError, limits: Limits) -> Problem:
    """Why the typed decoder refused a syntactically valid body, as problem+json."""
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:  # past the member it refused
        return _not_json("the body", exc)
    if not isinstance(doc, dict):
        return validation_error("", 'the body must be an object {"records": [...]}')
    unknown = doc.keys() - {"records"}
    if unknown:
        return validation_error("", f"unknown member(s): {', '.join(sorted(unknown))}")
    records = doc.get("records")
    if not isinstance(records, list):
        return validation_error("/records", "must be an array of records")
    if len(records) > limits.max_records:
        return _too_many(limits)
    try:
        for i, obj in enumerate(records):
            parse_record(obj, f"/records/{i}", limits)
    except Problem as problem:
        return problem
    return _named(error, "")


def parse_json_body(body: bytes, limits: Limits) -> ProduceBatch:
    """`{"records": [...]}` → validated records, or a Problem for the first thing wrong."""
    try:
        _utf8(body)
        plain = _PLAIN_BODY.decode(body)
    except msgspec.ValidationError:
        pass  # another shape, or wrong: the full decoder says which, below
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise _not_json("the body", exc) from None
    else:
        if len(plain.records) > limits.max_records:
            raise _too_many(limits)
        batch = _plain_records(plain.records, limits)
        if batch is not None:
            return batch
    try:
        doc = _BODY.decode(body)
    except msgspec.ValidationError as error:
        raise _body_refusal(body, error, limits) from None
    except (msgspec.DecodeError, RecursionError) as exc:  # past where the first one stopped
        raise _not_json("the body", exc) from None
    if len(doc.records) > limits.max_records:
        raise _too_many(limits)
    return _records(doc.records, "/records/", limits)


def _record_refusal(
    line: bytes, error: msgspec.ValidationError, number: int, limits: Limits
) -> Problem:
    """Why the typed decoder refused NDJSON line `number`, as problem+json."""
    pointer = f"/{number - 1}"
    try:
        parse_record(msgspec.json.decode(line), pointer, limits)
    except (msgspec.DecodeError, RecursionError) as exc:  # past the member it refused
        return _not_json(f"NDJSON record {number}", exc)
    except Problem as problem:
        return problem
    return _named(error, pointer)


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
        if len(batch) >= limits.max_records:
            raise _too_many(limits)
        pointer = f"/{number - 1}"
        try:
            _utf8(line)
            item = _RECORD.decode(line)
        except msgspec.ValidationError as error:
            raise _record_refusal(line, error, number, limits) from None
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            raise _not_json(f"NDJSON record {number}", exc) from None
        checked = _checked(item, pointer, limits)
        batch.add(checked.record, checked.partition)
    return batch
