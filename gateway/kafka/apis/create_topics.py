"""CreateTopics: topics with a partition count and the configs logway knows (retention.ms,
retention.bytes, segment.bytes, segment.ms, parsed as HTTP's PUT parses them).

This broker is one node: a replication factor other than -1 (default) or 1 is refused
with INVALID_REPLICATION_FACTOR (replication is the backend's: JetStream replicas), as are
manual replica assignments. Unknown configs are INVALID_CONFIG, never ignored.
"""

from __future__ import annotations

from gateway.http.problems import Problem
from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode, error_code_of
from gateway.kafka.schema import ZERO_UUID
from gateway.routes.topics import config_from_json, config_to_json
from storage import errors
from storage.names import validate_topic_name
from storage.types import TopicConfig

MAX_PARTITIONS = 10_000


def _config(entries: list[Body]) -> TopicConfig:
    """Raises ValueError naming the first config that is not a known integer setting."""
    values: dict[str, int] = {}
    for entry in entries:
        try:
            values[entry["name"]] = int(entry["value"])
        except (TypeError, ValueError):
            raise ValueError(f"config {entry['name']} must be an integer") from None
    try:
        return config_from_json(values)
    except Problem as problem:
        raise ValueError(problem.detail) from None


async def _create(broker: Broker, session: Session, topic: Body, validate_only: bool) -> Body:
    name = topic["name"]
    answer: Body = {"name": name, "topic_id": ZERO_UUID, "error_code": ErrorCode.NONE}
    partitions = topic["num_partitions"]
    if partitions == -1:
        partitions = broker.ctx.settings.default_partitions
    error: tuple[ErrorCode, str] | None = None
    config = TopicConfig()
    try:
        validate_topic_name(name)
        config = _config(topic["configs"])
    except errors.InvalidTopicName as exc:
        error = (ErrorCode.INVALID_TOPIC_EXCEPTION, str(exc))
    except ValueError as exc:
        error = (ErrorCode.INVALID_CONFIG, str(exc))
    if error is None and not broker.allows(session, "admin", "topic", name):
        error = (ErrorCode.TOPIC_AUTHORIZATION_FAILED, f"may not create topic {name!r}")
    elif error is None and not 1 <= partitions <= MAX_PARTITIONS:
        error = (ErrorCode.INVALID_PARTITIONS, f"partitions must be 1 to {MAX_PARTITIONS}")
    elif error is None and topic["replication_factor"] not in (-1, 1):
        error = (
            ErrorCode.INVALID_REPLICATION_FACTOR,
            "this broker is a single node; replication is the storage backend's",
        )
    elif error is None and topic["assignments"]:
        error = (ErrorCode.INVALID_REPLICA_ASSIGNMENT, "replica assignments are not supported")
    if error is None:
        backend = broker.ctx.backend
        try:
            if validate_only:
                await backend.get_topic(name)
                error = (ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
            elif await backend.create_topic(name, partitions, config):
                broker.ctx.chunks.forget_topic(name)
                broker.producers.forget_topic(name)
            else:
                error = (ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        except errors.TopicNotFound:
            pass  # validate_only, and free to create
        except errors.TopicExists:
            error = (ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        except errors.StorageError as exc:
            error = (error_code_of(exc), str(exc))
    if error is not None:
        answer["error_code"], answer["error_message"] = error
        return answer
    answer["num_partitions"] = partitions
    answer["replication_factor"] = 1
    answer["configs"] = [
        {"name": key, "value": str(value), "read_only": False, "is_sensitive": False}
        for key, value in config_to_json(config).items()
    ]
    return answer


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    validate_only = request.body["validate_only"]
    return {
        "topics": [
            await _create(broker, session, topic, validate_only) for topic in request.body["topics"]
        ]
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {
        "topics": [
            {
                "name": t["name"],
                "topic_id": ZERO_UUID,
                "error_code": error,
                "error_message": message,
            }
            for t in request.body.get("topics", [])
        ]
    }


API = Api(ApiKey.CREATE_TOPICS, "CreateTopics", 2, 7, handle, refuse)
