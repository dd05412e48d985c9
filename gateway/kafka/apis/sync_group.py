"""SyncGroup: the leader hands in the assignment it computed, every member gets its share
(waiting until the leader's arrives)."""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.access import principal_id, refusal
from gateway.kafka.groups.classic import SyncAnswer


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    group = body["group_id"]
    if (refused := refusal(broker, session, group)) is not None:
        return refuse(request, refused, None)
    answer = await broker.groups.sync(
        group,
        body["member_id"],
        body["generation_id"],
        body["protocol_type"],
        body["protocol_name"],
        {a["member_id"]: bytes(a["assignment"]) for a in body["assignments"]},
        principal_id(session),
    )
    return _answer(answer)


def _answer(answer: SyncAnswer) -> Body:
    return {
        "error_code": answer.error,
        "protocol_type": answer.protocol_type,
        "protocol_name": answer.protocol_name,
        "assignment": answer.assignment,
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return _answer(SyncAnswer(error))


API = Api(ApiKey.SYNC_GROUP, "SyncGroup", 0, 5, handle, refuse)
