"""Consumer groups: list, describe, seek, delete, commit offsets, and pull members.

Streams join a group with `GET /v1/topics/{topic}/events?group=` (gateway/routes/streams.py);
pull consumers (curl scripts) join with `POST /v1/groups/{group}/members` and heartbeat with
every pull that names `group` and `member_id` (gateway/routes/pull.py). The decisions live
in gateway/groups/; this module only speaks HTTP, and the group errors become problem+json
in gateway/http/problems.py.

With auth on (gateway/http/auth.py), the middleware checked the group right; the topics a
body names are checked here, before anything is looked up, and a member id is bound to the
principal that joined with it. Lists and descriptions show only the groups and topics the
principal may see.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import context
from gateway.groups.errors import InvalidGroupName
from gateway.groups.service import SeekTarget
from gateway.http.auth import may_see, principal_identity, require
from gateway.http.body import as_int, read_body, require_json
from gateway.http.problems import Problem, validation_error
from gateway.http.routing import resource
from storage.names import is_valid_group_name, validate_topic_name
from storage.types import TopicPartition

MAX_GROUP_BODY_BYTES = 1024 * 1024
MAX_OFFSET = 2**63 - 1


def group_param(request: Request) -> str:
    group: str = request.path_params["group"]
    if not is_valid_group_name(group):
        raise InvalidGroupName(group)
    return group


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


async def _object_body(request: Request, allowed: set[str], required: set[str]) -> dict[str, Any]:
    """A JSON object body with only `allowed` members and every `required` one (422 otherwise)."""
    body = await read_body(
        request.receive, request.headers.get("content-length"), MAX_GROUP_BODY_BYTES
    )
    require_json(request)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem("bad-json", f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise validation_error("", "the body must be an object")
    unknown = doc.keys() - allowed
    if unknown:
        raise validation_error("", f"unknown member(s): {', '.join(sorted(unknown))}")
    missing = required - doc.keys()
    if missing:
        raise validation_error("", f"missing member(s): {', '.join(sorted(missing))}")
    return doc


def _string(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise validation_error(f"/{name}", "must be a string")
    return value


# -- groups ---------------------------------------------------------------------------------


async def list_groups(request: Request) -> Response:
    groups = context(request).groups
    summaries = [s for s in await groups.list_groups() if may_see(request.scope, "group", s.group)]
    return _json(
        {
            "groups": [
                {
                    "group": s.group,
                    "state": s.state.value,
                    "generation": s.generation,
                    "members": s.members,
                }
                for s in summaries
            ]
        }
    )


async def describe_group(request: Request) -> Response:
    """The group; members and partitions of topics the principal may not see are left out."""
    groups = context(request).groups
    d = await groups.describe(group_param(request))
    visible = {
        topic
        for topic in {m.topic for m in d.members} | {p.topic for p in d.partitions}
        if may_see(request.scope, "topic", topic)
    }
    return _json(
        {
            "group": d.group,
            "state": d.state.value,
            "generation": d.generation,
            "protocol": d.protocol,
            "members": [
                {
                    "member_id": m.member_id,
                    "topic": m.topic,
                    "partitions": list(m.partitions),
                    "client": m.client,
                    "client_id": m.client_id,
                }
                for m in d.members
                if m.topic in visible
            ],
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed_offset": p.committed_offset,
                    "end_offset": p.end_offset,
                    "lag": p.lag,
                }
                for p in d.partitions
                if p.topic in visible
            ],
        }
    )


async def delete_group(request: Request) -> Response:
    await context(request).groups.delete(group_param(request))
    return Response(status_code=204)


async def seek(request: Request) -> Response:
    """Move the group's committed offsets of a topic; members restart from them at once."""
    groups = context(request).groups
    group = group_param(request)
    doc = await _object_body(request, {"topic", "to"}, {"topic", "to"})
    topic = validate_topic_name(_string(doc, "topic"))
    require(request.scope, "consume", "topic", topic)
    raw_to = doc["to"]
    to: SeekTarget
    if raw_to in ("earliest", "latest"):
        to = raw_to
    elif (number := as_int(raw_to)) is not None and 0 <= number <= MAX_OFFSET:
        to = number
    else:
        raise validation_error("/to", "must be 'earliest', 'latest' or a timestamp in ms (>= 0)")
    offsets = await groups.seek(group, topic, to)
    return _json(
        {
            "group": group,
            "offsets": [
                {"topic": topic, "partition": p, "offset": offset}
                for p, offset in sorted(offsets.items())
            ],
        }
    )


async def commit(request: Request) -> Response:
    """Commit offsets (the next offset to read) for a member of the current generation."""
    groups = context(request).groups
    group = group_param(request)
    doc = await _object_body(
        request, {"member_id", "generation", "offsets"}, {"member_id", "generation", "offsets"}
    )
    member_id = _string(doc, "member_id")
    generation = as_int(doc["generation"])
    if generation is None or not 0 <= generation <= MAX_OFFSET:
        raise validation_error("/generation", "must be a non-negative integer")
    items = doc["offsets"]
    if not isinstance(items, list):
        raise validation_error("/offsets", "must be an array")
    offsets: dict[TopicPartition, int] = {}
    for i, item in enumerate(items):
        pointer = f"/offsets/{i}"
        if not isinstance(item, dict) or item.keys() != {"topic", "partition", "offset"}:
            raise validation_error(pointer, "must be an object with topic, partition and offset")
        topic, partition, offset = item["topic"], as_int(item["partition"]), as_int(item["offset"])
        if not isinstance(topic, str):
            raise validation_error(pointer + "/topic", "must be a string")
        if partition is None or not 0 <= partition <= 9999:
            raise validation_error(pointer + "/partition", "must be an integer from 0 to 9999")
        if offset is None or offset > MAX_OFFSET:
            raise validation_error(pointer + "/offset", "must be an integer")
        tp = TopicPartition(validate_topic_name(topic), partition)
        require(request.scope, "consume", "topic", tp.topic)
        if tp in offsets:
            raise validation_error(pointer, f"{topic}/{partition} is listed twice")
        offsets[tp] = offset
    await groups.commit(
        group, member_id, generation, offsets, principal=principal_identity(request.scope)
    )
    return Response(status_code=204)


# -- pull members ---------------------------------------------------------------------------


async def join(request: Request) -> Response:
    """Join as a pull member (201), or rejoin with a live `member_id` of the same principal:
    a heartbeat on the same topic (200), a move to another topic (201)."""
    groups = context(request).groups
    group = group_param(request)
    doc = await _object_body(request, {"topic", "member_id"}, {"topic"})
    topic = validate_topic_name(_string(doc, "topic"))
    require(request.scope, "consume", "topic", topic)
    member_id = _string(doc, "member_id") if "member_id" in doc else None
    principal = principal_identity(request.scope)
    rejoin = member_id is not None and groups.member(group, member_id, principal).topic == topic
    membership = await groups.join(group, topic, member_id, principal=principal)
    return _json(
        {
            **membership.live_assignment(),
            "session_timeout_ms": round(context(request).settings.group_session_timeout_s * 1000),
        },
        200 if rejoin else 201,
    )


async def leave(request: Request) -> Response:
    groups = context(request).groups
    group, member_id = request.path_params["group"], request.path_params["member_id"]
    await groups.member(group, member_id, principal_identity(request.scope)).leave()
    return Response(status_code=204)


ROUTES = [
    resource("/v1/groups", GET=list_groups),
    resource("/v1/groups/{group}", GET=describe_group, DELETE=delete_group),
    resource("/v1/groups/{group}/offsets", POST=commit),
    resource("/v1/groups/{group}/seek", POST=seek),
    resource("/v1/groups/{group}/members", POST=join),
    resource("/v1/groups/{group}/members/{member_id}", DELETE=leave),
]
