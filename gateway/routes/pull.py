"""Pull: read a partition from any offset, optionally long-polling until records arrive.

With `group` and `member_id` (a pull member, joined with POST /v1/groups/{group}/members)
every pull is a heartbeat, the partition must be one the member owns (409
not-partition-owner otherwise, also when it moved away during a long poll), a missing
`offset` means the group's committed offset, and the response carries the member's
current assignment so the client sees rebalances. A member's long poll waits at most half
the session timeout, so waiting never expires it.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.context import Context, context
from gateway.groups.errors import NotPartitionOwner
from gateway.groups.membership import Membership
from gateway.http.auth import principal_identity
from gateway.http.problems import Problem, from_group_error, offset_out_of_range
from gateway.http.routing import resource
from gateway.streams.log_stream import Interruptible
from gateway.streams.render import render_records
from storage.names import validate_topic_name
from storage.types import TopicPartition

DEFAULT_MAX_RECORDS = 500
MAX_MAX_RECORDS = 10_000
DEFAULT_MAX_BYTES = 1024 * 1024
MAX_MAX_BYTES = 64 * 1024 * 1024
MAX_WAIT_MS = 60_000


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """A bounded integer query parameter (`default` when absent); malformed or out of bounds
    is a 422."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise Problem(
            "validation-error",
            f"query parameter {name} must be an integer from {low} to {high}",
            errors=[{"parameter": name, "detail": f"an integer from {low} to {high}"}],
        )
    return int(raw)


def partition_param(request: Request) -> int:
    raw = request.path_params["partition"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 5:
        raise Problem("unknown-partition", f"partition {raw!r} is not a partition number")
    return int(raw)


def _pull_member(ctx: Context, request: Request) -> Membership | None:
    """The pull member named by `group` and `member_id` (both or neither), heartbeated."""
    group = request.query_params.get("group")
    member_id = request.query_params.get("member_id")
    if group is None and member_id is None:
        return None
    if group is None or member_id is None:
        missing = "group" if group is None else "member_id"
        raise Problem(
            "validation-error",
            "group and member_id go together",
            errors=[{"parameter": missing, "detail": "required with the other"}],
        )
    membership = ctx.groups.member(group, member_id, principal_identity(request.scope))
    membership.heartbeat()
    return membership


def _check_owner(membership: Membership, topic: str, partition: int) -> None:
    if membership.topic == topic and membership.owns(partition):
        return
    error = NotPartitionOwner(
        membership.group, membership.member_id, (TopicPartition(topic, partition),)
    )
    problem = from_group_error(error)
    problem.extensions["current_generation"] = membership.generation
    raise problem


async def pull(request: Request) -> Response:
    """Records from `offset` (default: the log start); `next_offset` is where to continue."""
    ctx = context(request)
    backend = ctx.backend
    topic = validate_topic_name(request.path_params["topic"])
    partition = partition_param(request)
    offset = int_param(request, "offset", -1, 0, 2**63 - 1)
    max_records = int_param(request, "max_records", DEFAULT_MAX_RECORDS, 1, MAX_MAX_RECORDS)
    max_bytes = int_param(request, "max_bytes", DEFAULT_MAX_BYTES, 1, MAX_MAX_BYTES)
    wait_ms = int_param(request, "wait_ms", 0, 0, MAX_WAIT_MS)
    membership = _pull_member(ctx, request)
    if membership is not None:
        _check_owner(membership, topic, partition)
        wait_ms = min(wait_ms, round(ctx.settings.group_session_timeout_s * 500))

    info = await backend.partition_info(topic, partition)
    if offset < 0 and membership is not None:
        committed = await backend.committed_offsets(membership.group)
        start = committed.get(TopicPartition(topic, partition), info.log_start_offset)
        offset = min(max(start, info.log_start_offset), info.end_offset)
    elif offset < 0:
        offset = info.log_start_offset
    elif not info.log_start_offset <= offset <= info.end_offset:
        raise offset_out_of_range(offset, info.log_start_offset, info.end_offset)
    if offset == info.end_offset and wait_ms > 0:
        waiter = Interruptible()
        ctx.streams.add(waiter)
        try:
            await waiter.wait_for_records(backend, topic, {partition: offset}, wait_ms / 1000)
        finally:
            ctx.streams.discard(waiter)
    records = await backend.read(topic, partition, offset, max_records, max_bytes)
    if records:
        ctx.metrics.consumed(topic, records)
    next_offset = records[-1].offset + 1 if records else offset
    end_offset = info.end_offset
    if records or wait_ms > 0:
        end_offset = (await backend.partition_info(topic, partition)).end_offset
    group_part = b""
    if membership is not None:
        membership.heartbeat()  # 404 unknown-member if it expired meanwhile
        _check_owner(membership, topic, partition)  # no records of a partition that moved
        group_part = b',"assignment":' + orjson.dumps(membership.live_assignment())
    body = (
        b'{"records":'
        + render_records(topic, partition, records)
        + b',"next_offset":'
        + str(next_offset).encode()
        + b',"end_offset":'
        + str(max(end_offset, next_offset)).encode()
        + group_part
        + b"}"
    )
    return Response(body, media_type="application/json")


ROUTES = [resource("/v1/topics/{topic}/partitions/{partition}/records", GET=pull)]
