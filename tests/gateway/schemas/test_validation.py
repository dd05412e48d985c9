"""Record validation: the msgspec fast path never accepts what jsonschema_rs (the authority)
refuses, on generated values; what it cannot express leaves a schema to the authority."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.schemas.document import compile_schema
from gateway.schemas.validation import ValueSchema, batch_check, fast_type

ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "minLength": 1, "maxLength": 12},
        "amount": {"type": "number", "minimum": 0, "exclusiveMaximum": 1000},
        "quantity": {"type": "integer", "minimum": 1, "multipleOf": 2},
        "currency": {"enum": ["EUR", "USD", None]},
        "sku": {"type": "string", "pattern": "^[A-Z]{2}-\\d+$"},
        "word": {"type": "string", "pattern": "^\\w+\\s?\\W?$"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "paid": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "any": {},
        "nested": {"type": "object", "properties": {"n": {"const": 3}}, "required": ["n"]},
    },
    "required": ["order_id", "amount"],
    "additionalProperties": False,
}
OPEN = {"type": "object", "properties": {"a": {"type": "integer", "maximum": 5}}}
SCALARS = [
    {"type": "integer", "minimum": -3, "maximum": 3},
    {"type": ["string", "integer"], "minLength": 2, "minimum": 0},
    {"type": "array", "items": {"type": "number"}, "minItems": 1},
    {"type": "string", "const": "x"},
    {"enum": [1, 2, 3]},
]
FAST = [ORDER, OPEN, *SCALARS]
DATED = {  # a format: no fast type, but a batch check (the format checked per batch)
    "type": "object",
    "properties": {
        "at": {"type": ["string", "null"], "format": "date-time", "pattern": "^2"},
        "a": {"type": "integer"},
    },
    "required": ["a"],
}

NAMES = st.sampled_from([*ORDER["properties"], "a", "n", "zz", "A", "at"])
TEXT = st.text(alphabet=st.sampled_from("aZ09-_ \u0661\u00a0\n\r\u00e9xyz"), max_size=14)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2000),
    st.floats(-5, 2000, allow_nan=False),
    st.sampled_from(
        [
            1.0,
            2.0,
            0.5,
            2**70,
            "EUR",
            "USD",
            "AB-12",
            "AB-\u0661",
            "x",
            3,
            "2026-05-01T10:00:00Z",
            "2026-05-41T10:00:00Z",
            "1026-05-01T10:00:00Z",
        ]
    ),
    TEXT,
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=6),
    max_leaves=12,
)


def test_the_schemas_under_test_do_get_a_fast_type() -> None:
    assert all(fast_type(schema) is not None for schema in FAST)


@pytest.mark.slow  # 250 examples x 7 schemas: ~10 s
@pytest.mark.parametrize("schema", FAST, ids=[str(i) for i in range(len(FAST))])
@given(value=JSON)
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_fast_path_agrees_with_the_authority(schema: dict[str, Any], value: Any) -> None:
    data = msgspec.json.encode(value)
    authority = compile_schema(schema).is_valid(value)
    decoder = msgspec.json.Decoder(fast_type(schema))
    try:
        decoder.decode(data)
        fast_accepts = True
    except msgspec.ValidationError:
        fast_accepts = False
    assert not fast_accepts or authority, f"fast path accepted {data!r}"
    assert ValueSchema(schema).valid_json(data) == authority


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": "email"},
        {"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}},
        {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        {"type": "string", "pattern": "^\\S+$"},
        {"type": "string", "pattern": "^\\p{L}+$"},
        {"type": "string", "pattern": "(?i)abc"},
        {"type": "number", "multipleOf": 0.01},
        {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"type": "object", "properties": {"a": False}},
        {"type": "array", "uniqueItems": True},
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"properties": {"a": {"type": "string"}}},  # no `type`: non-objects are valid
        {"enum": [1, "a"]},
        {"type": "integer", "minimum": 0.5},
    ],
)
def test_what_msgspec_cannot_express_exactly_has_no_fast_type(schema: dict[str, Any]) -> None:
    assert fast_type(schema) is None
    jsonschema_rs.meta.validate(schema)  # each one is a valid schema, checked by the authority


def test_violations_name_the_place_the_keyword_and_the_schema_pointer() -> None:
    found = list(ValueSchema(ORDER).violations({"amount": -1, "extra": 1, "nested": {}}))
    by_pointer = {v.pointer: (v.keyword, v.schema_pointer) for v in found}
    assert by_pointer == {
        "/order_id": ("required", "/required"),
        "/amount": ("minimum", "/properties/amount/minimum"),
        "/extra": ("additionalProperties", "/additionalProperties"),
        "/nested/n": ("required", "/properties/nested/required"),
    }


def test_an_integral_float_is_an_integer_as_json_schema_says() -> None:
    schema = ValueSchema({"type": "integer"})
    assert schema.fast
    assert schema.valid_json(b"2.0")  # msgspec refuses 2.0 for int; the authority decides
    assert not schema.valid_json(b"2.5")


@pytest.mark.slow  # 150 batches x 8 schemas: ~12 s
@pytest.mark.parametrize("schema", [*FAST, DATED], ids=[str(i) for i in range(len(FAST) + 1)])
@given(values=st.lists(JSON | st.fixed_dictionaries({"a": st.just(1)}, optional={"at": SCALAR})))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_batch_is_valid_exactly_when_each_value_is(schema: dict[str, Any], values: Any) -> None:
    authority = compile_schema(schema)
    data = [msgspec.json.encode(v) for v in values]
    assert ValueSchema(schema).valid_batch(data) == all(map(authority.is_valid, values))


def test_patterns_of_top_level_strings_are_checked_per_batch_unless_they_can_match_a_newline() -> (
    None
):
    check = batch_check(ORDER)
    assert check is not None
    assert [h.field.__reduce__()[1] for h in check.hoisted] == [("f4",)]  # sku, not \\s's word
    schema = ValueSchema(ORDER)
    good = [b'{"order_id": "o", "amount": 1, "sku": "AB-%d"}' % i for i in range(50)]
    assert schema.valid_batch(good)
    for bad in ("AB-1x", "xAB-1", "AB-", "", "AB-1\\n", "AB-1\\nAB-2"):
        value = b'{"order_id": "o", "amount": 1, "sku": "%s"}' % bad.encode()
        assert not schema.valid_batch([*good, value, *good]), bad
        assert not compile_schema(ORDER).is_valid(msgspec.json.decode(value))


def test_a_format_is_checked_per_batch_by_the_authority() -> None:
    check = batch_check(DATED)
    assert check is not None
    assert fast_type(DATED) is None
    schema = ValueSchema(DATED)
    good = [b'{"a": 1, "at": "2026-05-01T10:00:0%dZ"}' % (i % 10) for i in range(30)]
    assert schema.valid_batch([*good, b'{"a": 1, "at": null}', b'{"a": 2}'])
    for bad in ("2026-05-41T10:00:00Z", "2026-05-01", "", "1026-05-01T10:00:00Z"):
        value = b'{"a": 1, "at": "%s"}' % bad.encode()
        assert not schema.valid_batch([*good, value]), bad


def test_a_dollar_is_the_end_of_the_string_as_in_ecma_262() -> None:
    schema = ValueSchema({"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"})
    assert schema.fast
    assert schema.valid_json(b'"AB-12"')
    assert not schema.valid_json(b'"AB-12\\n"')  # Python's `$` alone matches before it
    assert not schema.valid_batch([b'"AB-12"', b'"AB-12\\n"'])
