"""Schema compatibility as Confluent Schema Registry and Karapace define it for JSON Schema.

A pure core: schemas in, changes out. `changes(reader, writer)` lists what stops a consumer
that validates with `reader` from accepting every record valid under `writer`; each change
carries Confluent's name for it (`Difference.Type`), the JSON pointer where it happens and
a sentence that says why. The rules (docs/schemas.md lists each with its test):

- a type may widen (integer -> number, T -> anyOf[T, ...]) and never narrow or change;
- a bound (maximum, minLength, maxItems, maxProperties, ...) may be removed or relaxed, never
  added or tightened; `pattern`, `format` and `multipleOf` likewise (a multipleOf may only
  divide the writer's); an enum may grow, never lose a value;
- objects follow the content model of the other side: with an *open* model
  (`additionalProperties` absent or true) any property may be removed by the reader, and a
  property may be added only with an empty schema (the writer may already have written
  anything under that name); with a *closed* model (`additionalProperties: false`) a property
  may be added (required only with a `default`) and a property may be removed only if it
  was `false`; with a *partially open* model (`patternProperties` or a schema in
  `additionalProperties`) an added or removed property must fit the schema that covers it;
- a property may become optional, and required only with a `default`;
- arrays: `items` compares as a schema; `prefixItems` (tuples) follow the same open/closed
  rules by position, with `items` as the model for the positions past the tuple;
- allOf/anyOf/oneOf compare branch to branch (a maximum bipartite matching, so order is
  free); anyOf may gain branches and allOf lose them; allOf/oneOf may become anyOf;
- `not` compares reversed; `if`/`then`/`else` and any other assertion keyword this module
  does not model must stay equal (or be removed by the reader).

Two places are stricter or kinder than the registries, on purpose: a `format` the reader
adds or changes is a change (logway validates formats, so it refuses records), and a writer
`enum`/`const` is compatible with any reader that accepts each of its values (both
registries call it a type change).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import orjson

from gateway.schemas.pointer import escape

Schema = Any  # a JSON Schema: an object (dict) or a boolean


class Compatibility(enum.Enum):
    """A topic's rule for new schema versions (Confluent's names and meanings)."""

    BACKWARD = "BACKWARD"  # the new version reads the latest version's records
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"  # ... and every earlier version's
    FORWARD = "FORWARD"  # the latest version reads the new version's records
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"  # ... and so does every earlier version
    FULL = "FULL"  # both, against the latest version
    FULL_TRANSITIVE = "FULL_TRANSITIVE"  # both, against every version
    NONE = "NONE"  # no check

    @property
    def transitive(self) -> bool:
        return self.name.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        return self.name.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        return self.name.startswith(("FORWARD", "FULL"))


DEFAULT_COMPATIBILITY = Compatibility.BACKWARD


@dataclass(frozen=True, slots=True)
class Change:
    """One incompatible change. `sentence` names {reader} and {writer} (version numbers)."""

    kind: str  # Confluent's Difference.Type name, e.g. REQUIRED_ATTRIBUTE_ADDED
    location: str  # JSON pointer into the schemas, e.g. /properties/currency
    sentence: str

    def describe(self, reader: str, writer: str) -> str:
        return self.sentence.format(reader=reader, writer=writer)


@dataclass(frozen=True, slots=True)
class Breach:
    """A change that breaks the topic's rule between two versions (None: the version being
    registered) in one of the contract's schemas (`field`: schema, key_schema, ...)."""

    rule: Compatibility
    reader_version: int | None
    writer_version: int | None
    change: Change
    field: str = "schema"

    @property
    def detail(self) -> str:
        reader, writer = _label(self.reader_version), _label(self.writer_version)
        return (
            f"{self.change.describe(reader, writer)} breaks {self.rule.value}: readers of"
            f" {reader} cannot read {writer}'s records"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.value,
            "reader_version": self.reader_version,
            "writer_version": self.writer_version,
            "change": self.change.kind,
            "location": f"/{self.field}" + self.change.location.rstrip("/"),
            "detail": self.detail,
        }


def _label(version: int | None) -> str:
    return "the new version" if version is None else f"version {version}"


def breaches(
    rule: Compatibility, new: Schema, kept: Sequence[tuple[int, Schema]], field: str = "schema"
) -> list[Breach]:
    """What stops the `new` schema from following the `kept` versions ((number, schema),
    oldest first) under `rule`: against the latest only, or every kept one when transitive."""
    if rule is Compatibility.NONE or not kept:
        return []
    others = list(reversed(kept)) if rule.transitive else [kept[-1]]
    found: list[Breach] = []
    for version, schema in others:
        if rule.backward:  # the new version reads the other's records
            found += [Breach(rule, None, version, c, field) for c in changes(new, schema)]
        if rule.forward:  # the other version reads the new one's records
            found += [Breach(rule, version, None, c, field) for c in changes(schema, new)]
    return found


def changes(reader: Schema, writer: Schema) -> list[Change]:
    """Every change that stops `reader` from accepting all that `writer` accepts."""
    return _Diff(reader, writer).run()


# -- the comparison ---------------------------------------------------------------------------

# Keywords that never decide validity (annotations) or that this module handles itself.
_ANNOTATIONS = frozenset({
    "$schema", "$id", "$anchor", "$dynamicAnchor", "$comment", "$defs", "definitions",
    "$vocabulary", "title", "description", "default", "examples", "deprecated", "readOnly",
    "writeOnly", "contentEncoding", "contentMediaType", "contentSchema",
})  # fmt: skip
_HANDLED = frozenset({
    "type", "enum", "const", "allOf", "anyOf", "oneOf", "not", "$ref",
    "maxLength", "minLength", "pattern", "format",
    "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "multipleOf",
    "properties", "required", "additionalProperties", "patternProperties",
    "dependentRequired", "dependentSchemas", "maxProperties", "minProperties",
    "propertyNames", "unevaluatedProperties",
    "items", "prefixItems", "maxItems", "minItems", "uniqueItems", "contains",
    "maxContains", "minContains", "unevaluatedItems",
})  # fmt: skip
_OBJECT_KEYWORDS = frozenset({
    "properties", "required", "additionalProperties", "patternProperties",
    "dependentRequired", "dependentSchemas", "maxProperties", "minProperties",
    "propertyNames", "unevaluatedProperties",
})  # fmt: skip
_ARRAY_KEYWORDS = frozenset({
    "items", "prefixItems", "maxItems", "minItems", "uniqueItems", "contains", "maxContains",
    "minContains", "unevaluatedItems",
})  # fmt: skip
_STRING_KEYWORDS = frozenset({"maxLength", "minLength", "pattern", "format"})
_NUMBER_KEYWORDS = frozenset(
    {"maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "multipleOf"}
)
_COMBINERS = ("allOf", "anyOf", "oneOf")

# (keyword, Confluent's prefix, whether a larger value is looser)
_BOUNDS = (
    ("maxLength", "MAX_LENGTH", True),
    ("minLength", "MIN_LENGTH", False),
    ("maximum", "MAXIMUM", True),
    ("minimum", "MINIMUM", False),
    ("exclusiveMaximum", "EXCLUSIVE_MAXIMUM", True),
    ("exclusiveMinimum", "EXCLUSIVE_MINIMUM", False),
    ("maxProperties", "MAX_PROPERTIES", True),
    ("minProperties", "MIN_PROPERTIES", False),
    ("maxItems", "MAX_ITEMS", True),
    ("minItems", "MIN_ITEMS", False),
    ("maxContains", "MAX_CONTAINS", True),
    ("minContains", "MIN_CONTAINS", False),
)
_MAX_DEPTH = 64  # recursive $refs compare this deep, then count as compatible


def _code(text: str) -> str:
    return f"`{text}`"


class _Diff:
    """One comparison: resolves local `$ref`s of each side against its own root."""

    def __init__(self, reader: Schema, writer: Schema) -> None:
        self.reader_root = reader
        self.writer_root = writer
        self.found: list[Change] = []

    def run(self) -> list[Change]:
        self.compare(self.reader_root, self.writer_root, "", 0)
        return self.found

    def add(self, kind: str, at: str, sentence: str) -> None:
        self.found.append(Change(kind, at or "/", sentence))

    def sub(self, reader: Schema, writer: Schema, at: str, depth: int) -> list[Change]:
        """Compare without reporting: the changes a branch would bring."""
        outer, self.found = self.found, []
        try:
            self.compare(reader, writer, at, depth)
            return self.found
        finally:
            self.found = outer

    # -- dispatch ------------------------------------------------------------------------

    def compare(self, reader: Schema, writer: Schema, at: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        reader = _resolve(self.reader_root, reader)
        writer = _resolve(self.writer_root, writer)
        if writer is False or _is_empty(reader) or reader == writer:
            return
        if reader is False:
            self.add(
                "TYPE_CHANGED", at, "{reader} accepts nothing (`false`) where {writer} has values"
            )
            return
        if _is_empty(writer):
            self.add(
                "TYPE_NARROWED",
                at,
                f"{{reader}} constrains {_where(at)}, which {{writer}} leaves unconstrained",
            )
            return
        assert isinstance(reader, dict)
        assert isinstance(writer, dict)
        if "enum" in writer or "const" in writer:
            self.values(reader, writer, at)
            return
        reader_kind, writer_kind = _kind(reader), _kind(writer)
        if reader_kind == "combined" or writer_kind == "combined":
            self.combined(reader, writer, at, depth)
            return
        if reader_kind == "not" and writer_kind == "not":
            if self.sub(writer["not"], reader["not"], at + "/not", depth + 1):
                self.add(
                    "NOT_TYPE_EXTENDED",
                    at + "/not",
                    "the `not` of {reader} excludes values that the `not` of {writer} allows",
                )
            return
        if reader_kind == "enum":
            self.add(
                "TYPE_CHANGED",
                at,
                f"{{reader}} accepts only listed values at {_where(at)}, where {{writer}}"
                " accepts any value of its type",
            )
            return
        reader_types, writer_types = _types(reader), _types(writer)
        if len(writer_types) > 1 or len(reader_types) > 1:
            self.type_sets(reader, writer, reader_types, writer_types, at, depth)
            return
        self.same_kind(reader, writer, reader_types, writer_types, at, depth)

    def type_sets(
        self,
        reader: dict[str, Any],
        writer: dict[str, Any],
        reader_types: frozenset[str],
        writer_types: frozenset[str],
        at: str,
        depth: int,
    ) -> None:
        """`type` lists compare as anyOf of one schema per type (Karapace's normal form)."""
        self.combined(
            {"anyOf": _split_types(reader, reader_types)} if len(reader_types) > 1 else reader,
            {"anyOf": _split_types(writer, writer_types)} if len(writer_types) > 1 else writer,
            at,
            depth,
            report_at=at + "/type",
        )

    def same_kind(
        self,
        reader: dict[str, Any],
        writer: dict[str, Any],
        reader_types: frozenset[str],
        writer_types: frozenset[str],
        at: str,
        depth: int,
    ) -> None:
        reader_type = next(iter(reader_types), None)
        writer_type = next(iter(writer_types), None)
        numbers = {"integer", "number"}
        if reader_type != writer_type:
            if reader_type in numbers and writer_type in numbers:
                if reader_type == "integer":
                    self.add(
                        "TYPE_NARROWED",
                        at + "/type",
                        f"{_where(at)} is an integer in {{reader}} but any number in {{writer}}",
                    )
            elif reader_type is not None:
                self.add(
                    "TYPE_CHANGED",
                    at + "/type",
                    f"{_where(at)} is {_a(reader_type)} in {{reader}} but"
                    f" {_a(writer_type or 'any value')} in {{writer}}",
                )
                return
        self.bounds(reader, writer, at)
        self.text(reader, writer, at)
        self.multiple_of(reader, writer, at)
        if reader_type in (None, "object") or writer_type == "object":
            self.object(reader, writer, at, depth)
        if reader_type in (None, "array") or writer_type == "array":
            self.array(reader, writer, at, depth)
        self.others(reader, writer, at)

    # -- values, bounds, strings, numbers ---------------------------------------------------

    def values(self, reader: dict[str, Any], writer: dict[str, Any], at: str) -> None:
        """A writer that lists its values is compatible when the reader accepts each one."""
        listed = [writer["const"]] if "const" in writer else list(writer["enum"])
        try:
            accepts = _validator(self.reader_root, reader)
        except ValueError:
            accepts = None
        refused = [v for v in listed if accepts is None or not accepts(v)]
        if refused:
            kind = "ENUM_ARRAY_NARROWED" if "enum" in reader else "TYPE_CHANGED"
            shown = ", ".join(_code(_json(v)) for v in refused[:5])
            self.add(
                kind,
                at,
                f"{{reader}} refuses {shown} at {_where(at)}, which {{writer}} may write",
            )

    def bounds(self, reader: dict[str, Any], writer: dict[str, Any], at: str) -> None:
        for keyword, name, larger_is_looser in _BOUNDS:
            ours, theirs = reader.get(keyword), writer.get(keyword)
            if ours is None or ours == theirs:
                continue
            if theirs is None:
                self.add(
                    f"{name}_ADDED",
                    f"{at}/{keyword}",
                    f"{{reader}} adds {_code(keyword)}: {_json(ours)} at {_where(at)}, which"
                    " {writer} does not bound",
                )
            elif (ours < theirs) if larger_is_looser else (ours > theirs):
                direction = "DECREASED" if larger_is_looser else "INCREASED"
                self.add(
                    f"{name}_{direction}",
                    f"{at}/{keyword}",
                    f"{_code(keyword)} at {_where(at)} is {_json(ours)} in {{reader}} but"
                    f" {_json(theirs)} in {{writer}}",
                )
        if reader.get("uniqueItems") is True and writer.get("uniqueItems") is not True:
            self.add(
                "UNIQUE_ITEMS_ADDED",
                at + "/uniqueItems",
                f"{{reader}} requires unique items at {_where(at)} and {{writer}} does not",
            )

    def text(self, reader: dict[str, Any], writer: dict[str, Any], at: str) -> None:
        for keyword, name in (("pattern", "PATTERN"), ("format", "FORMAT")):
            ours, theirs = reader.get(keyword), writer.get(keyword)
            if ours is None or ours == theirs:
                continue
            kind, how = (
                (f"{name}_ADDED", "adds") if theirs is None else (f"{name}_CHANGED", "changes")
            )
            self.add(
                kind,
                f"{at}/{keyword}",
                f"{{reader}} {how} {_code(keyword)} {_json(ours)} at {_where(at)}"
                + ("" if theirs is None else f" (in {{writer}}: {_json(theirs)})"),
            )

    def multiple_of(self, reader: dict[str, Any], writer: dict[str, Any], at: str) -> None:
        ours, theirs = reader.get("multipleOf"), writer.get("multipleOf")
        if ours is None or ours == theirs:
            return
        if theirs is None:
            kind = "MULTIPLE_OF_ADDED"
        elif _divides(ours, theirs):
            return
        else:
            kind = "MULTIPLE_OF_EXPANDED" if _divides(theirs, ours) else "MULTIPLE_OF_CHANGED"
        self.add(
            kind,
            at + "/multipleOf",
            f"{{reader}} requires multiples of {_json(ours)} at {_where(at)}, and {{writer}}"
            + (" has no such rule" if theirs is None else f" writes multiples of {_json(theirs)}"),
        )

    # -- objects ------------------------------------------------------------------------

    def object(self, reader: dict[str, Any], writer: dict[str, Any], at: str, depth: int) -> None:
        reader_props: Mapping[str, Schema] = reader.get("properties", {})
        writer_props: Mapping[str, Schema] = writer.get("properties", {})
        reader_required = set(reader.get("required", ()))
        writer_required = set(writer.get("required", ()))
        for name in sorted(reader_required - writer_required):
            where = f"{at}/properties/{escape(name)}"
            if name in reader_props and "default" in _resolve(self.reader_root, reader_props[name]):
                continue  # REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED is compatible
            if name in writer_props or name not in reader_props:
                self.add(
                    "REQUIRED_ATTRIBUTE_ADDED",
                    where,
                    f"the property {_code(name)}, required in {{reader}} but optional in"
                    " {writer}, has no default",
                )
            elif not _open(writer):  # added to a closed or partially open model
                self.add(
                    "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
                    where,
                    f"a required property {_code(name)} that {{writer}} does not declare,"
                    " without a default,",
                )
        for name in sorted(writer_props.keys() - reader_props.keys()):
            self.property_removed(reader, name, writer_props[name], at, depth)
        for name in sorted(reader_props.keys() - writer_props.keys()):
            self.property_added(writer, name, reader_props[name], at, depth)
        for name in sorted(reader_props.keys() & writer_props.keys()):
            where = f"{at}/properties/{escape(name)}"
            self.compare(reader_props[name], writer_props[name], where, depth + 1)
        self.dependencies(reader, writer, at, depth)
        for keyword, name in (
            ("additionalProperties", "ADDITIONAL_PROPERTIES"),
            ("unevaluatedProperties", "UNEVALUATED_PROPERTIES"),
        ):
            self.rest(
                reader.get(keyword, True), writer.get(keyword, True), at, keyword, name, depth
            )
        if "propertyNames" in reader:
            self.compare(
                reader["propertyNames"],
                writer.get("propertyNames", True),
                at + "/propertyNames",
                depth + 1,
            )

    def property_removed(
        self, reader: dict[str, Any], name: str, schema: Schema, at: str, depth: int
    ) -> None:
        """A property the writer declares and the reader does not."""
        if _open(reader):
            return  # PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL
        where = f"{at}/properties/{escape(name)}"
        covering = _covering(reader, name)
        if covering is not None:
            if self.sub(covering, schema, where, depth + 1):
                self.add(
                    "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                    where,
                    f"{{writer}} declares {_code(name)}, which {{reader}} does not, and the"
                    f" schema {{reader}} applies to other properties refuses its values",
                )
        elif _resolve(self.writer_root, schema) is not False:
            self.add(
                "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
                where,
                f"{{writer}} declares {_code(name)}, which {{reader}} does not declare and its"
                " closed content model (`additionalProperties: false`) refuses",
            )

    def property_added(
        self, writer: dict[str, Any], name: str, schema: Schema, at: str, depth: int
    ) -> None:
        """A property the reader declares and the writer does not."""
        where = f"{at}/properties/{escape(name)}"
        if _open(writer):
            if not _is_empty(_resolve(self.reader_root, schema)):
                self.add(
                    "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
                    where,
                    f"the property {_code(name)}, new in {{reader}}, was free in {{writer}}'s"
                    " open content model, so its records may already hold any value there"
                    " (close the model with `additionalProperties: false` first, or give the"
                    " property an empty schema)",
                )
            return
        covering = _covering(writer, name)
        if covering is not None and self.sub(schema, covering, where, depth + 1):
            self.add(
                "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                where,
                f"the property {_code(name)}, new in {{reader}}, refuses values that"
                " {writer}'s schema for other properties lets through",
            )

    def dependencies(
        self, reader: dict[str, Any], writer: dict[str, Any], at: str, depth: int
    ) -> None:
        ours: Mapping[str, list[str]] = reader.get("dependentRequired", {})
        theirs: Mapping[str, list[str]] = writer.get("dependentRequired", {})
        for name, needed in sorted(ours.items()):
            extra = sorted(set(needed) - set(theirs.get(name, ())))
            if extra:
                self.add(
                    "DEPENDENCY_ARRAY_ADDED" if name not in theirs else "DEPENDENCY_ARRAY_EXTENDED",
                    f"{at}/dependentRequired/{escape(name)}",
                    f"{{reader}} requires {', '.join(map(_code, extra))} whenever"
                    f" {_code(name)} is present, and {{writer}} does not",
                )
        our_schemas: Mapping[str, Schema] = reader.get("dependentSchemas", {})
        their_schemas: Mapping[str, Schema] = writer.get("dependentSchemas", {})
        for name, schema in sorted(our_schemas.items()):
            where = f"{at}/dependentSchemas/{escape(name)}"
            if name not in their_schemas:
                self.add(
                    "DEPENDENCY_SCHEMA_ADDED",
                    where,
                    f"{{reader}} adds a schema that applies when {_code(name)} is present",
                )
            else:
                self.compare(schema, their_schemas[name], where, depth + 1)

    def rest(
        self, reader: Schema, writer: Schema, at: str, keyword: str, name: str, depth: int
    ) -> None:
        """additionalProperties/unevaluatedProperties/items-past-the-tuple: the model of what
        is not declared."""
        reader, writer = _resolve(self.reader_root, reader), _resolve(self.writer_root, writer)
        where = f"{at}/{keyword}"
        if reader is False and writer is not False:
            self.add(
                f"{name}_REMOVED",
                where,
                f"{{reader}} closes the content model at {_where(at)} (`{keyword}: false`)"
                " where {writer} lets more through",
            )
        elif writer is not False and not _is_empty(reader):
            if _is_empty(writer):
                self.add(
                    f"{name}_NARROWED",
                    where,
                    f"{{reader}} constrains `{keyword}` at {_where(at)}, which {{writer}}"
                    " leaves open",
                )
            else:
                self.compare(reader, writer, where, depth + 1)

    # -- arrays -------------------------------------------------------------------------

    def array(self, reader: dict[str, Any], writer: dict[str, Any], at: str, depth: int) -> None:
        reader_tuple: list[Schema] = reader.get("prefixItems", [])
        writer_tuple: list[Schema] = writer.get("prefixItems", [])
        reader_rest = reader.get("items", True)
        writer_rest = writer.get("items", True)
        for i in range(max(len(reader_tuple), len(writer_tuple))):
            where = f"{at}/prefixItems/{i}"
            if i < len(reader_tuple) and i < len(writer_tuple):
                self.compare(reader_tuple[i], writer_tuple[i], where, depth + 1)
            elif i < len(writer_tuple):  # the reader's `items` covers the writer's position
                if self.sub(reader_rest, writer_tuple[i], where, depth + 1):
                    self.add(
                        "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL"
                        if reader_rest is not False
                        else "ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL",
                        where,
                        f"item {i}, declared by {{writer}}, is refused by {{reader}}'s `items`",
                    )
            elif self.sub(reader_tuple[i], writer_rest, where, depth + 1):
                self.add(
                    "ITEM_ADDED_TO_OPEN_CONTENT_MODEL"
                    if _is_empty(_resolve(self.writer_root, writer_rest))
                    else "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                    where,
                    f"item {i}, new in {{reader}}, refuses values that {{writer}} may put there",
                )
        self.rest(reader_rest, writer_rest, at, "items", "ADDITIONAL_ITEMS", depth)
        self.rest(
            reader.get("unevaluatedItems", True),
            writer.get("unevaluatedItems", True),
            at,
            "unevaluatedItems",
            "UNEVALUATED_ITEMS",
            depth,
        )
        if "contains" in reader:
            if "contains" not in writer:
                self.add(
                    "CONTAINS_ADDED",
                    at + "/contains",
                    f"{{reader}} requires an item matching `contains` at {_where(at)}",
                )
            else:
                self.compare(reader["contains"], writer["contains"], at + "/contains", depth + 1)

    # -- combinations -------------------------------------------------------------------

    def combined(
        self,
        reader: dict[str, Any],
        writer: dict[str, Any],
        at: str,
        depth: int,
        report_at: str | None = None,
    ) -> None:
        report_at = report_at or at
        reader_how, reader_branches = _branches(reader)
        writer_how, writer_branches = _branches(writer)
        if (reader_how is None) != (writer_how is None):  # one side combines: singletons unwrap
            if reader_how is not None and len(reader_branches) == 1:
                self.compare(reader_branches[0], writer, at, depth + 1)
                return
            if writer_how is not None and len(writer_branches) == 1:
                self.compare(reader, writer_branches[0], at, depth + 1)
                return
        if writer_how is None:  # the reader combines, the writer does not
            if reader_how in ("anyOf", "oneOf") and any(
                not self.sub(branch, writer, at, depth + 1) for branch in reader_branches
            ):
                return  # SUM_TYPE_EXTENDED
            self.add(
                "TYPE_CHANGED",
                report_at,
                f"no branch of {{reader}}'s {reader_how} at {_where(at)} accepts all that"
                " {writer} writes there",
            )
            return
        if reader_how is None:
            self.add(
                "TYPE_CHANGED",
                report_at,
                f"{{writer}} writes any of its {writer_how} branches at {_where(at)} and"
                " {reader} accepts only one kind",
            )
            return
        if reader_how != writer_how and reader_how != "anyOf":
            self.add(
                "COMBINED_TYPE_CHANGED",
                report_at,
                f"{_where(at)} combines with {reader_how} in {{reader}} and {writer_how} in"
                " {writer}",
            )
            return
        if reader_how == "allOf" and len(reader_branches) > len(writer_branches):
            self.add(
                "PRODUCT_TYPE_EXTENDED",
                report_at,
                f"{{reader}} adds conditions to the allOf at {_where(at)}",
            )
            return
        if reader_how != "allOf" and len(reader_branches) < len(writer_branches):
            self.add(
                "SUM_TYPE_NARROWED",
                report_at,
                f"{{reader}} has fewer {reader_how} branches at {_where(at)} than {{writer}}",
            )
            return
        edges = {
            (r, w)
            for r, reader_branch in enumerate(reader_branches)
            for w, writer_branch in enumerate(writer_branches)
            if not self.sub(reader_branch, writer_branch, at, depth + 1)
        }
        if _matching(edges, len(reader_branches)) < min(len(reader_branches), len(writer_branches)):
            self.add(
                "COMBINED_TYPE_SUBSCHEMAS_CHANGED",
                report_at,
                f"the {reader_how} branches at {_where(at)} in {{reader}} do not each accept"
                " a branch of {writer}",
            )

    def others(self, reader: dict[str, Any], writer: dict[str, Any], at: str) -> None:
        """Assertions this module does not model (if/then/else, vendor keywords) must not be
        added or changed by the reader."""
        for keyword in sorted(reader.keys() - _ANNOTATIONS - _HANDLED):
            if keyword.startswith("x-") or reader[keyword] == writer.get(keyword):
                continue
            self.add(
                "KEYWORD_CHANGED",
                f"{at}/{escape(keyword)}",
                f"{{reader}} adds or changes {_code(keyword)} at {_where(at)}, which logway"
                " cannot prove compatible",
            )


# -- helpers --------------------------------------------------------------------------------


def _is_empty(schema: Schema) -> bool:
    """True for the schemas that accept everything: `true`, `{}`, annotations only."""
    if schema is True:
        return True
    return isinstance(schema, dict) and not (schema.keys() - _ANNOTATIONS)


def _resolve(root: Schema, schema: Schema) -> Schema:
    """Follow a local `$ref` (`#`, `#/$defs/...`); siblings of the `$ref` apply as well."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
        target = _pointer_target(root, schema["$ref"])
        if target is None:
            return schema
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        if siblings.keys() - _ANNOTATIONS:
            return {"allOf": [target, siblings]}
        schema, seen = target, seen + 1
    return schema


def _pointer_target(root: Schema, ref: str) -> Schema | None:
    if not ref.startswith("#"):
        return None
    node = root
    for token in ref[1:].split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def _kind(schema: dict[str, Any]) -> str:
    if any(k in schema for k in _COMBINERS):
        return "combined"
    if "not" in schema and not (schema.keys() - _ANNOTATIONS - {"not"}):
        return "not"
    if "enum" in schema or "const" in schema:
        return "enum"
    return "typed"


def _types(schema: dict[str, Any]) -> frozenset[str]:
    """The JSON types a schema allows, from `type` or, without one, from its keywords."""
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(declared)
    keys = schema.keys()
    inferred = set()
    if keys & _OBJECT_KEYWORDS:
        inferred.add("object")
    if keys & _ARRAY_KEYWORDS:
        inferred.add("array")
    if keys & _STRING_KEYWORDS:
        inferred.add("string")
    if keys & _NUMBER_KEYWORDS:
        inferred.add("number")
    return frozenset(inferred) if len(inferred) == 1 else frozenset()


def _split_types(schema: dict[str, Any], types: frozenset[str]) -> list[Schema]:
    return [{**schema, "type": t} for t in sorted(types)]


def _branches(schema: dict[str, Any]) -> tuple[str | None, list[Schema]]:
    for how in _COMBINERS:
        if how in schema:
            rest = {k: v for k, v in schema.items() if k != how}
            branches = list(schema[how])
            if rest.keys() - _ANNOTATIONS:  # siblings constrain every branch: allOf them
                if how == "allOf":
                    return how, [*branches, rest]
                return "allOf", [{how: branches}, rest]
            return how, branches
    return None, [schema]


def _open(schema: dict[str, Any]) -> bool:
    """An open content model: undeclared properties may hold anything."""
    return not schema.get("patternProperties") and _is_empty(
        schema.get("additionalProperties", True)
    )


def _covering(schema: dict[str, Any], name: str) -> Schema | None:
    """The schema a partially open model applies to an undeclared property, or None when
    the model is closed to it (`false`)."""
    for pattern, sub in schema.get("patternProperties", {}).items():
        try:
            if jsonschema_rs.validator_for({"pattern": pattern}).is_valid(name):
                return sub
        except ValueError:
            continue
    rest = schema.get("additionalProperties", True)
    return None if rest is False else rest


def _divides(divisor: float, number: float) -> bool:
    quotient = number / divisor
    return abs(quotient - round(quotient)) < 1e-9


def _matching(edges: set[tuple[int, int]], left: int) -> int:
    """Size of a maximum bipartite matching (Kuhn's augmenting paths; branches are few)."""
    neighbours: dict[int, list[int]] = {}
    for r, w in edges:
        neighbours.setdefault(r, []).append(w)
    owner: dict[int, int] = {}

    def augment(r: int, seen: set[int]) -> bool:
        for w in neighbours.get(r, []):
            if w not in seen:
                seen.add(w)
                if w not in owner or augment(owner[w], seen):
                    owner[w] = r
                    return True
        return False

    return sum(augment(r, set()) for r in range(left))


def _validator(root: Schema, schema: Schema) -> Callable[[Any], bool]:
    """`is_valid` of `schema` resolved against `root` (for enum values)."""
    combined = (
        {"$defs": root.get("$defs", {}), "allOf": [schema]} if isinstance(root, dict) else schema
    )
    validator = jsonschema_rs.validator_for(combined, offline=True, validate_formats=True)
    return validator.is_valid


def _where(at: str) -> str:
    return f"`{at}`" if at else "the top level"


def _a(type_name: str) -> str:
    return ("an " if type_name[0] in "aeiou" else "a ") + type_name


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
