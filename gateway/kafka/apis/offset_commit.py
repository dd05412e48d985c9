"""OffsetCommit: a group's committed offsets, which are the backend's, the same HTTP's groups
read and write (`GET /v1/groups/{group}` shows them; an SSE member of the group starts
there). A member commits for the current generation (ClassicGroup.validate_commit has the
rules); a client that assigns itself commits with generation -1 and no member id, only
while the group has no members of either protocol.

Per partition, before the group decides: TOPIC_AUTHORIZATION_FAILED without `consume` on
the topic, UNKNOWN_TOPIC_OR_PARTITION, OFFSET_METADATA_TOO_LARGE past Kafka's 4 KiB, and
OFFSET_OUT_OF_RANGE for an offset below 0 or beyond the partition's end (a Kafka broker
takes any offset; an HTTP member would start reading at it). Metadata strings are not kept:
OffsetFetch answers "" (docs/kafka.md).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode, error_code_of
from gateway.kafka.groups.access import principal_id, refusal
from storage.errors import PartitionNotFound, StorageError, TopicNotFound
from storage.types import TopicPartition

MAX_METADATA_BYTES = 4096  # Kafka's offset.metadata.max.bytes


async def _check(broker: Broker, session: Session, topic: str, partition: Body) -> ErrorCode:
    if not broker.allows(session, "consume", "topic", topic):
        return ErrorCode.TOPIC_AUTHORIZATION_FAILED
    metadata = partition["committed_metadata"]
    if metadata is not None and len(metadata.encode()) > MAX_METADATA_BYTES:
        return ErrorCode.OFFSET_METADATA_TOO_LARGE
    try:
        info = await broker.ctx.backend.partition_info(topic, partition["partition_index"])
    except (TopicNotFound, PartitionNotFound):
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if not 0 <= partition["committed_offset"] <= info.end_offset:
        return ErrorCode.OFFSET_OUT_OF_RANGE
    return ErrorCode.NONE


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    group = body["group_id"]
    if (refused := refusal(broker, session, group)) is not None:
        return refuse(request, refused, None)
    errors: dict[TopicPartition, ErrorCode] = {}
    offsets: dict[TopicPartition, int] = {}
    for topic in body["topics"]:
        for partition in topic["partitions"]:
            tp = TopicPartition(topic["name"], partition["partition_index"])
            errors[tp] = await _check(broker, session, tp.topic, partition)
            if errors[tp] is ErrorCode.NONE:
                offsets[tp] = partition["committed_offset"]
    if offsets:
        try:
            error = await broker.groups.commit(
                group,
                body["member_id"],
                body["generation_id_or_member_epoch"],
                principal_id(session),
                offsets,
            )
        except StorageError as exc:
            error = error_code_of(exc)
        errors.update(dict.fromkeys(offsets, error))
    return _answer(request, lambda tp: errors[tp])


def _answer(request: Request, error_of: Callable[[TopicPartition], ErrorCode]) -> Body:
    return {
        "topics": [
            {
                "name": topic["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "error_code": error_of(TopicPartition(topic["name"], p["partition_index"])),
                    }
                    for p in topic["partitions"]
                ],
            }
            for topic in request.body.get("topics", [])
        ]
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return _answer(request, lambda tp: error)


API = Api(ApiKey.OFFSET_COMMIT, "OffsetCommit", 0, 9, handle, refuse)
