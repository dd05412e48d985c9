"""LeaveGroup: members leave now (their partitions go to the others in a rebalance). v0-2
name one member; v3+ a batch, by member id or by group instance id."""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.access import principal_id, refusal


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    group = body["group_id"]
    if (refused := refusal(broker, session, group)) is not None:
        return refuse(request, refused, None)
    if request.version < 3:
        (error,) = broker.groups.leave(group, [(body["member_id"], None)], principal_id(session))
        return {"error_code": error}
    leaving = [(m["member_id"], m["group_instance_id"]) for m in body["members"]]
    errors = broker.groups.leave(group, leaving, principal_id(session))
    return {
        "error_code": ErrorCode.NONE,
        "members": [
            {"member_id": member_id, "group_instance_id": instance_id, "error_code": error}
            for (member_id, instance_id), error in zip(leaving, errors, strict=True)
        ],
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {"error_code": error}


API = Api(ApiKey.LEAVE_GROUP, "LeaveGroup", 0, 5, handle, refuse)
