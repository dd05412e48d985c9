"""Checking record values against a schema, fast: compiled once per schema version.

jsonschema_rs (Rust, draft 2020-12) is the authority: a value is valid when it says so,
and its errors name the failing keyword and place. Handing it a value costs a parse into
Python objects and a conversion into Rust values, about 2 us for a 10-property object,
as much as the rest of a batch produce per record (bench/RESULTS.md). So schemas made
only of the keywords msgspec can check exactly are also compiled into a msgspec type
(`fast_type`), which validates the JSON bytes while decoding them in C (~0.4 us): a value
msgspec accepts is valid; one it refuses goes to jsonschema_rs, which decides and explains.
The translation therefore only has to be *sound* (never accept what the schema refuses);
anything it cannot express that way (`format`, `$ref`, combinators, patterns with escapes
whose meaning differs between Python and ECMA-262, ...) leaves the schema without a fast
type. tests/gateway/schemas/test_validation.py checks the soundness against jsonschema_rs
on generated values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from re import _constants, _parser
from typing import Annotated, Any, Literal, Union

import msgspec

from gateway.schemas.document import Schema, compile_schema
from gateway.schemas.pointer import escape, pointer

_ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "title", "description", "default", "examples",
    "deprecated", "readOnly", "writeOnly",
})  # fmt: skip
_BY_TYPE = {
    "string": frozenset({"minLength", "maxLength", "pattern"}),
    "integer": frozenset(
        {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
    ),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "boolean": frozenset(),
    "null": frozenset(),
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
}
_EXPRESSIBLE = frozenset({"type", "enum", "const"}).union(*_BY_TYPE.values())
_MAX_DEPTH = 32
# Escapes whose meaning is the same in Python's re (with the ASCII flag) and ECMA-262, or
# stricter in Python (\s); anything else (\S, \p{..}, \c.., backreferences) is not.
_SAFE_ESCAPE = re.compile(
    r"\\(?:[dDwWsbBnrtfv.^$|?*+()\[\]{}\\/-]|u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2})"
)
# A pattern's tokens: an escape, a class, or one character; `$` alone is the end anchor.
_TOKEN = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]|.", re.DOTALL)
_UNSAFE_SYNTAX = ("(?", "[:", "&&", "--", "~~", "{,", "*+", "++", "?+", "}+")


@dataclass(frozen=True, slots=True)
class Violation:
    """Why an instance fails its schema: where, which keyword, and what the schema says."""

    pointer: str  # into the instance
    keyword: str
    schema_pointer: str
    detail: str


class ValueSchema:
    """One schema, compiled: `valid_json` for record bytes, `valid_batch` for a request's
    values at once, `violations` to explain."""

    __slots__ = ("_batch", "_decode", "_validator", "fast")

    def __init__(self, schema: Schema) -> None:
        self._validator = compile_schema(schema)
        fast = fast_type(schema)
        self._decode = None if fast is None else msgspec.json.Decoder(fast).decode
        self._batch = batch_check(schema)
        self.fast = fast is not None

    def valid_batch(self, values: list[bytes]) -> bool:
        """True when every value is valid; False when one may not be (`valid_json` then
        decides value by value): `BatchCheck`, when the schema has one."""
        if self._batch is not None and self._batch.passes(values):
            return True
        return all(map(self.valid_json, values))

    def valid_json(self, data: bytes) -> bool:
        if self._decode is not None:
            try:
                self._decode(data)
                return True
            except msgspec.ValidationError:
                pass  # the authority decides, below
        return self.valid(parse(data))

    def valid(self, instance: Any) -> bool:
        return bool(self._validator.is_valid(instance))

    def violations(self, instance: Any) -> Iterator[Violation]:
        """Each failure; a missing or unexpected property is named in the pointer itself."""
        for error in self._validator.iter_errors(instance):
            kind, details = error.kind.name, error.kind.as_dict()
            at, schema_at = pointer(error.instance_path), pointer(error.schema_path)
            if kind == "required":
                yield Violation(f"{at}/{escape(details['property'])}", kind, schema_at, "required")
            elif kind == "additionalProperties":
                for name in details["unexpected"]:
                    yield Violation(
                        f"{at}/{escape(name)}",
                        kind,
                        schema_at,
                        "not a declared property, and additionalProperties is false",
                    )
            else:
                yield Violation(at, kind, schema_at, str(error.message))


def parse(data: bytes) -> Any:
    """A record value as Python objects for the authority (integers of any size, as JSON
    Schema has them; orjson stops at 64 bits)."""
    return msgspec.json.decode(data)


def fast_type(schema: Schema) -> Any | None:
    """A msgspec type that accepts only values valid under `schema`, or None."""
    try:
        found = _type(schema, 0)
        if found is not None:
            msgspec.json.Decoder(found)  # unions msgspec cannot decode raise TypeError here
        return found
    except (TypeError, ValueError, re.error):
        return None


@dataclass(frozen=True, slots=True)
class _Hoisted:
    """A root object's string property whose `pattern` and/or `format` are checked over
    all values of a batch at once (`checks`, each given the property's non-empty strings)."""

    field: attrgetter[Any]
    checks: tuple[Callable[[list[str]], bool], ...]
    empty_ok: bool  # whether "" passes the checks


@dataclass(frozen=True, slots=True)
class BatchCheck:
    """`fast_type` with the `pattern` and `format` of the root object's string properties
    taken out of the msgspec type and checked once per batch: a pattern over the strings
    joined by newlines in one `re` pass (msgspec calls `re` once per string, ~3,500
    instructions), a format by the authority itself given all the strings as one array (a
    format leaves a schema without a fast type: every value went to jsonschema_rs alone).
    Only patterns that cannot match a newline are taken out (`_newline_free`), so a match
    never spans two strings. Sound like `fast_type`: `passes` is True only if every value
    is valid; on False, `valid_json` decides value by value."""

    decode: Callable[[bytes], Any]
    hoisted: tuple[_Hoisted, ...]

    def passes(self, values: list[bytes]) -> bool:
        try:
            decoded = list(map(self.decode, values))
        except msgspec.ValidationError:
            return False
        for hoisted in self.hoisted:
            found = list(map(hoisted.field, decoded))  # str, or None / UNSET when allowed
            if not hoisted.empty_ok and "" in found:
                return False
            strings = list(filter(None, found))
            if strings and not all(check(strings) for check in hoisted.checks):
                return False
        return True


def _lines_check(pattern: str) -> Callable[[list[str]], bool]:
    """Whether each string contains a match of `pattern` (one that cannot match a newline):
    the strings each followed by a newline, matched a line at a time by an atomic group (no
    backtracking into a line already matched, so linear time)."""
    lines = re.compile(f"(?>[^\n]*?(?:{pattern})[^\n]*\n)*+", re.ASCII | re.MULTILINE)

    def check(strings: list[str]) -> bool:
        joined = "\n".join(strings) + "\n"
        if joined.count("\n") != len(strings):
            return False  # a string holds a newline: the authority decides
        return lines.fullmatch(joined) is not None

    return check


def _format_check(name: str) -> Callable[[list[str]], bool]:
    """Whether every string is a valid `name` format, as the authority asserts formats."""
    return compile_schema({"items": {"format": name}}).is_valid


def batch_check(schema: Schema) -> BatchCheck | None:
    """The batch form of `fast_type(schema)`, or None when what is left once the root's
    string properties' patterns and formats are taken out has no fast type."""
    loose = schema
    hoisted: list[_Hoisted] = []
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(properties, dict) and schema.get("type") == "object":
        properties = dict(properties)
        for i, (name, sub) in enumerate(properties.items()):
            checks: list[Callable[[list[str]], bool]] = []
            taken: set[str] = set()
            pattern = _hoistable(sub)
            if pattern is not None:
                checks.append(_lines_check(pattern))
                taken.add("pattern")
            if _strings_only(sub) and isinstance(sub.get("format"), str):
                checks.append(_format_check(sub["format"]))
                taken.add("format")
            if checks:
                properties[name] = {k: v for k, v in sub.items() if k not in taken}
                empty_ok = all(check([""]) for check in checks)
                hoisted.append(_Hoisted(attrgetter(f"f{i}"), tuple(checks), empty_ok))
        loose = {**schema, "properties": properties}
    found = fast_type(loose)
    if found is None:
        return None
    return BatchCheck(msgspec.json.Decoder(found).decode, tuple(hoisted))


def _strings_only(schema: Schema) -> bool:
    """Whether a property's values can only be strings (or null), with no enum or const."""
    if not isinstance(schema, dict) or "enum" in schema or "const" in schema:
        return False
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    return bool(types) and types <= {"string", "null"}


def _hoistable(schema: Schema) -> str | None:
    """The pattern of a property that can be checked per batch: strings (or null) only,
    and a pattern that cannot match a newline."""
    if not _strings_only(schema) or "pattern" not in schema:
        return None
    pattern = schema["pattern"]
    if not isinstance(pattern, str) or _safe_pattern(pattern) is None:
        return None
    try:
        parsed = _parser.parse(pattern, re.ASCII)
    except re.error:
        return None
    return pattern if _newline_free(parsed) else None


_NEWLINE = ord("\n")
_NEWLINE_FREE_CATEGORIES = frozenset({
    _constants.CATEGORY_DIGIT, _constants.CATEGORY_WORD, _constants.CATEGORY_NOT_SPACE,
})  # fmt: skip


def _newline_free(items: Any) -> bool:
    """Whether a parsed pattern (re._parser) can never match a newline: only literals,
    `.`, anchors, classes without negation, groups, alternations and repeats of those."""
    c = _constants
    for op, arg in items:
        if op is c.LITERAL:
            ok = arg != _NEWLINE
        elif op in (c.ANY, c.AT):
            ok = True
        elif op is c.IN:
            ok = all(_class_item_newline_free(o, a) for o, a in arg)
        elif op is c.SUBPATTERN:
            ok = _newline_free(arg[3])
        elif op is c.BRANCH:
            ok = all(_newline_free(branch) for branch in arg[1])
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            ok = _newline_free(arg[2])
        else:
            ok = False
        if not ok:
            return False
    return True


def _class_item_newline_free(op: Any, arg: Any) -> bool:
    c = _constants
    if op is c.LITERAL:
        return bool(arg != _NEWLINE)
    if op is c.RANGE:
        return not arg[0] <= _NEWLINE <= arg[1]
    return op is c.CATEGORY and arg in _NEWLINE_FREE_CATEGORIES


def _type(schema: Schema, depth: int) -> Any | None:
    if depth > _MAX_DEPTH:
        return None
    if schema is True:
        return msgspec.Raw
    if not isinstance(schema, dict):
        return None
    keys = schema.keys() - _ANNOTATIONS
    if not keys:
        return msgspec.Raw
    if keys - _EXPRESSIBLE:
        return None
    if "enum" in schema or "const" in schema:
        return _values(schema)
    declared = schema.get("type")
    if declared is None:
        return None
    types = [declared] if isinstance(declared, str) else list(declared)
    members = [_one_type(schema, t, depth) for t in types]
    if not members or any(m is None for m in members):
        return None
    return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007


def _values(schema: dict[str, Any]) -> Any | None:
    if schema.keys() - _ANNOTATIONS - {"enum", "const", "type"}:
        return None
    if "enum" in schema and "const" in schema:
        return None
    values = [schema["const"]] if "const" in schema else list(schema["enum"])
    nullable = None in values
    listed = [v for v in values if v is not None]
    declared = schema.get("type")
    if declared is not None:  # beside `type`, a listed value of another type never validates
        types = {declared} if isinstance(declared, str) else set(declared)
        nullable = nullable and "null" in types
        if any(_json_type(v) not in types for v in listed):
            return None
    same_kind = all(type(v) is str for v in listed) or all(type(v) is int for v in listed)
    if not listed or not same_kind:
        return None
    literal = Literal[tuple(listed)]  # type: ignore[valid-type]
    return literal | None if nullable else literal


def _json_type(value: Any) -> str:
    return "string" if type(value) is str else "integer" if type(value) is int else "other"


def _one_type(schema: dict[str, Any], json_type: str, depth: int) -> Any | None:
    if json_type == "boolean":
        return bool
    if json_type == "null":
        return None.__class__
    if json_type == "string":
        return _string(schema)
    if json_type in ("integer", "number"):
        return _number(schema, int if json_type == "integer" else float)
    if json_type == "object":
        return _object(schema, depth)
    if json_type == "array":
        return _array(schema, depth)
    return None


def _string(schema: dict[str, Any]) -> Any | None:
    meta: dict[str, Any] = {}
    if "minLength" in schema:
        meta["min_length"] = schema["minLength"]
    if "maxLength" in schema:
        meta["max_length"] = schema["maxLength"]
    if "pattern" in schema:
        pattern = _safe_pattern(schema["pattern"])
        if pattern is None:
            return None
        meta["pattern"] = pattern
    return Annotated[str, msgspec.Meta(**meta)] if meta else str


def _safe_pattern(pattern: str) -> str | None:
    """The pattern in Python's syntax with ECMA-262's ASCII classes, or None when the two
    could disagree on a string."""
    if any(token in pattern for token in _UNSAFE_SYNTAX):
        return None
    if "\\" in _SAFE_ESCAPE.sub("", pattern):
        return None
    # ECMA-262's `$` is the end of the string; Python's also matches before a final "\n".
    return "(?a)" + "".join(r"\Z" if t == "$" else t for t in _TOKEN.findall(pattern))


def _number(schema: dict[str, Any], kind: type) -> Any | None:
    meta: dict[str, Any] = {}
    for keyword, name in (
        ("minimum", "ge"),
        ("maximum", "le"),
        ("exclusiveMinimum", "gt"),
        ("exclusiveMaximum", "lt"),
    ):
        if keyword in schema:
            bound = schema[keyword]
            if kind is int and not isinstance(bound, int):
                return None  # msgspec wants integer bounds for int: leave it to the authority
            meta[name] = bound
    if "multipleOf" in schema:
        if kind is not int or not isinstance(schema["multipleOf"], int):
            return None  # float multiples round differently in the two implementations
        meta["multiple_of"] = schema["multipleOf"]
    return Annotated[kind, msgspec.Meta(**meta)] if meta else kind


def _object(schema: dict[str, Any], depth: int) -> Any | None:
    rest = schema.get("additionalProperties", True)
    if rest is not False and not (rest is True or rest == {}):
        return None
    properties: dict[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for i, name in enumerate([*properties, *sorted(required - properties.keys())]):
        field_type = _type(properties.get(name, True), depth + 1)
        if field_type is None:
            return None
        attribute = f"f{i}"
        rename[attribute] = name
        if name in required:
            fields.append((attribute, field_type))
        else:
            fields.append((attribute, field_type | msgspec.UnsetType, msgspec.UNSET))
    return msgspec.defstruct(
        f"Object{depth}",
        fields,
        kw_only=True,
        rename=rename,
        forbid_unknown_fields=rest is False,
        gc=False,  # decoded only to be checked and dropped: no cycle to collect
    )


def _array(schema: dict[str, Any], depth: int) -> Any | None:
    items = _type(schema.get("items", True), depth + 1)
    if items is None:
        return None
    meta: dict[str, Any] = {}
    if "minItems" in schema:
        meta["min_length"] = schema["minItems"]
    if "maxItems" in schema:
        meta["max_length"] = schema["maxItems"]
    listed = list[items]  # type: ignore[valid-type]
    return Annotated[listed, msgspec.Meta(**meta)] if meta else listed
