"""ListOffsets: a partition's earliest (-2) or latest (-1) offset, the last record (-3, the
"max timestamp" of KIP-734), or the first offset whose timestamp is at or after a time.

Offsets found by time come with that record's timestamp; a time after the last record
answers offset -1 and timestamp -1, as Kafka does.
"""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode, error_code_of
from storage import errors

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3


async def _timestamp_of(broker: Broker, topic: str, partition: int, offset: int) -> int:
    records = await broker.ctx.backend.read(topic, partition, offset, 1, 1)
    return records[0].timestamp_ms if records else -1


async def _offset(broker: Broker, topic: str, wanted: Body) -> Body:
    index = wanted["partition_index"]
    answer: Body = {"partition_index": index, "error_code": ErrorCode.NONE}
    backend = broker.ctx.backend
    timestamp = wanted["timestamp"]
    try:
        info = await backend.partition_info(topic, index)
        if timestamp == LATEST:
            answer.update(offset=info.end_offset, timestamp=-1)
        elif timestamp == EARLIEST:
            answer.update(offset=info.log_start_offset, timestamp=-1)
        elif timestamp == MAX_TIMESTAMP:
            last = info.end_offset - 1
            if last < info.log_start_offset:
                answer.update(offset=-1, timestamp=-1)
            else:
                answer.update(
                    offset=last, timestamp=await _timestamp_of(broker, topic, index, last)
                )
        elif timestamp < 0:
            answer["error_code"] = ErrorCode.UNSUPPORTED_VERSION
        else:
            offset = await backend.offset_for_timestamp(topic, index, timestamp)
            if offset >= info.end_offset:
                answer.update(offset=-1, timestamp=-1)
            else:
                found = await _timestamp_of(broker, topic, index, offset)
                answer.update(offset=offset, timestamp=found)
    except errors.StorageError as exc:
        answer["error_code"] = error_code_of(exc)
    answer["leader_epoch"] = 0
    return answer


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    topics = []
    for topic in request.body["topics"]:
        name = topic["name"]
        if not broker.allows(session, "consume", "topic", name):
            topics.append(_refused(topic, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
            continue
        topics.append(
            {
                "name": name,
                "partitions": [await _offset(broker, name, p) for p in topic["partitions"]],
            }
        )
    return {"topics": topics}


def _refused(topic: Body, error: ErrorCode) -> Body:
    return {
        "name": topic["name"],
        "partitions": [
            {"partition_index": p["partition_index"], "error_code": error}
            for p in topic["partitions"]
        ],
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {"topics": [_refused(t, error) for t in request.body.get("topics", [])]}


API = Api(ApiKey.LIST_OFFSETS, "ListOffsets", 1, 7, handle, refuse)
