"""Compatibility of JSON Schemas, case by case, as Confluent Schema Registry and Karapace
decide them (docs/schemas.md lists these cases). Each case is an (old, new) pair and the
changes that make `new` fail BACKWARD (new reads old's records); FORWARD is the same check
with the two swapped, so the table also says which changes FORWARD refuses."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.schemas.compatibility import Compatibility, breaches, changes

S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
N = {"type": "number"}


def obj(
    properties: dict[str, Any], required: tuple[str, ...] = (), rest: Any = None, **more: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    if rest is not None:
        schema["additionalProperties"] = rest
    return schema


def arr(**keywords: Any) -> dict[str, Any]:
    return {"type": "array", **keywords}


# (id, old, new, kinds that break BACKWARD)
CASES: list[tuple[str, Any, Any, set[str]]] = [
    # -- compatible ------------------------------------------------------------------------
    ("same schema", obj({"a": S}), obj({"a": S}), set()),
    ("annotations changed", {**S, "title": "A"}, {**S, "title": "B", "description": "d"}, set()),
    ("integer widened to number", I, N, set()),
    ("type list widened", S, {"type": ["string", "null"]}, set()),
    ("T widened to anyOf[T, null]", S, {"anyOf": [S, {"type": "null"}]}, set()),
    ("maxLength increased", {**S, "maxLength": 5}, {**S, "maxLength": 9}, set()),
    ("maxLength removed", {**S, "maxLength": 5}, S, set()),
    ("minLength decreased", {**S, "minLength": 5}, {**S, "minLength": 1}, set()),
    ("pattern removed", {**S, "pattern": "^a"}, S, set()),
    ("maximum increased", {**N, "maximum": 5}, {**N, "maximum": 9}, set()),
    ("minimum removed", {**N, "minimum": 5}, N, set()),
    (
        "exclusiveMinimum decreased",
        {**N, "exclusiveMinimum": 5},
        {**N, "exclusiveMinimum": 1},
        set(),
    ),
    ("multipleOf reduced to a divisor", {**I, "multipleOf": 10}, {**I, "multipleOf": 5}, set()),
    ("enum extended", {"enum": ["a", "b"]}, {"enum": ["a", "b", "c"]}, set()),
    ("writer enum, reader of its type", {"enum": ["a", "b"]}, S, set()),
    ("required property made optional", obj({"a": S}, ("a",)), obj({"a": S}), set()),
    (
        "property made required with a default",
        obj({"a": S}),
        obj({"a": {**S, "default": "x"}}, ("a",)),
        set(),
    ),
    (
        "closed: optional property added",
        obj({"a": S}, rest=False),
        obj({"a": S, "b": S}, rest=False),
        set(),
    ),
    (
        "closed: required property with default added",
        obj({"a": S}, rest=False),
        obj({"a": S, "b": {**S, "default": ""}}, ("b",), rest=False),
        set(),
    ),
    ("open: property removed", obj({"a": S, "b": S}), obj({"a": S}), set()),
    ("open: property with an empty schema added", obj({"a": S}), obj({"a": S, "b": {}}), set()),
    (
        "closed: property with a false schema removed",
        obj({"a": S, "b": False}, rest=False),
        obj({"a": S}, rest=False),
        set(),
    ),
    (
        "partially open: added property covered",
        obj({"a": S}, rest=S),
        obj({"a": S, "b": S}, rest=S),
        set(),
    ),
    (
        "partially open by pattern: added property covered",
        obj({"a": S}, rest=False, patternProperties={"^x_": I}),
        obj({"a": S, "x_n": I}, rest=False, patternProperties={"^x_": I}),
        set(),
    ),
    (
        "partially open: removed property covered",
        obj({"a": S, "b": S}, rest=S),
        obj({"a": S}, rest=S),
        set(),
    ),
    ("closed model opened", obj({"a": S}, rest=False), obj({"a": S}), set()),
    ("additionalProperties schema removed", obj({"a": S}, rest=S), obj({"a": S}), set()),
    ("maxProperties increased", obj({}, maxProperties=2), obj({}, maxProperties=3), set()),
    (
        "dependentRequired removed",
        obj({"a": S, "b": S}, dependentRequired={"a": ["b"]}),
        obj({"a": S, "b": S}),
        set(),
    ),
    ("items widened", arr(items=I), arr(items=N), set()),
    ("maxItems increased", arr(maxItems=2), arr(maxItems=3), set()),
    ("uniqueItems removed", arr(uniqueItems=True), arr(), set()),
    (
        "closed tuple: item added",
        arr(prefixItems=[S], items=False),
        arr(prefixItems=[S, I], items=False),
        set(),
    ),
    ("open tuple: item removed", arr(prefixItems=[S, I]), arr(prefixItems=[S]), set()),
    (
        "allOf became anyOf",
        {"allOf": [S, {"maxLength": 3}]},
        {"anyOf": [S, {"maxLength": 3}]},
        set(),
    ),
    ("allOf lost a branch", {"allOf": [S, {"maxLength": 3}]}, {"allOf": [S]}, set()),
    ("anyOf gained a branch", {"anyOf": [S, I]}, {"anyOf": [S, I, {"type": "null"}]}, set()),
    ("oneOf reordered", {"oneOf": [S, I]}, {"oneOf": [I, S]}, set()),
    ("not narrowed", {"not": {"type": ["string", "null"]}}, {"not": S}, set()),
    (
        "recursive $ref unchanged",
        {"$defs": {"n": obj({"next": {"$ref": "#/$defs/n"}})}, "$ref": "#/$defs/n"},
        {"$defs": {"n": obj({"next": {"$ref": "#/$defs/n"}})}, "$ref": "#/$defs/n"},
        set(),
    ),
    (
        "$ref resolved on both sides",
        {"$defs": {"a": I}, "properties": {"x": {"$ref": "#/$defs/a"}}},
        {"properties": {"x": N}},
        set(),
    ),
    # -- incompatible ----------------------------------------------------------------------
    ("type changed", S, I, {"TYPE_CHANGED"}),
    ("number narrowed to integer", N, I, {"TYPE_NARROWED"}),
    ("nullable made not null", {"type": ["string", "null"]}, S, {"TYPE_CHANGED"}),
    ("empty schema constrained", {}, S, {"TYPE_NARROWED"}),
    ("maxLength added", S, {**S, "maxLength": 5}, {"MAX_LENGTH_ADDED"}),
    ("maxLength decreased", {**S, "maxLength": 9}, {**S, "maxLength": 5}, {"MAX_LENGTH_DECREASED"}),
    ("minLength increased", {**S, "minLength": 1}, {**S, "minLength": 5}, {"MIN_LENGTH_INCREASED"}),
    ("pattern added", S, {**S, "pattern": "^a"}, {"PATTERN_ADDED"}),
    ("pattern changed", {**S, "pattern": "^a"}, {**S, "pattern": "^b"}, {"PATTERN_CHANGED"}),
    ("format added (logway asserts formats)", S, {**S, "format": "email"}, {"FORMAT_ADDED"}),
    ("maximum added", N, {**N, "maximum": 5}, {"MAXIMUM_ADDED"}),
    ("minimum increased", {**N, "minimum": 1}, {**N, "minimum": 5}, {"MINIMUM_INCREASED"}),
    (
        "exclusiveMaximum decreased",
        {**N, "exclusiveMaximum": 9},
        {**N, "exclusiveMaximum": 5},
        {"EXCLUSIVE_MAXIMUM_DECREASED"},
    ),
    ("multipleOf added", I, {**I, "multipleOf": 5}, {"MULTIPLE_OF_ADDED"}),
    (
        "multipleOf expanded",
        {**I, "multipleOf": 5},
        {**I, "multipleOf": 10},
        {"MULTIPLE_OF_EXPANDED"},
    ),
    ("multipleOf changed", {**I, "multipleOf": 5}, {**I, "multipleOf": 3}, {"MULTIPLE_OF_CHANGED"}),
    ("enum narrowed", {"enum": ["a", "b"]}, {"enum": ["a"]}, {"ENUM_ARRAY_NARROWED"}),
    ("type narrowed to an enum", S, {"enum": ["a"]}, {"TYPE_CHANGED"}),
    (
        "optional property made required",
        obj({"a": S}),
        obj({"a": S}, ("a",)),
        {"REQUIRED_ATTRIBUTE_ADDED"},
    ),
    (
        "closed: required property added",
        obj({"a": S}, rest=False),
        obj({"a": S, "currency": S}, ("currency",), rest=False),
        {"REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"},
    ),
    (
        "open: property added",
        obj({"a": S}),
        obj({"a": S, "b": S}),
        {"PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL"},
    ),
    (
        "closed: property removed",
        obj({"a": S, "b": S}, rest=False),
        obj({"a": S}, rest=False),
        {"PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL"},
    ),
    (
        "partially open: added property not covered",
        obj({"a": S}, rest=S),
        obj({"a": S, "b": I}, rest=S),
        {"PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"},
    ),
    (
        "partially open: removed property not covered",
        obj({"a": S, "b": I}, rest=S),
        obj({"a": S}, rest=S),
        {"PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"},
    ),
    (
        "open model closed",
        obj({"a": S}),
        obj({"a": S}, rest=False),
        {"ADDITIONAL_PROPERTIES_REMOVED"},
    ),
    (
        "additionalProperties narrowed to a schema",
        obj({"a": S}),
        obj({"a": S}, rest=S),
        {"ADDITIONAL_PROPERTIES_NARROWED"},
    ),
    ("additionalProperties schema changed", obj({}, rest=S), obj({}, rest=I), {"TYPE_CHANGED"}),
    ("maxProperties added", obj({}), obj({}, maxProperties=3), {"MAX_PROPERTIES_ADDED"}),
    (
        "minProperties increased",
        obj({}, minProperties=1),
        obj({}, minProperties=2),
        {"MIN_PROPERTIES_INCREASED"},
    ),
    (
        "dependentRequired added",
        obj({"a": S, "b": S}),
        obj({"a": S, "b": S}, dependentRequired={"a": ["b"]}),
        {"DEPENDENCY_ARRAY_ADDED"},
    ),
    (
        "dependentRequired extended",
        obj({"a": S, "b": S, "c": S}, dependentRequired={"a": ["b"]}),
        obj({"a": S, "b": S, "c": S}, dependentRequired={"a": ["b", "c"]}),
        {"DEPENDENCY_ARRAY_EXTENDED"},
    ),
    (
        "dependentSchemas added",
        obj({"a": S}),
        obj({"a": S}, dependentSchemas={"a": {"required": ["b"]}}),
        {"DEPENDENCY_SCHEMA_ADDED"},
    ),
    ("items type changed", arr(items=S), arr(items=I), {"TYPE_CHANGED"}),
    ("items constrained", arr(), arr(items=S), {"ADDITIONAL_ITEMS_NARROWED"}),
    ("maxItems added", arr(), arr(maxItems=3), {"MAX_ITEMS_ADDED"}),
    ("minItems increased", arr(minItems=1), arr(minItems=2), {"MIN_ITEMS_INCREASED"}),
    ("uniqueItems added", arr(), arr(uniqueItems=True), {"UNIQUE_ITEMS_ADDED"}),
    (
        "closed tuple: item removed",
        arr(prefixItems=[S, I], items=False),
        arr(prefixItems=[S], items=False),
        {"ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL"},
    ),
    (
        "open tuple: item added",
        arr(prefixItems=[S]),
        arr(prefixItems=[S, I]),
        {"ITEM_ADDED_TO_OPEN_CONTENT_MODEL"},
    ),
    (
        "anyOf became allOf",
        {"anyOf": [S, {"maxLength": 3}]},
        {"allOf": [S, {"maxLength": 3}]},
        {"COMBINED_TYPE_CHANGED"},
    ),
    (
        "allOf gained a branch",
        {"allOf": [S]},
        {"allOf": [S, {"maxLength": 3}]},
        {"PRODUCT_TYPE_EXTENDED"},
    ),
    ("anyOf lost a branch", {"anyOf": [S, I]}, {"anyOf": [S]}, {"SUM_TYPE_NARROWED"}),
    ("anyOf became a single type", {"anyOf": [S, I]}, S, {"TYPE_CHANGED"}),
    (
        "anyOf branch changed",
        {"anyOf": [S, I]},
        {"anyOf": [S, {"type": "boolean"}]},
        {"COMBINED_TYPE_SUBSCHEMAS_CHANGED"},
    ),
    ("not extended", {"not": S}, {"not": {"type": ["string", "null"]}}, {"NOT_TYPE_EXTENDED"}),
    (
        "if/then added",
        obj({"a": S}),
        {**obj({"a": S}), "if": {"required": ["a"]}, "then": {"required": ["b"]}},
        {"KEYWORD_CHANGED"},
    ),
    (
        "nested property type changed",
        obj({"a": obj({"b": S})}),
        obj({"a": obj({"b": I})}),
        {"TYPE_CHANGED"},
    ),
]


@pytest.mark.parametrize(("old", "new", "kinds"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_backward_finds_exactly_the_breaking_changes(old: Any, new: Any, kinds: set[str]) -> None:
    assert {c.kind for c in changes(new, old)} == kinds


def test_every_case_has_its_own_name() -> None:
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("old", "new", "forward"),
    [
        (
            obj({"a": S}, rest=False),
            obj({"a": S, "b": S}, rest=False),
            {"PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL"},
        ),
        (obj({"a": S}), obj({"a": S, "b": S}), set()),
        (I, N, {"TYPE_NARROWED"}),
        (obj({"a": S}, ("a",)), obj({"a": S}), {"REQUIRED_ATTRIBUTE_ADDED"}),
    ],
    ids=["closed: added property", "open: added property", "number widened", "required dropped"],
)
def test_forward_is_backward_with_the_versions_swapped(
    old: Any, new: Any, forward: set[str]
) -> None:
    found = breaches(Compatibility.FORWARD, new, [(1, old)])
    assert {b.change.kind for b in found} == forward
    assert all((b.reader_version, b.writer_version) == (1, None) for b in found)


def test_the_locations_point_at_the_change() -> None:
    [change] = changes(obj({"a": obj({"b": I})}), obj({"a": obj({"b": S})}))
    assert change.location == "/properties/a/properties/b/type"
    [change] = changes(obj({"a/b": S, "c": S}, ("c",), rest=False), obj({"a/b": S}, rest=False))
    assert change.location == "/properties/c"


V1 = obj({"id": S, "note": S}, ("id",), rest=False)
V2 = obj({"id": S}, ("id",), rest=False)  # drops `note`: FORWARD-compatible only
V3 = obj({"id": S, "note": I}, ("id",), rest=False)  # `note` back with another type


@pytest.mark.parametrize(
    ("rule", "rules_out_v3"),
    [
        (Compatibility.NONE, set()),
        (Compatibility.BACKWARD, set()),  # v3 reads v2's records: v2 writes no `note`
        (Compatibility.BACKWARD_TRANSITIVE, {(None, 1)}),  # v1's records have a string `note`
        (Compatibility.FORWARD, {(2, None)}),  # v2 is closed: it refuses `note`
        (Compatibility.FORWARD_TRANSITIVE, {(2, None), (1, None)}),
        (Compatibility.FULL, {(2, None)}),
        (Compatibility.FULL_TRANSITIVE, {(2, None), (None, 1), (1, None)}),
    ],
)
def test_each_rule_checks_the_versions_it_names(
    rule: Compatibility, rules_out_v3: set[tuple[int | None, int | None]]
) -> None:
    found = breaches(rule, V3, [(1, V1), (2, V2)])
    assert {(b.reader_version, b.writer_version) for b in found} == rules_out_v3


def test_the_message_says_which_change_breaks_which_rule_and_why() -> None:
    old = obj({"id": S}, ("id",), rest=False)
    new = obj({"id": S, "currency": S}, ("id", "currency"), rest=False)
    [breach] = breaches(Compatibility.BACKWARD, new, [(2, old)])
    assert breach.detail == (
        "a required property `currency` that version 2 does not declare, without a default,"
        " breaks BACKWARD: readers of the new version cannot read version 2's records"
    )
    assert breach.to_json()["location"] == "/schema/properties/currency"
    assert breach.to_json()["change"] == "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"


def test_a_property_added_to_an_open_model_explains_the_way_out() -> None:
    [breach] = breaches(Compatibility.BACKWARD, obj({"a": S, "b": S}), [(1, obj({"a": S}))])
    assert "additionalProperties: false" in breach.detail
    assert "open content model" in breach.detail
