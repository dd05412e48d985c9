"""DescribeGroups: state, protocol and members of groups, whichever protocol the members
speak. Kafka members are shown as a broker shows them (metadata and assignment only while
Stable); HTTP members as consumers (client id `logway-http`) whose subscription and
assignment are written in the consumer protocol, so Kafka's tools show their partitions.
A group nobody knows is "Dead" with no error, as on a Kafka 3.x broker."""

from __future__ import annotations

from gateway.groups.errors import InvalidGroupName, UnknownGroup
from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups import consumer_protocol
from gateway.kafka.groups.access import authorized_operations, may_use
from gateway.kafka.groups.classic import ClassicGroup, ClassicState

HTTP_CLIENT_ID = "logway-http"
NOT_ASKED = -(2**31)  # authorized_operations when the request did not ask for them


def _kafka_group(classic: ClassicGroup) -> Body:
    stable = classic.state is ClassicState.STABLE
    return {
        "group_state": classic.state.value,
        "protocol_type": classic.protocol_type or "",
        "protocol_data": (classic.protocol_name or "") if stable else "",
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "member_metadata": m.metadata if stable else b"",
                "member_assignment": m.assignment if stable else b"",
            }
            for m in classic.describe()
        ],
    }


async def _http_group(broker: Broker, session: Session, group: str) -> Body:
    try:
        described = await broker.ctx.groups.describe(group)
    except (UnknownGroup, InvalidGroupName):
        return {"group_state": "Dead"}
    members = [m for m in described.members if broker.may_see(session, m.topic)]
    return {
        "group_state": described.state.value,
        "protocol_type": consumer_protocol.PROTOCOL_TYPE if described.members else "",
        "protocol_data": described.protocol if described.members else "",
        "members": [
            {
                "member_id": m.member_id,
                "client_id": HTTP_CLIENT_ID,
                "client_host": "",
                "member_metadata": consumer_protocol.subscription([m.topic]),
                "member_assignment": consumer_protocol.assignment({m.topic: m.partitions}),
            }
            for m in members
        ],
    }


async def _describe(broker: Broker, session: Session, group: str, operations: bool) -> Body:
    answer: Body = {
        "error_code": ErrorCode.NONE,
        "group_id": group,
        "group_state": "",
        "protocol_type": "",
        "protocol_data": "",
        "members": [],
        "authorized_operations": NOT_ASKED,
    }
    if not may_use(broker, session, group):
        answer["error_code"] = ErrorCode.GROUP_AUTHORIZATION_FAILED
        return answer
    if operations:
        answer["authorized_operations"] = authorized_operations(broker, session, group)
    classic = broker.groups.classic(group)
    if classic is not None and classic.members_count:
        answer.update(_kafka_group(classic))
    else:
        answer.update(await _http_group(broker, session, group))
    return answer


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    operations = request.body["include_authorized_operations"]
    return {
        "groups": [
            await _describe(broker, session, group, operations) for group in request.body["groups"]
        ]
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {
        "groups": [
            {
                "error_code": error,
                "group_id": group,
                "group_state": "",
                "protocol_type": "",
                "protocol_data": "",
                "members": [],
            }
            for group in request.body.get("groups", [])
        ]
    }


API = Api(ApiKey.DESCRIBE_GROUPS, "DescribeGroups", 0, 5, handle, refuse)
