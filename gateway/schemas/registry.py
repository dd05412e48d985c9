"""The schema registry's domain: registering versions under the topic's compatibility rule,
and checking produced records against the newest version.

Storage keeps the versions (the Backend's schema methods); this module keeps, per topic,
the newest version compiled (`SchemaCache`), so a produce request costs one in-memory
look-up and the validation itself. A registration checks compatibility against the versions
it read and stores with a compare-and-set on the newest version number, retried when
another registration or deletion came first, so a rule is never checked against a stale
history, also across gateways.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Any

from gateway.http.problems import Problem, validation_error
from gateway.schemas.compatibility import (
    DEFAULT_COMPATIBILITY,
    Breach,
    Compatibility,
    breaches,
)
from gateway.schemas.document import FIELDS, Contract
from gateway.schemas.validation import ValueSchema, Violation, parse
from storage.backend import Backend
from storage.errors import SchemaVersionConflict
from storage.types import NewRecord, SchemaVersion, ValueFormat

SCHEMA_VERSION_HEADER = "logway-schema-version"
MAX_VIOLATIONS = 10  # reported per request: enough to fix a batch, small enough to read
MAX_BREACHES = 50
_REGISTER_ATTEMPTS = 5

_value_of = attrgetter("value")
_key_of = attrgetter("key")
_format_of = attrgetter("value_format")
_headers_of = attrgetter("headers")
_JSON = ValueFormat.JSON


@dataclass(frozen=True, slots=True)
class Compiled:
    """A topic's newest schema version, compiled for produce."""

    stored: SchemaVersion
    contract: Contract
    value: ValueSchema
    key: ValueSchema | None
    headers: ValueSchema | None
    stamp: tuple[tuple[str, bytes], ...]  # the header each validated record gets

    @classmethod
    def build(cls, stored: SchemaVersion) -> Compiled:
        contract = Contract.decode(stored.schema)
        return cls(
            stored,
            contract,
            ValueSchema(contract.value),
            None if contract.key is None else ValueSchema(contract.key),
            None if contract.headers is None else ValueSchema(contract.headers),
            ((SCHEMA_VERSION_HEADER, str(stored.version).encode()),),
        )


@dataclass(slots=True)
class SchemaCache:
    """The newest version of each topic's schema, compiled once (one per topic)."""

    compiled: dict[str, Compiled] = field(default_factory=dict)

    async def active(self, backend: Backend, topic: str) -> Compiled | None:
        latest = await backend.latest_schema(topic)
        if latest is None:
            self.compiled.pop(topic, None)
            return None
        compiled = self.compiled.get(topic)
        if compiled is None or compiled.stored != latest:
            compiled = self.compiled[topic] = Compiled.build(latest)
        return compiled


# -- produce --------------------------------------------------------------------------------


def enforce(
    compiled: Compiled, topic: str, records: list[NewRecord], prefix: str
) -> list[NewRecord]:
    """The records stamped with the schema version, or a 422 naming what does not match
    (pointers are `prefix` + the record's index, e.g. /records/7/value/amount)."""
    headerless = not any(map(_headers_of, records))
    plain = (
        headerless
        and compiled.key is None
        and compiled.headers is None
        and ValueFormat.BYTES not in map(_format_of, records)
    )
    values = list(map(_value_of, records))
    if not (plain and compiled.value.valid_batch(values)):
        found = list(_violations(compiled, records, prefix))
        if found:
            raise _violation_problem(compiled, topic, found)
    if not headerless:
        fields: Iterator[tuple[Any, ...]] = zip(
            values,
            map(_key_of, records),
            (r.headers + compiled.stamp for r in records),
            map(_format_of, records),
            strict=True,
        )
    else:  # all share the one `stamp` tuple, which the codec encodes once per batch
        # (storage.codec.encode_batch); every value is JSON here (bytes were refused above)
        fields = zip(values, map(_key_of, records), repeat(compiled.stamp), repeat(_JSON))
    return list(map(tuple.__new__, repeat(NewRecord), fields))


def _violations(
    compiled: Compiled, records: list[NewRecord], prefix: str
) -> list[tuple[str, Violation]]:
    """(pointer of the record's member, violation), at most MAX_VIOLATIONS."""
    found: list[tuple[str, Violation]] = []
    for i, record in enumerate(records):
        at = f"{prefix}{i}"
        if record.value_format is ValueFormat.BYTES:
            found.append((f"{at}/value_base64", _base64_violation()))
        elif not compiled.value.valid_json(record.value):
            found += [(f"{at}/value", v) for v in compiled.value.violations(parse(record.value))]
        if compiled.key is not None:
            key = None if record.key is None else record.key.decode("utf-8", "replace")
            found += [(f"{at}/key", v) for v in compiled.key.violations(key)]
        names = [name for name, _ in record.headers]
        if SCHEMA_VERSION_HEADER in names:
            raise validation_error(
                f"{at}/headers/{SCHEMA_VERSION_HEADER}",
                "set by the gateway on a topic with a schema: leave it out",
            )
        if compiled.headers is not None:
            headers = {name: text.decode("utf-8", "replace") for name, text in record.headers}
            found += [(f"{at}/headers", v) for v in compiled.headers.violations(headers)]
        if len(found) >= MAX_VIOLATIONS:
            break
    return found[:MAX_VIOLATIONS]


def _base64_violation() -> Violation:
    return Violation(
        "", "type", "", "the topic has a schema: send the value as JSON (`value`), not as bytes"
    )


def _violation_problem(
    compiled: Compiled, topic: str, found: list[tuple[str, Violation]]
) -> Problem:
    errors = [
        {
            "pointer": member + v.pointer,
            "keyword": v.keyword,
            "schema_pointer": v.schema_pointer,
            "detail": v.detail,
        }
        for member, v in found
    ]
    first = errors[0]
    version = compiled.stored.version
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Problem(
        "schema-violation",
        f"{first['pointer']}: {first['detail']} (keyword `{first['keyword']}` of schema"
        f" version {version}){more}",
        topic=topic,
        schema_version=version,
        errors=errors,
    )


# -- the registry ---------------------------------------------------------------------------


def version_json(stored: SchemaVersion) -> dict[str, Any]:
    return {
        "version": stored.version,
        "registered_at": stored.registered_at_ms,
        **Contract.decode(stored.schema).to_json(),
    }


async def compatibility(backend: Backend, topic: str) -> Compatibility:
    stored = await backend.schema_compatibility(topic)
    return DEFAULT_COMPATIBILITY if stored is None else Compatibility(stored)


async def register(backend: Backend, topic: str, contract: Contract) -> tuple[SchemaVersion, bool]:
    """Keep `contract` as the topic's next version (True), or return the newest version when
    it is the same (False). Raises the 409 incompatible-schema problem."""
    for _ in range(_REGISTER_ATTEMPTS):
        kept = await backend.schema_versions(topic)
        if kept and Contract.decode(kept[-1].schema) == contract:
            return kept[-1], False
        rule = await compatibility(backend, topic)
        history = [(v.version, Contract.decode(v.schema)) for v in kept]
        found = [
            breach
            for field, part in FIELDS.items()
            for breach in breaches(
                rule,
                _part(contract, part),
                [(version, _part(old, part)) for version, old in history],
                field,
            )
        ]
        if found:
            raise _incompatible(rule, found)
        try:
            added = await backend.add_schema_version(
                topic, contract.encode(), kept[-1].version if kept else 0
            )
        except SchemaVersionConflict:
            continue  # registered or deleted meanwhile: check against the new history
        return added, True
    raise SchemaVersionConflict(topic, 0, 0)


def _part(contract: Contract, part: str) -> Any:
    """One schema of a contract; a schema it leaves out accepts everything."""
    schema = getattr(contract, part)
    return True if schema is None else schema


def _incompatible(rule: Compatibility, found: list[Breach]) -> Problem:
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return Problem(
        "incompatible-schema",
        found[0].detail + more,
        compatibility=rule.value,
        incompatibilities=[b.to_json() for b in found[:MAX_BREACHES]],
    )
