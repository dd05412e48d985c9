"""Heartbeat: a member is alive; REBALANCE_IN_PROGRESS tells it to rejoin."""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.access import principal_id, refusal


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    group = body["group_id"]
    if (refused := refusal(broker, session, group)) is not None:
        return refuse(request, refused, None)
    error = broker.groups.heartbeat(
        group, body["member_id"], body["generation_id"], principal_id(session)
    )
    return {"error_code": error}


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {"error_code": error}


API = Api(ApiKey.HEARTBEAT, "Heartbeat", 0, 4, handle, refuse)
