"""A topic's contract: the JSON Schemas (draft 2020-12) of its records' value, key and headers.

The registration body is `{"schema": {...}, "key_schema": {...}, "headers_schema": {...}}`
(the last two optional), the schemas as JSON, never as escaped strings. Storage keeps the
same document, compact.

A schema is refused (422 `invalid-schema`, each error with a pointer into the body) when
it fails the 2020-12 meta-schema, names another draft in `$schema`, uses a keyword that
2020-12 does not have (a typo like `requried` would otherwise switch a rule off without a
word; annotations of one's own go under `x-` names), refers outside itself (`$ref` to a
URL: the gateway fetches nothing), or names a `format` it does not know.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import orjson

from gateway.http.problems import Problem, validation_error
from gateway.schemas.pointer import escape, pointer

Schema = Any  # a JSON Schema: an object or a boolean

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
FIELDS = {"schema": "value", "key_schema": "key", "headers_schema": "headers"}
MAX_ERRORS = 20

# Every keyword of the 2020-12 vocabularies (core, applicator, unevaluated, validation,
# meta-data, format-annotation, content), and `definitions`, which older drafts' `$ref`s use.
KEYWORDS = frozenset({
    "$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary",
    "$comment", "$defs", "definitions",
    "prefixItems", "items", "contains", "additionalProperties", "properties",
    "patternProperties", "dependentSchemas", "propertyNames", "if", "then", "else", "allOf",
    "anyOf", "oneOf", "not", "unevaluatedItems", "unevaluatedProperties",
    "type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties", "required",
    "dependentRequired",
    "title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples",
    "format", "contentEncoding", "contentMediaType", "contentSchema",
})  # fmt: skip
_RENAMED = {
    "dependencies": "dependentRequired or dependentSchemas",
    "additionalItems": "items (with prefixItems)",
    "$recursiveRef": "$dynamicRef",
    "$recursiveAnchor": "$dynamicAnchor",
}
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")
_SCHEMA_ONES = (
    "items", "contains", "additionalProperties", "propertyNames", "if", "then", "else", "not",
    "unevaluatedItems", "unevaluatedProperties", "contentSchema",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Contract:
    """The schemas of one registered version. `key` and `headers` are None when the
    version leaves them free."""

    value: Schema
    key: Schema | None = None
    headers: Schema | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schema": self.value}
        if self.key is not None:
            doc["key_schema"] = self.key
        if self.headers is not None:
            doc["headers_schema"] = self.headers
        return doc

    def encode(self) -> bytes:
        """The stored form: compact JSON, members in the order they were registered (so a
        schema reads back as it was written; equality is the decoded documents')."""
        return orjson.dumps(self.to_json())

    @classmethod
    def decode(cls, stored: bytes) -> Contract:
        doc = orjson.loads(stored)
        return cls(doc["schema"], doc.get("key_schema"), doc.get("headers_schema"))

    def parts(self) -> Iterator[tuple[str, Schema]]:
        """(registration field, schema) of each schema the version sets."""
        for field, part in FIELDS.items():
            schema = getattr(self, part)
            if schema is not None:
                yield field, schema


def parse_registration(body: bytes) -> Contract:
    """The registration body as a Contract, or the Problem that says what is wrong."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem("bad-json", f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise validation_error("", 'the body must be an object {"schema": {...}}')
    unknown = doc.keys() - FIELDS.keys()
    if unknown:
        raise validation_error(
            "", f"unknown member(s): {', '.join(sorted(unknown))} (known: {', '.join(FIELDS)})"
        )
    if "schema" not in doc:
        raise validation_error("/schema", "required: the JSON Schema of the records' values")
    for field in FIELDS:
        if field in doc and isinstance(doc[field], str):
            raise validation_error(
                f"/{field}", "give the schema as a JSON object, not as a string of JSON"
            )
    contract = Contract(doc["schema"], doc.get("key_schema"), doc.get("headers_schema"))
    errors = [e for field, schema in contract.parts() for e in schema_errors(schema, f"/{field}")]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise Problem(
            "invalid-schema",
            f"{first['pointer']}: {first['detail']}{more}",
            errors=errors[:MAX_ERRORS],
        )
    return contract


def schema_errors(schema: Schema, at: str) -> list[dict[str, str]]:
    """Why `schema` cannot be a topic's schema ([] when it can), pointers prefixed by `at`."""
    if not isinstance(schema, dict | bool):
        return [{"pointer": at, "detail": "a JSON Schema is an object or a boolean"}]
    errors = list(_keyword_errors(schema, at))
    if isinstance(schema, dict):
        declared = schema.get("$schema")
        if declared is not None and str(declared).rstrip("#") != DRAFT_2020_12:
            errors.append(
                {
                    "pointer": f"{at}/$schema",
                    "detail": f"only draft 2020-12 ({DRAFT_2020_12}) is supported",
                }
            )
    if errors:
        return errors
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        return [{"pointer": at + pointer(exc.instance_path), "detail": _meta_message(exc)}]
    try:
        compile_schema(schema)
    except jsonschema_rs.ValidationError as exc:
        return [{"pointer": at + pointer(exc.instance_path), "detail": str(exc).splitlines()[0]}]
    return []


def compile_schema(schema: Schema) -> jsonschema_rs.Validator:
    """The validator of a schema: formats asserted, unknown formats and remote `$ref`s refused."""
    return jsonschema_rs.Draft202012Validator(
        schema, validate_formats=True, ignore_unknown_formats=False, offline=True
    )


def _meta_message(exc: jsonschema_rs.ValidationError) -> str:
    if exc.instance_path and exc.instance_path[-1] == "type":
        return (
            f"{orjson.dumps(exc.instance).decode()} is not a JSON type (string, number,"
            " integer, object, array, boolean, null)"
        )
    return str(exc.message)


def _keyword_errors(schema: Schema, at: str) -> Iterator[dict[str, str]]:
    if not isinstance(schema, dict):
        return
    for keyword in schema:
        if keyword in KEYWORDS or keyword.startswith("x-"):
            continue
        if keyword in _RENAMED:
            detail = f"`{keyword}` is not a 2020-12 keyword: use {_RENAMED[keyword]}"
        else:
            close = difflib.get_close_matches(keyword, KEYWORDS, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            detail = f"unknown keyword `{keyword}` ({hint}annotations of your own take `x-` names)"
        yield {"pointer": f"{at}/{escape(keyword)}", "detail": detail}
    for key in _SCHEMA_MAPS:
        children = schema.get(key)
        if isinstance(children, Mapping):
            for name, child in children.items():
                yield from _keyword_errors(child, f"{at}/{key}/{escape(name)}")
    for key in _SCHEMA_LISTS:
        children = schema.get(key)
        if isinstance(children, list):
            for i, child in enumerate(children):
                yield from _keyword_errors(child, f"{at}/{key}/{i}")
    for key in _SCHEMA_ONES:
        if key in schema:
            yield from _keyword_errors(schema[key], f"{at}/{key}")
