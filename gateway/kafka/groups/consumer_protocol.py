"""The consumer protocol's subscription and assignment (Kafka's ConsumerProtocolSubscription
and ConsumerProtocolAssignment, vendored in `messages/`): the bytes that members of a
consumer group exchange through JoinGroup and SyncGroup, opaque to a broker. logway reads
them to show a Kafka member's topics and partitions in `GET /v1/groups/{group}`, and writes
them to describe HTTP members to Kafka tools (DescribeGroups).

Each is an int16 version, then the struct at that version. A version newer than the
definitions is read as the newest known one, as Kafka's clients do (a newer version only
appends fields).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.kafka.schema import MalformedMessage, MessageSchema, Reader, load_schema

PROTOCOL_TYPE = "consumer"  # the protocol type of consumer groups (Connect's is "connect")
_VERSION = struct.Struct(">h")
_SUBSCRIPTION = load_schema("ConsumerProtocolSubscription")
_ASSIGNMENT = load_schema("ConsumerProtocolAssignment")


def _decode(schema: MessageSchema, data: bytes) -> dict[str, Any] | None:
    if len(data) < _VERSION.size:
        return None
    (version,) = _VERSION.unpack_from(data)
    if version < schema.valid.low:
        return None
    try:
        return schema.at(min(version, schema.valid.high)).decode(Reader(data, _VERSION.size))
    except MalformedMessage:
        return None


def subscribed_topics(metadata: bytes) -> tuple[str, ...] | None:
    """The topics a member's subscription names; None when the bytes are not one."""
    decoded = _decode(_SUBSCRIPTION, metadata)
    return None if decoded is None else tuple(decoded["topics"])


def assigned_partitions(assignment: bytes) -> dict[str, tuple[int, ...]] | None:
    """{topic: partitions} of an assignment; None when the bytes are not one ({} for the
    empty assignment a member has before its first SyncGroup)."""
    if not assignment:
        return {}
    decoded = _decode(_ASSIGNMENT, assignment)
    if decoded is None:
        return None
    out: dict[str, tuple[int, ...]] = {}
    for item in decoded["assigned_partitions"]:
        out[item["topic"]] = out.get(item["topic"], ()) + tuple(item["partitions"])
    return out


def subscription(topics: Sequence[str]) -> bytes:
    """A version 0 subscription to `topics`."""
    return _VERSION.pack(0) + _SUBSCRIPTION.at(0).to_bytes({"topics": list(topics)})


def assignment(partitions: Mapping[str, Sequence[int]]) -> bytes:
    """A version 0 assignment of {topic: partitions}."""
    assigned = [{"topic": t, "partitions": list(p)} for t, p in sorted(partitions.items())]
    return _VERSION.pack(0) + _ASSIGNMENT.at(0).to_bytes({"assigned_partitions": assigned})
