"""Metadata: this broker, and the topics asked for (all the session may see when none are
named), each partition led by this broker with itself as the only replica.

A missing topic is created when the client allows it (`allow_auto_topic_creation`), the
server runs with `--auto-create-topics` and the session may produce to it: the rule of
HTTP produce.
"""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode, error_code_of
from gateway.kafka.schema import ZERO_UUID
from storage import errors
from storage.types import TopicConfig, TopicInfo


def _topic(broker: Broker, info: TopicInfo) -> Body:
    node = broker.node_id
    return {
        "error_code": ErrorCode.NONE,
        "name": info.name,
        "topic_id": ZERO_UUID,
        "partitions": [
            {
                "error_code": ErrorCode.NONE,
                "partition_index": p,
                "leader_id": node,
                "leader_epoch": 0,
                "replica_nodes": [node],
                "isr_nodes": [node],
                "offline_replicas": [],
            }
            for p in range(info.partitions)
        ],
    }


def _failed(name: str | None, error: ErrorCode) -> Body:
    return {"error_code": error, "name": name, "topic_id": ZERO_UUID, "partitions": []}


async def _named(broker: Broker, session: Session, name: str, auto_create: bool) -> Body:
    if not broker.may_see(session, name):
        return _failed(name, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    backend = broker.ctx.backend
    try:
        return _topic(broker, await backend.get_topic(name))
    except errors.TopicNotFound:
        if not (
            auto_create
            and broker.ctx.settings.auto_create_topics
            and broker.allows(session, "produce", "topic", name)
        ):
            return _failed(name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    except errors.StorageError as exc:
        return _failed(name, error_code_of(exc))
    try:
        created = await backend.create_topic(
            name, broker.ctx.settings.default_partitions, TopicConfig()
        )
        if created:
            broker.ctx.chunks.forget_topic(name)
        return _topic(broker, await backend.get_topic(name))
    except errors.TopicExists as exc:
        return _topic(broker, exc.existing)
    except errors.StorageError as exc:
        return _failed(name, error_code_of(exc))


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    requested = body["topics"]
    if requested is None or (request.version == 0 and not requested):
        topics = [
            _topic(broker, info)
            for info in await broker.ctx.backend.list_topics()
            if broker.may_see(session, info.name)
        ]
    else:
        topics = [
            await _named(broker, session, t["name"], body["allow_auto_topic_creation"])
            for t in requested
            if t["name"] is not None
        ]
    return {
        "brokers": [broker.node()],
        "cluster_id": broker.cluster_id,
        "controller_id": broker.node_id,
        "topics": topics,
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {
        "brokers": [],
        "topics": [_failed(t["name"], error) for t in request.body.get("topics") or []],
    }


API = Api(ApiKey.METADATA, "Metadata", 0, 12, handle, refuse)
