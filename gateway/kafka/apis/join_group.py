"""JoinGroup: join a consumer group, or rejoin for a rebalance; waits until the group's
next generation opens (gateway/kafka/groups/classic.py has the rules). A group with HTTP
members refuses Kafka members: INCONSISTENT_GROUP_PROTOCOL (docs/kafka.md)."""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.access import client_host, principal_id, refusal
from gateway.kafka.groups.classic import JoinAnswer, JoinRequest


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    group = body["group_id"]
    if (refused := refusal(broker, session, group)) is not None:
        return refuse(request, refused, None)
    session_timeout_ms = body["session_timeout_ms"]
    rebalance_timeout_ms = body["rebalance_timeout_ms"]
    if rebalance_timeout_ms < 0:  # v0 has none: the session timeout stands in
        rebalance_timeout_ms = session_timeout_ms
    instance_id = body["group_instance_id"]
    answer = await broker.groups.join(
        JoinRequest(
            group,
            body["member_id"],
            instance_id,
            request.client_id or "",
            client_host(session),
            principal_id(session),
            session_timeout_ms,
            rebalance_timeout_ms,
            body["protocol_type"],
            tuple((p["name"], bytes(p["metadata"])) for p in body["protocols"]),
            require_known_member_id=request.version >= 4 and instance_id is None,
        )
    )
    return _answer(request, answer)


def _answer(request: Request, answer: JoinAnswer) -> Body:
    no_name = None if request.version >= 7 else ""  # nullable from v7
    return {
        "error_code": answer.error,
        "generation_id": answer.generation,
        "protocol_type": answer.protocol_type,
        "protocol_name": no_name if answer.protocol_name is None else answer.protocol_name,
        "leader": answer.leader,
        "member_id": answer.member_id,
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "metadata": m.metadata,
            }
            for m in answer.members
        ],
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return _answer(request, JoinAnswer(error, request.body.get("member_id", "")))


API = Api(ApiKey.JOIN_GROUP, "JoinGroup", 0, 9, handle, refuse)
