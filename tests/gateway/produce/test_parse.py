"""Produce parsing (validation, limits, NDJSON splitting) and record rendering."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.http.problems import Problem
from gateway.produce.parse import (
    Limits,
    ndjson_lines,
    parse_json_body,
    parse_ndjson,
    parse_record,
)
from gateway.streams.render import render_record
from storage.types import Record, ValueFormat

LIMITS = Limits(max_record_bytes=1024, max_records=10)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)


def _problem(excinfo: pytest.ExceptionInfo[Problem]) -> tuple[str, str]:
    return excinfo.value.type.slug, excinfo.value.detail


@given(
    json_values,
    st.none() | st.text(),
    st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
)
def test_json_values_render_back_equal(
    value: object, key: str | None, headers: dict[str, str]
) -> None:
    item = parse_record(
        {"value": value, "key": key, "headers": headers}, "/records/0", Limits(10**6, 10)
    )
    stored = item.record
    record = Record(7, 123, stored.value, stored.key, stored.headers, stored.value_format)
    rendered = render_record("t", 2, record)
    assert b"\n" not in rendered
    assert orjson.loads(rendered) == {
        "topic": "t",
        "partition": 2,
        "offset": 7,
        "timestamp": 123,
        "key": key,
        "value": value,
        "headers": headers,
    }


@given(st.binary(max_size=300))
def test_bytes_round_trip_exactly(raw: bytes) -> None:
    encoded = base64.b64encode(raw).decode()
    stored = parse_record({"value_base64": encoded}, "/records/0", LIMITS).record
    assert stored.value == raw
    assert stored.value_format is ValueFormat.BYTES
    record = Record(0, 1, stored.value, None, (), stored.value_format)
    assert orjson.loads(render_record("t", 0, record))["value_base64"] == encoded


def test_stored_pretty_json_is_compacted_so_lines_stay_single() -> None:
    record = Record(0, 1, b'{\n  "a": [1,\r\n 2]\n}', None, (), ValueFormat.JSON)
    rendered = render_record("t", 0, record)
    assert b"\n" not in rendered
    assert b"\r" not in rendered
    assert orjson.loads(rendered)["value"] == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("obj", "slug", "pointer"),
    [
        ([], "validation-error", "/records/0"),
        ({}, "validation-error", "/records/0"),
        ({"value": 1, "value_base64": "AA=="}, "validation-error", "/records/0"),
        ({"value": 1, "vaule": 2}, "validation-error", "/records/0"),
        ({"value_base64": "not base64!"}, "validation-error", "/records/0/value_base64"),
        ({"value_base64": "AAA"}, "validation-error", "/records/0/value_base64"),
        ({"value_base64": 5}, "validation-error", "/records/0/value_base64"),
        ({"value": 1, "key": 5}, "validation-error", "/records/0/key"),
        ({"value": 1, "headers": []}, "validation-error", "/records/0/headers"),
        ({"value": 1, "headers": {"a": 1}}, "validation-error", "/records/0/headers/a"),
        ({"value": 1, "headers": {"": "x"}}, "validation-error", "/records/0/headers"),
        ({"value": 1, "partition": -1}, "validation-error", "/records/0/partition"),
        ({"value": 1, "partition": True}, "validation-error", "/records/0/partition"),
        ({"value": 1, "partition": 1.5}, "validation-error", "/records/0/partition"),
        ({"value": "x" * 1100}, "record-too-large", "/records/0"),
        ({"value": 1, "key": "k" * 1100}, "record-too-large", "/records/0"),
        ({"value": 1, "headers": {"h": "v" * 1100}}, "record-too-large", "/records/0"),
    ],
)
def test_bad_records(obj: object, slug: str, pointer: str) -> None:
    with pytest.raises(Problem) as excinfo:
        parse_record(obj, "/records/0", LIMITS)
    assert excinfo.value.type.slug == slug
    assert excinfo.value.detail.startswith(pointer)


@pytest.mark.parametrize(
    ("body", "slug"),
    [
        (b"{", "bad-json"),
        (b"", "bad-json"),
        (b"\xff", "bad-json"),
        (b"[]", "validation-error"),
        (b'{"records": {}}', "validation-error"),
        (b'{"records": [], "extra": 1}', "validation-error"),
        (orjson.dumps({"records": [{"value": i} for i in range(11)]}), "too-many-records"),
    ],
)
def test_bad_bodies(body: bytes, slug: str) -> None:
    with pytest.raises(Problem) as excinfo:
        parse_json_body(body, LIMITS)
    assert excinfo.value.type.slug == slug


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_ndjson_lines_split_across_chunks() -> None:
    lines = [
        line
        async for line in ndjson_lines(
            _chunks(b'{"a":', b"1}\n\n  \r\n{", b'"b":2}\r\n{"c":3}'), 100
        )
    ]
    assert lines == [b'{"a":1}', b'{"b":2}\r', b'{"c":3}']


async def test_ndjson_line_cap_holds_no_more_than_one_line() -> None:
    with pytest.raises(Problem) as excinfo:
        [line async for line in ndjson_lines(_chunks(b"x" * 60, b"x" * 60), 100)]
    assert excinfo.value.type.slug == "record-too-large"


async def test_ndjson_records_and_errors() -> None:
    records = await parse_ndjson(
        ndjson_lines(_chunks(b'{"value":1}\n{"value_base64":"AA=="}\n'), 100), LIMITS
    )
    assert [r.value for r in records.records] == [b"1", b"\x00"]
    with pytest.raises(Problem) as excinfo:
        await parse_ndjson(ndjson_lines(_chunks(b'{"value":1}\n{oops}\n'), 100), LIMITS)
    assert _problem(excinfo)[0] == "bad-json"
    assert "record 2" in _problem(excinfo)[1]
    with pytest.raises(Problem) as excinfo:
        await parse_ndjson(
            ndjson_lines(_chunks(b'{"value":1}\n{"key":1,"value":1}\n'), 100), LIMITS
        )
    assert _problem(excinfo)[1].startswith("/1/key")
    with pytest.raises(Problem) as excinfo:
        await parse_ndjson(ndjson_lines(_chunks(b'{"value":1}\n' * 11), 100), LIMITS)
    assert _problem(excinfo)[0] == "too-many-records"


async def test_json_values_are_stored_as_sent_byte_for_byte() -> None:
    values = [
        b'{"b": 1,  "a" : [1, 2.50, "\\u00e9"]}',
        b"123456789012345678901234567890",  # beyond 64 bits: exact, not a float
        b"1.00000000000000000001",
        b'{"a":1,"a":2}',
        b'{\n  "pretty": true\n}',
    ]
    body = b'{"records": [' + b",".join(b'{"value": ' + v + b"}" for v in values) + b"]}"
    assert [r.value for r in parse_json_body(body, LIMITS).records] == values
    lines = b"".join(b'{"value":' + v + b', "key": "k"}\n' for v in values[:4])
    batch = await parse_ndjson(ndjson_lines(_chunks(lines), 100), LIMITS)
    assert [r.value for r in batch.records] == values[:4]


def test_a_pretty_printed_value_renders_on_one_line() -> None:
    body = b'{"records": [{"value": {\n "a": [1,\r\n 2],\n "b": "x y"\n}}]}'
    stored = parse_json_body(body, LIMITS).records[0]
    rendered = render_record("t", 0, Record(0, 1, stored.value, None, (), stored.value_format))
    assert b"\n" not in rendered
    assert b"\r" not in rendered
    assert b'"value":{"a":[1,2],"b":"x y"}' in rendered


@pytest.mark.parametrize(
    ("body", "slug", "pointer"),
    [
        (b'{"records": [{"value": "\xff"}]}', "bad-json", None),  # not UTF-8 inside a value
        (b'{"records": [{"value": ' + b"[" * 5000 + b"]" * 5000 + b"}]}", "bad-json", None),
        (
            b'{"records": [{"value": 1}, {"value": 1, "headers": {"a": 1}}]}',
            "",
            "/records/1/headers/a",
        ),
        (b'{"records": [{"value": 1, "key": 5, "key": "k"}]}', "", "/records/0/key"),
        (
            b'{"records": [{"value": 1}, {"value": 1, "partition": 2.5}]}',
            "",
            "/records/1/partition",
        ),
        (b'{"records": [{"value": 1, "value_base64": null}]}', "", "/records/0/value_base64"),
        (b'{"records": null}', "", "/records"),
        # refused for a member before the syntax error: still bad JSON, not a crash
        (b'{"records": [{"key": "k", "value": 1}, oops]}', "bad-json", None),
        (b'{"records": [{"key": 5, "value": 1}, oops]}', "bad-json", None),
        (b'{"records": 5 x}', "bad-json", None),
    ],
)
def test_refusals_name_the_member(body: bytes, slug: str, pointer: str | None) -> None:
    with pytest.raises(Problem) as excinfo:
        parse_json_body(body, LIMITS)
    assert excinfo.value.type.slug == (slug or "validation-error")
    if pointer is not None:
        assert excinfo.value.detail.startswith(pointer + ":")


def test_integral_partitions_are_integers() -> None:
    batch = parse_json_body(b'{"records": [{"value": 1, "partition": 2.0}]}', LIMITS)
    assert batch.partitions == [2]


@pytest.mark.parametrize("line", [b"5 x", b'{"key": 5} x', "5Ø弄{\x91O".encode()])
async def test_an_ndjson_line_refused_before_its_syntax_error_is_bad_json(line: bytes) -> None:
    with pytest.raises(Problem) as excinfo:
        await parse_ndjson(ndjson_lines(_chunks(b'{"value": 1}\n' + line + b"\n"), 100), LIMITS)
    assert _problem(excinfo)[0] == "bad-json"
    assert "NDJSON record 2" in _problem(excinfo)[1]
