"""OffsetFetch: a group's committed offsets (the backend's, shared with HTTP's groups); -1
and no error for a partition it never committed. v8+ asks for several groups at once;
without topics (null), every partition the group committed, of topics the principal may
see. Metadata is always "" (not kept), the leader epoch -1."""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.access import refusal
from storage.errors import StorageError
from storage.types import TopicPartition

NO_OFFSET = -1


def _partition(index: int, offset: int, error: ErrorCode = ErrorCode.NONE) -> Body:
    return {
        "partition_index": index,
        "committed_offset": offset,
        "committed_leader_epoch": -1,
        "metadata": "",
        "error_code": error,
    }


def _each_asked(topics: list[Body] | None, error: ErrorCode) -> list[Body]:
    """The partitions asked for, each with `error` (v0-1 have no group-level error)."""
    return [
        {
            "name": t["name"],
            "partitions": [_partition(i, NO_OFFSET, error) for i in t["partition_indexes"]],
        }
        for t in topics or []
    ]


async def _group(
    broker: Broker, session: Session, group: str, topics: list[Body] | None
) -> tuple[ErrorCode, list[Body]]:
    """(group error, topics) for one group."""
    if (refused := refusal(broker, session, group)) is not None:
        return refused, []
    try:
        committed = await broker.groups.committed_offsets(group)
    except StorageError:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, []  # clients retry this one
    if topics is None:
        by_topic: dict[str, list[Body]] = {}
        for tp, offset in sorted(committed.items()):
            if broker.may_see(session, tp.topic):
                by_topic.setdefault(tp.topic, []).append(_partition(tp.partition, offset))
        return ErrorCode.NONE, [{"name": t, "partitions": p} for t, p in by_topic.items()]
    answered = []
    for topic in topics:
        name = topic["name"]
        if not broker.may_see(session, name):
            answered += _each_asked([topic], ErrorCode.TOPIC_AUTHORIZATION_FAILED)
            continue
        partitions = [
            _partition(i, committed.get(TopicPartition(name, i), NO_OFFSET))
            for i in topic["partition_indexes"]
        ]
        answered.append({"name": name, "partitions": partitions})
    return ErrorCode.NONE, answered


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    if request.version >= 8:
        groups = []
        for asked in body["groups"]:
            error, topics = await _group(broker, session, asked["group_id"], asked["topics"])
            groups.append({"group_id": asked["group_id"], "topics": topics, "error_code": error})
        return {"groups": groups}
    error, topics = await _group(broker, session, body["group_id"], body["topics"])
    if error is not ErrorCode.NONE and request.version < 2:
        return refuse(request, error, None)
    return {"topics": topics, "error_code": error}


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    body = request.body
    if request.version >= 8:
        return {
            "groups": [
                {"group_id": g["group_id"], "topics": [], "error_code": error}
                for g in body.get("groups", [])
            ]
        }
    return {"topics": _each_asked(body.get("topics"), error), "error_code": error}


API = Api(ApiKey.OFFSET_FETCH, "OffsetFetch", 0, 9, handle, refuse)
