"""Values the client sends and receives: frozen, validated where the wire would refuse them."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from logway_client.errors import ProtocolViolation

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to produce. `value` is any JSON value; bytes (or bytearray) are sent as
    `value_base64` and come back as `Record.value_bytes`. Without `partition`, the gateway
    picks it from the key (murmur2, like Kafka) or spreads records evenly."""

    value: Any = None
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    partition: int | None = None

    def __post_init__(self) -> None:
        if self.key is not None and not isinstance(self.key, str):
            raise TypeError("key must be a str or None")
        if self.partition is not None and (
            not isinstance(self.partition, int) or self.partition < 0
        ):
            raise ValueError("partition must be a non-negative int")
        for name, text in self.headers.items():
            if not isinstance(name, str) or not isinstance(text, str):
                raise TypeError("headers must map str to str")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"key": self.key}
        if isinstance(self.value, bytes | bytearray | memoryview):
            doc["value_base64"] = base64.b64encode(bytes(self.value)).decode("ascii")
        else:
            doc["value"] = self.value
        if self.headers:
            doc["headers"] = dict(self.headers)
        if self.partition is not None:
            doc["partition"] = self.partition
        return doc

    def encode(self) -> bytes:
        """The record's JSON as sent (compact, so batch sizes are what goes on the wire)."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Record:
    """A record read back. JSON values are parsed into `value` (then `value_bytes` is None);
    raw bytes are in `value_bytes` (then `value` is None)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch
    key: str | None
    value: Any
    value_bytes: bytes | None
    headers: Mapping[str, str]

    @property
    def next_offset(self) -> int:
        """What to commit once this record is processed (Kafka's convention)."""
        return self.offset + 1

    @classmethod
    def from_json(cls, doc: Any) -> Record:
        try:
            value_bytes = (
                base64.b64decode(doc["value_base64"], validate=True)
                if "value_base64" in doc
                else None
            )
            return cls(
                topic=doc["topic"],
                partition=doc["partition"],
                offset=doc["offset"],
                timestamp=doc["timestamp"],
                key=doc.get("key"),
                value=None if value_bytes is not None else doc.get("value"),
                value_bytes=value_bytes,
                headers=MappingProxyType(dict(doc.get("headers") or {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolViolation(f"not a record: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record was written."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    log_start_offset: int
    end_offset: int
    bytes: int


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as `describe_topic` returns it. `config` uses Kafka's dotted names."""

    name: str
    partitions: tuple[PartitionInfo, ...]
    config: Mapping[str, int]

    @classmethod
    def from_json(cls, doc: Any) -> TopicInfo:
        try:
            return cls(
                name=doc["name"],
                partitions=tuple(
                    PartitionInfo(
                        p["partition"], p["log_start_offset"], p["end_offset"], p["bytes"]
                    )
                    for p in doc["partitions"]
                ),
                config=MappingProxyType(dict(doc.get("config") or {})),
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolViolation(f"not a topic description: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """A registered version of a topic's schemas (JSON Schema draft 2020-12, as JSON)."""

    topic: str
    version: int
    registered_at: int  # ms since the epoch
    schema: Any
    key_schema: Any = None
    headers_schema: Any = None

    @classmethod
    def from_json(cls, topic: str, doc: Any) -> SchemaVersion:
        try:
            return cls(
                topic,
                doc["version"],
                doc["registered_at"],
                doc["schema"],
                doc.get("key_schema"),
                doc.get("headers_schema"),
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolViolation(f"not a schema version: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class TopicSummary:
    name: str
    partitions: int


@dataclass(frozen=True, slots=True)
class PullResult:
    """One pull: the records, where to continue (`next_offset`) and the partition's end."""

    records: tuple[Record, ...]
    next_offset: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class Assignment:
    """A consumer-group generation as announced to this member (`event: assignment`)."""

    member_id: str
    generation: int
    partitions: tuple[int, ...]

    @classmethod
    def from_json(cls, doc: Any) -> Assignment:
        try:
            return cls(str(doc["member_id"]), int(doc["generation"]), tuple(doc["partitions"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolViolation(f"not an assignment: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """A consumer group as `list_groups` returns it."""

    group: str
    state: str
    generation: int
    members: int


@dataclass(frozen=True, slots=True)
class GroupMember:
    member_id: str
    topic: str
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """A partition's committed offset (None: nothing committed) and lag behind its end."""

    topic: str
    partition: int
    committed_offset: int | None
    end_offset: int
    lag: int | None


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group: str
    state: str
    generation: int
    protocol: str | None
    members: tuple[GroupMember, ...]
    partitions: tuple[PartitionLag, ...]

    @classmethod
    def from_json(cls, doc: Any) -> GroupDescription:
        try:
            return cls(
                group=doc["group"],
                state=doc["state"],
                generation=doc["generation"],
                protocol=doc.get("protocol"),
                members=tuple(
                    GroupMember(m["member_id"], m["topic"], tuple(m["partitions"]))
                    for m in doc["members"]
                ),
                partitions=tuple(
                    PartitionLag(
                        p["topic"], p["partition"], p["committed_offset"], p["end_offset"], p["lag"]
                    )
                    for p in doc["partitions"]
                ),
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolViolation(f"not a group description: {exc!r}") from None
