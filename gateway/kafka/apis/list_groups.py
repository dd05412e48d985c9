"""ListGroups: every group the principal has a right on (as `GET /v1/groups`), HTTP's and
Kafka's alike, with the protocol type "consumer" while it has members ("" otherwise, as for
groups a broker only keeps offsets of). v4 filters by state, v5 by type (all are
"classic": KIP-848's server-side groups are not served)."""

from __future__ import annotations

from gateway.groups.coordinator import GroupState
from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.access import may_list
from gateway.kafka.groups.consumer_protocol import PROTOCOL_TYPE

GROUP_TYPE = "classic"


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    states = {s.lower() for s in request.body["states_filter"]}
    types = {t.lower() for t in request.body["types_filter"]}
    if types and GROUP_TYPE not in types:
        return {"error_code": ErrorCode.NONE, "groups": []}
    listed = []
    for summary in await broker.ctx.groups.list_groups():
        state = summary.state.value
        if (states and state.lower() not in states) or not may_list(broker, session, summary.group):
            continue
        active = summary.members > 0 or summary.state is not GroupState.EMPTY
        listed.append(
            {
                "group_id": summary.group,
                "protocol_type": PROTOCOL_TYPE if active else "",
                "group_state": state,
                "group_type": GROUP_TYPE,
            }
        )
    return {"error_code": ErrorCode.NONE, "groups": listed}


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {"error_code": error, "groups": []}


API = Api(ApiKey.LIST_GROUPS, "ListGroups", 0, 5, handle, refuse)
