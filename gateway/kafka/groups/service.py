"""The Kafka listener's consumer groups: one ClassicGroup (gateway/kafka/groups/classic.py)
per group, driven with the event loop's clock; the JoinGroup and SyncGroup requests waiting
on them; and the ties to HTTP's groups (`ConsumerGroups`, gateway/groups/service.py), to
which this is attached as their `ForeignGroups`:

- One protocol's members at a time. A JoinGroup into a group with HTTP members is
  INCONSISTENT_GROUP_PROTOCOL (what a broker answers a member whose protocol type differs
  from the group's), and ConsumerGroups refuses HTTP members, seeks and deletes while the
  group has Kafka members. docs/kafka.md says why they cannot share a generation.
- One sequence of generations. A group's Kafka generations continue after its HTTP ones,
  and each is passed on (`ConsumerGroups.advance`), which saves it as HTTP saves its own.
- One set of committed offsets. OffsetCommit writes through `ConsumerGroups.commit_as`
  (validated here against the ClassicGroup), OffsetFetch reads
  `ConsumerGroups.committed_offsets`, and `GET /v1/groups/{group}` shows both.

Timers: one per group, armed at the ClassicGroup's next deadline. A waiting request ends
with its connection (its task is cancelled); a member that never reads its JoinGroup
answer stops heartbeating and expires.

Membership lives in this gateway's memory: after a restart Kafka members rejoin (their
next request gets UNKNOWN_MEMBER_ID). With the jetstream backend each gateway's listener
coordinates the groups its own clients join (docs/kafka.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.groups.coordinator import GroupSnapshot, GroupState, MemberInfo
from gateway.groups.errors import GroupProtocolConflict, InvalidOffsets
from gateway.groups.service import ConsumerGroups
from gateway.groups.store import now_ms
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.classic import (
    ClassicGroup,
    ClassicJoin,
    ClassicSync,
    JoinAnswer,
    JoinRequest,
    Reply,
    SyncAnswer,
)
from gateway.kafka.groups.consumer_protocol import (
    PROTOCOL_TYPE,
    assigned_partitions,
    subscribed_topics,
)
from storage.types import TopicPartition

log = logging.getLogger("logway.kafka")

CLOSE_TIMEOUT_S = 2.0  # how long closing waits for generations still being saved


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """Kafka's broker settings of the same names (group.initial.rebalance.delay.ms,
    group.min.session.timeout.ms, group.max.session.timeout.ms), with Kafka's defaults."""

    initial_rebalance_delay_ms: int = 3000
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1_800_000


class _Refused(Exception):
    def __init__(self, error: ErrorCode) -> None:
        super().__init__(error.name)
        self.error = error


class KafkaGroups:
    """Every Kafka consumer group of one listener (see the module's rules)."""

    protocol = "Kafka"

    def __init__(self, http: ConsumerGroups, settings: GroupSettings) -> None:
        self._http = http
        self._settings = settings
        self._groups: dict[str, ClassicGroup] = {}
        self._waiting: dict[int, asyncio.Future[JoinAnswer | SyncAnswer]] = {}
        self._waiters = itertools.count(1)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._passed_on: dict[str, int] = {}  # the generation HTTP's side last heard of
        self._background: set[asyncio.Task[None]] = set()
        http.attach(self)

    # -- what HTTP's groups see (ForeignGroups) -------------------------------------------

    def snapshot(self, group: str) -> GroupSnapshot | None:
        """The group's Kafka members, one MemberInfo per member and topic (its subscription
        and assignment decoded); None when it has none."""
        classic = self._groups.get(group)
        if classic is None or not classic.members_count:
            return None
        rows: list[MemberInfo] = []
        consumer = classic.protocol_type == PROTOCOL_TYPE
        for member in classic.describe():
            topics = (subscribed_topics(member.metadata) if consumer else None) or ()
            assigned = (assigned_partitions(member.assignment) if consumer else None) or {}
            for topic in sorted(set(topics) | set(assigned)) or [""]:
                partitions = tuple(sorted(assigned.get(topic, ())))
                rows.append(
                    MemberInfo(member.member_id, topic, partitions, "kafka", member.client_id)
                )
        return GroupSnapshot(
            group,
            GroupState(classic.state.value),
            classic.generation,
            classic.protocol_name or "",
            tuple(rows),
        )

    def group_names(self) -> set[str]:
        return {name for name, classic in self._groups.items() if not classic.unused}

    def classic(self, group: str) -> ClassicGroup | None:
        """The group's state, for DescribeGroups (None: no Kafka member ever joined it)."""
        return self._groups.get(group)

    # -- the group APIs ---------------------------------------------------------------------

    async def join(self, request: JoinRequest) -> JoinAnswer:
        settings = self._settings
        session_ms = request.session_timeout_ms
        if not settings.min_session_timeout_ms <= session_ms <= settings.max_session_timeout_ms:
            return JoinAnswer(ErrorCode.INVALID_SESSION_TIMEOUT, request.member_id)
        if not request.protocol_type or not request.protocols:
            return JoinAnswer(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, request.member_id)
        if request.member_id and request.group not in self._groups:
            return JoinAnswer(ErrorCode.UNKNOWN_MEMBER_ID, request.member_id)
        if request.member_id or not request.require_known_member_id:  # may add a member
            http_members, generation = await self._http.http_membership(request.group)
            if http_members:
                log.info(
                    "Kafka client %r may not join group %r: it has %d HTTP member(s), and a"
                    " group has members of one protocol at a time",
                    request.client_id,
                    request.group,
                    http_members,
                )
                return JoinAnswer(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, request.member_id)
        else:
            generation = 0  # it only gets a member id: the next join checks
        classic = self._groups.get(request.group)
        if classic is None:
            delay_ms = settings.initial_rebalance_delay_ms
            classic = self._groups[request.group] = ClassicGroup(request.group, delay_ms)
        classic.raise_generation(generation)
        self._passed_on[request.group] = max(self._passed_on.get(request.group, 0), generation)
        waiter, answer = self._wait()
        event = ClassicJoin(request, f"{request.client_id}-{uuid.uuid4()}", waiter, now_ms())
        self._settle(request.group, classic, classic.join(event))
        joined = await self._answer(waiter, answer)
        assert isinstance(joined, JoinAnswer)
        return joined

    async def sync(
        self,
        group: str,
        member_id: str,
        generation: int,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Mapping[str, bytes],
        principal: str | None,
    ) -> SyncAnswer:
        classic = self._groups.get(group)
        if classic is None:
            return SyncAnswer(ErrorCode.UNKNOWN_MEMBER_ID)
        waiter, answer = self._wait()
        event = ClassicSync(
            member_id,
            generation,
            protocol_type,
            protocol_name,
            assignments,
            principal,
            waiter,
            now_ms(),
        )
        self._settle(group, classic, classic.sync(event))
        synced = await self._answer(waiter, answer)
        assert isinstance(synced, SyncAnswer)
        return synced

    def heartbeat(
        self, group: str, member_id: str, generation: int, principal: str | None
    ) -> ErrorCode:
        classic = self._groups.get(group)
        if classic is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return classic.heartbeat(member_id, generation, principal, now_ms())

    def leave(
        self, group: str, members: list[tuple[str, str | None]], principal: str | None
    ) -> list[ErrorCode]:
        """Each (member id, instance id) leaves; an error code for each."""
        classic = self._groups.get(group)
        if classic is None:
            return [ErrorCode.UNKNOWN_MEMBER_ID for _ in members]
        errors = []
        for member_id, instance_id in members:
            error, replies = classic.leave(member_id, instance_id, principal, now_ms())
            self._settle(group, classic, replies)
            errors.append(error)
        return errors

    async def commit(
        self,
        group: str,
        member_id: str,
        generation: int,
        principal: str | None,
        offsets: Mapping[TopicPartition, int],
    ) -> ErrorCode:
        """Write a commit the group allows now (see ClassicGroup.validate_commit); the
        group's error code otherwise. Storage errors pass through."""

        def check() -> None:
            classic = self._groups.get(group) or ClassicGroup(group)
            error = classic.validate_commit(member_id, generation, principal, now_ms())
            if error is not ErrorCode.NONE:
                raise _Refused(error)

        try:
            await self._http.commit_as(group, offsets, check)
        except _Refused as refused:
            return refused.error
        except GroupProtocolConflict:  # HTTP members: only they commit
            return ErrorCode.UNKNOWN_MEMBER_ID
        except InvalidOffsets:  # a partition shrank under us (retention, deletion)
            return ErrorCode.OFFSET_OUT_OF_RANGE
        return ErrorCode.NONE

    async def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        return await self._http.committed_offsets(group)

    async def close(self) -> None:
        """Stop the timers, let the last generations be passed on (briefly), and let go of
        HTTP's groups."""
        self._http.attach(None)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for answer in self._waiting.values():
            answer.cancel()
        self._waiting.clear()
        if self._background:
            await asyncio.wait(self._background, timeout=CLOSE_TIMEOUT_S)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- internals ------------------------------------------------------------------------

    def _wait(self) -> tuple[int, asyncio.Future[JoinAnswer | SyncAnswer]]:
        waiter = next(self._waiters)
        answer: asyncio.Future[JoinAnswer | SyncAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[waiter] = answer
        return waiter, answer

    async def _answer(
        self, waiter: int, answer: asyncio.Future[JoinAnswer | SyncAnswer]
    ) -> JoinAnswer | SyncAnswer:
        try:
            return await answer
        finally:
            self._waiting.pop(waiter, None)

    def _settle(self, group: str, classic: ClassicGroup, replies: list[Reply]) -> None:
        """Hand out the answers, re-arm the group's timer, pass a new generation on."""
        for reply in replies:
            answer = self._waiting.pop(reply.waiter, None)
            if answer is not None and not answer.done():
                answer.set_result(reply.answer)
        timer = self._timers.pop(group, None)
        if timer is not None:
            timer.cancel()
        deadline_ms = classic.next_deadline_ms()
        if deadline_ms is not None:
            delay_s = max(0, deadline_ms - now_ms() + 1) / 1000
            loop = asyncio.get_running_loop()
            self._timers[group] = loop.call_later(delay_s, self._on_timer, group)
        if classic.generation > self._passed_on.get(group, 0):
            self._passed_on[group] = classic.generation
            self._spawn(self._http.advance(group, classic.generation), f"pass on {group!r}")
        if classic.unused:  # a member id handed out and never used
            del self._groups[group]
            self._passed_on.pop(group, None)

    def _on_timer(self, group: str) -> None:
        self._timers.pop(group, None)
        classic = self._groups.get(group)
        if classic is not None:
            self._settle(group, classic, classic.tick(now_ms()))

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._done(what))

    def _done(self, what: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("Kafka groups: %s failed", what, exc_info=task.exception())

        return done
