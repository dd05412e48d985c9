"""One Kafka consumer group under the classic protocol, as a Kafka 3.x broker's group
coordinator runs it: a pure state machine, events in, answers out (no I/O, no asyncio, no
clock: time arrives as `now_ms`, new member ids as arguments).

Clients assign. Every member sends JoinGroup with its subscription (one `metadata` per
protocol, i.e. assignor, it supports); once every member has rejoined (or the rebalance
timeout has passed) the group opens a new generation, picks the protocol most members
prefer among those all support, and answers every JoinGroup: the leader's answer lists
every member's metadata. The leader computes the assignment and sends it with its
SyncGroup; every member's SyncGroup is answered with its share. The broker never reads the
metadata or the assignment.

JoinGroup and SyncGroup may wait. The caller gives each request a `waiter` number and the
machine returns `Reply(waiter, answer)` whenever an answer is due, for that request or for
others that were waiting (a join that completes answers every member).

States (Kafka's names) and what moves them:

| state               | event                                   | next                 |
| ------------------- | --------------------------------------- | -------------------- |
| Empty               | join (new member)                       | PreparingRebalance   |
| PreparingRebalance  | all members rejoined (and no pending    | CompletingRebalance, |
|                     | member), or the join deadline passed:   | or Empty when none   |
|                     | members that did not rejoin are removed | rejoined             |
| CompletingRebalance | the leader's SyncGroup                  | Stable               |
| CompletingRebalance | join with other metadata, a leave, an   | PreparingRebalance   |
|                     | expiry (waiting SyncGroups: REBALANCE_  |                      |
|                     | IN_PROGRESS)                            |                      |
| Stable              | join of a new member, of the leader, or | PreparingRebalance   |
|                     | with other metadata; a leave; an expiry |                      |

- New members: with JoinGroup v4+ a member without an id gets MEMBER_ID_REQUIRED and an id,
  and is pending until it joins again with it (within its session timeout); older versions
  join at once.
- The join deadline: from Empty, the initial rebalance delay (Kafka's
  group.initial.rebalance.delay.ms), extended by another delay each time a new member
  arrives, up to the rebalance timeout; it does not end early, so members starting
  together land in one generation. From Stable or CompletingRebalance, the largest
  rebalance timeout of the members, or earlier once everyone rejoined.
- Sessions: a member's deadline is its session timeout after its last heartbeat, SyncGroup
  or commit; one waiting in JoinGroup or SyncGroup does not expire (it cannot heartbeat on
  that connection meanwhile), except a new member, which has five minutes to get through
  its first rebalance. An expired or leaving member is removed, which rebalances.
- Heartbeat: UNKNOWN_MEMBER_ID (not a member), ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS
  while preparing (the member must rejoin), else NONE.
- Commits: a member of the current generation may commit while Stable or
  PreparingRebalance (eager clients commit what they consumed before rejoining), not while
  CompletingRebalance (REBALANCE_IN_PROGRESS); a commit without member id and with a
  negative generation (a client that assigns itself) only while the group has no members.

A member id belongs to the principal that joined with it: naming it as another principal
is UNKNOWN_MEMBER_ID, as for an id nobody has. Static membership (group.instance.id): a new
member with the instance id of a current one replaces it (the old id is then unknown), and
LeaveGroup may name a member by instance id; unlike Kafka, the replacement rebalances, and
a static member that leaves or expires is removed like a dynamic one (docs/kafka.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.kafka.errors import ErrorCode

NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000  # Kafka's: how long a new member may wait in a join

Protocols = tuple[tuple[str, bytes], ...]  # (name, metadata) in the member's preference order


class ClassicState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What a JoinGroup asks (decoded and authorized by apis/join_group.py)."""

    group: str
    member_id: str  # "" for a member that has none yet
    group_instance_id: str | None
    client_id: str
    client_host: str
    principal: str | None
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: Protocols
    require_known_member_id: bool  # JoinGroup v4+: a new member first gets an id


@dataclass(frozen=True, slots=True)
class ClassicJoin:
    request: JoinRequest
    new_member_id: str  # the id a new member gets (the caller makes it: no randomness here)
    waiter: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class ClassicSync:
    member_id: str
    generation: int
    protocol_type: str | None  # v5+, checked when given
    protocol_name: str | None
    assignments: Mapping[str, bytes]  # the leader's: member id -> assignment
    principal: str | None
    waiter: int
    now_ms: int


# -- answers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    error: ErrorCode
    member_id: str
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: tuple[JoinedMember, ...] = ()  # the leader's answer only


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True, slots=True)
class Reply:
    waiter: int
    answer: JoinAnswer | SyncAnswer


@dataclass(frozen=True, slots=True)
class DescribedMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes  # of the chosen protocol (of the preferred one before any is chosen)
    assignment: bytes


# -- the state machine ----------------------------------------------------------------------


@dataclass(slots=True)
class _Member:
    member_id: str
    joined: JoinRequest  # its latest JoinGroup: protocols, timeouts, client, principal
    deadline_ms: int
    is_new: bool = True
    join_waiter: int | None = None
    sync_waiter: int | None = None
    assignment: bytes = b""

    @property
    def principal(self) -> str | None:
        return self.joined.principal

    @property
    def protocols(self) -> Protocols:
        return self.joined.protocols

    def metadata(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if protocol is None or name == protocol:
                return metadata
        return b""


@dataclass(slots=True)
class ClassicGroup:
    """Membership of one Kafka consumer group. See the module's rules."""

    group_id: str
    initial_rebalance_delay_ms: int = 3000
    state: ClassicState = ClassicState.EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str | None = None
    _members: dict[str, _Member] = field(default_factory=dict)  # in joining order
    _pending: dict[str, tuple[int, str | None]] = field(
        default_factory=dict
    )  # id -> deadline, principal
    _join_deadline_ms: int | None = None
    _initial_delay: bool = False  # the join phase from Empty: ends only at its deadline
    _delay_left_ms: int = 0  # how far new arrivals may still extend the initial delay
    _arrived_during_delay: bool = False

    # -- what it looks like --------------------------------------------------------------

    @property
    def members_count(self) -> int:
        return len(self._members)

    @property
    def unused(self) -> bool:
        """Nothing to keep: no member, none pending, no generation ever opened."""
        return not self._members and not self._pending and self.generation == 0

    def describe(self) -> tuple[DescribedMember, ...]:
        return tuple(
            DescribedMember(
                m.member_id,
                m.joined.group_instance_id,
                m.joined.client_id,
                m.joined.client_host,
                m.metadata(self.protocol_name),
                m.assignment,
            )
            for m in self._members.values()
        )

    def raise_generation(self, floor: int) -> None:
        """Continue after generation `floor` (used by the group's HTTP members); only while
        Empty, when no member holds a generation."""
        if self.state is ClassicState.EMPTY and floor > self.generation:
            self.generation = floor

    def next_deadline_ms(self) -> int | None:
        """When `tick` could next change something (None: nothing is timed)."""
        deadlines = [deadline for deadline, _ in self._pending.values()]
        deadlines += [m.deadline_ms for m in self._members.values() if self._may_expire(m)]
        if self._join_deadline_ms is not None:
            deadlines.append(self._join_deadline_ms)
        return min(deadlines, default=None)

    # -- events --------------------------------------------------------------------------

    def join(self, event: ClassicJoin) -> list[Reply]:
        request = event.request

        def refuse(error: ErrorCode, member_id: str = request.member_id) -> list[Reply]:
            return [Reply(event.waiter, JoinAnswer(error, member_id))]

        if not request.protocol_type or not request.protocols:
            return refuse(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if not request.member_id:
            replaced = self._instance(request.group_instance_id)
            if replaced is not None and replaced.principal != request.principal:
                return refuse(ErrorCode.FENCED_INSTANCE_ID)
            if replaced is None and not self._supports(request.protocol_type, request.protocols):
                return refuse(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
            member_id = event.new_member_id
            if request.require_known_member_id:
                deadline_ms = event.now_ms + request.session_timeout_ms
                self._pending[member_id] = (deadline_ms, request.principal)
                return refuse(ErrorCode.MEMBER_ID_REQUIRED, member_id)
            replies = [] if replaced is None else self._remove(replaced, event.now_ms)
            return replies + self._add(event, member_id)
        pending = self._pending.get(request.member_id)
        if pending is not None and pending[1] == request.principal:
            if not self._supports(request.protocol_type, request.protocols):
                return refuse(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
            del self._pending[request.member_id]
            return self._add(event, request.member_id)
        member = self._members.get(request.member_id)
        if member is None or member.principal != request.principal:
            return refuse(ErrorCode.UNKNOWN_MEMBER_ID)
        if not self._supports(request.protocol_type, request.protocols):
            return refuse(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        same = member.protocols == request.protocols
        if self.state is ClassicState.COMPLETING_REBALANCE and same:
            # it missed its JoinGroup answer: this generation's again
            self._heard(member, event.now_ms)
            return [Reply(event.waiter, self._join_answer(member))]
        if self.state is ClassicState.STABLE and same and member.member_id != self.leader:
            # nothing changed for a follower: it may sync with the current generation
            self._heard(member, event.now_ms)
            return [Reply(event.waiter, self._join_answer(member, with_members=False))]
        # preparing, changed metadata, or the leader asking for a new assignment
        replies = self._update(member, event)
        return replies + self._prepare_rebalance(event.now_ms)

    def sync(self, event: ClassicSync) -> list[Reply]:
        def answer(error: ErrorCode) -> list[Reply]:
            return [Reply(event.waiter, SyncAnswer(error))]

        member = self._members.get(event.member_id)
        if member is None or member.principal != event.principal:
            return answer(ErrorCode.UNKNOWN_MEMBER_ID)
        if event.generation != self.generation:
            return answer(ErrorCode.ILLEGAL_GENERATION)
        if (event.protocol_type is not None and event.protocol_type != self.protocol_type) or (
            event.protocol_name is not None and event.protocol_name != self.protocol_name
        ):
            return answer(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if self.state is ClassicState.PREPARING_REBALANCE:
            return answer(ErrorCode.REBALANCE_IN_PROGRESS)
        self._heard(member, event.now_ms)
        if self.state is ClassicState.STABLE:
            return [Reply(event.waiter, self._sync_answer(member))]
        replies: list[Reply] = []
        if member.sync_waiter is not None:
            replies.append(Reply(member.sync_waiter, SyncAnswer(ErrorCode.REBALANCE_IN_PROGRESS)))
        member.sync_waiter = event.waiter
        if member.member_id != self.leader:
            return replies
        for m in self._members.values():
            m.assignment = event.assignments.get(m.member_id, b"")
        self.state = ClassicState.STABLE
        for m in self._members.values():
            if m.sync_waiter is not None:
                replies.append(Reply(m.sync_waiter, self._sync_answer(m)))
                m.sync_waiter = None
        return replies

    def heartbeat(
        self, member_id: str, generation: int, principal: str | None, now_ms: int
    ) -> ErrorCode:
        member = self._members.get(member_id)
        if member is None or member.principal != principal:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        self._heard(member, now_ms)
        if self.state is ClassicState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def leave(
        self, member_id: str, group_instance_id: str | None, principal: str | None, now_ms: int
    ) -> tuple[ErrorCode, list[Reply]]:
        """A member leaves, named by id, or by instance id with an empty member id."""
        pending = self._pending.get(member_id)
        if pending is not None and pending[1] == principal:
            del self._pending[member_id]
            return ErrorCode.NONE, self._maybe_complete_join(now_ms)
        member = self._members.get(member_id) if member_id else self._instance(group_instance_id)
        if member is None or member.principal != principal:
            return ErrorCode.UNKNOWN_MEMBER_ID, []
        if group_instance_id is not None and member.joined.group_instance_id != group_instance_id:
            return ErrorCode.FENCED_INSTANCE_ID, []
        return ErrorCode.NONE, self._remove(member, now_ms)

    def validate_commit(
        self, member_id: str, generation: int, principal: str | None, now_ms: int
    ) -> ErrorCode:
        """Whether a commit may be written now (a member's counts as a heartbeat)."""
        member = None
        if generation >= 0 or member_id:
            member = self._members.get(member_id)
            if member is None or member.principal != principal:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if generation != self.generation:
                return ErrorCode.ILLEGAL_GENERATION
        elif self._members:
            return ErrorCode.UNKNOWN_MEMBER_ID  # only members commit in a group with members
        if self.state is ClassicState.COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        if member is not None:
            self._heard(member, now_ms)
        return ErrorCode.NONE

    def tick(self, now_ms: int) -> list[Reply]:
        """Time has passed: expire pending and silent members, end a join phase that is due."""
        for member_id in [m for m, (deadline, _) in self._pending.items() if deadline <= now_ms]:
            del self._pending[member_id]
        replies: list[Reply] = []
        for member in list(self._members.values()):
            gone = self._members.get(member.member_id) is not member  # a join completed
            if not gone and self._may_expire(member) and member.deadline_ms <= now_ms:
                replies += self._remove(member, now_ms)
        return replies + self._maybe_complete_join(now_ms)

    # -- internals -----------------------------------------------------------------------

    def _instance(self, group_instance_id: str | None) -> _Member | None:
        if group_instance_id is None:
            return None
        return next(
            (m for m in self._members.values() if m.joined.group_instance_id == group_instance_id),
            None,
        )

    @staticmethod
    def _may_expire(member: _Member) -> bool:
        waiting = member.join_waiter is not None or member.sync_waiter is not None
        return member.is_new or not waiting

    def _heard(self, member: _Member, now_ms: int) -> None:
        member.deadline_ms = max(member.deadline_ms, now_ms + member.joined.session_timeout_ms)

    def _supports(self, protocol_type: str, protocols: Protocols) -> bool:
        """Kafka's rule: the first member sets the protocol type; others must have it and
        share at least one protocol with every member."""
        if not self._members:
            return True
        if protocol_type != self.protocol_type:
            return False
        names = {name for name, _ in protocols}
        for member in self._members.values():
            names &= {name for name, _ in member.protocols}
        return bool(names)

    def _add(self, event: ClassicJoin, member_id: str) -> list[Reply]:
        if not self._members:
            self.protocol_type = event.request.protocol_type
        deadline_ms = event.now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS
        member = _Member(member_id, event.request, deadline_ms, join_waiter=event.waiter)
        self._members[member_id] = member
        if self.leader is None:
            self.leader = member_id
        if self._initial_delay:
            self._arrived_during_delay = True
        return self._prepare_rebalance(event.now_ms)

    def _update(self, member: _Member, event: ClassicJoin) -> list[Reply]:
        replies: list[Reply] = []
        if member.join_waiter is not None:  # joined again on another connection
            answer = JoinAnswer(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id)
            replies.append(Reply(member.join_waiter, answer))
        member.joined = event.request
        member.join_waiter = event.waiter
        return replies

    def _remove(self, member: _Member, now_ms: int) -> list[Reply]:
        """A member leaves or expires: answer what it was waiting for, then rebalance."""
        replies: list[Reply] = []
        gone = ErrorCode.UNKNOWN_MEMBER_ID
        if member.join_waiter is not None:
            replies.append(Reply(member.join_waiter, JoinAnswer(gone, member.member_id)))
        if member.sync_waiter is not None:
            replies.append(Reply(member.sync_waiter, SyncAnswer(gone)))
        del self._members[member.member_id]
        if self.leader == member.member_id:
            self.leader = next(iter(self._members), None)
        if self.state in (ClassicState.STABLE, ClassicState.COMPLETING_REBALANCE):
            return replies + self._prepare_rebalance(now_ms)
        return replies + self._maybe_complete_join(now_ms)

    def _prepare_rebalance(self, now_ms: int) -> list[Reply]:
        replies: list[Reply] = []
        if self.state is ClassicState.COMPLETING_REBALANCE:
            for m in self._members.values():
                m.assignment = b""
                if m.sync_waiter is not None:
                    answer = SyncAnswer(ErrorCode.REBALANCE_IN_PROGRESS)
                    replies.append(Reply(m.sync_waiter, answer))
                    m.sync_waiter = None
        if self.state is not ClassicState.PREPARING_REBALANCE:
            rebalance_timeout_ms = max(
                (m.joined.rebalance_timeout_ms for m in self._members.values()), default=0
            )
            if self.state is ClassicState.EMPTY:
                delay_ms = min(self.initial_rebalance_delay_ms, rebalance_timeout_ms)
                self._initial_delay = True
                self._delay_left_ms = rebalance_timeout_ms - delay_ms
                self._arrived_during_delay = False
                self._join_deadline_ms = now_ms + delay_ms
            else:
                self._initial_delay = False
                self._join_deadline_ms = now_ms + rebalance_timeout_ms
            self.state = ClassicState.PREPARING_REBALANCE
        return replies + self._maybe_complete_join(now_ms)

    def _maybe_complete_join(self, now_ms: int) -> list[Reply]:
        if self.state is not ClassicState.PREPARING_REBALANCE:
            return []
        assert self._join_deadline_ms is not None
        due = now_ms >= self._join_deadline_ms
        if self._initial_delay:
            if due and self._arrived_during_delay and self._delay_left_ms > 0:
                delay_ms = min(self.initial_rebalance_delay_ms, self._delay_left_ms)
                self._delay_left_ms -= delay_ms
                self._arrived_during_delay = False
                self._join_deadline_ms = now_ms + delay_ms
                return []
            if not due and self._members:
                return []
        elif not due:
            everyone = all(m.join_waiter is not None for m in self._members.values())
            if not everyone or self._pending:
                return []
        return self._complete_join(now_ms)

    def _complete_join(self, now_ms: int) -> list[Reply]:
        """Open the next generation with the members that rejoined."""
        for member in [m for m in self._members.values() if m.join_waiter is None]:
            del self._members[member.member_id]
        if self.leader not in self._members:
            self.leader = next(iter(self._members), None)
        self.generation += 1
        self._join_deadline_ms = None
        self._initial_delay = False
        if not self._members:
            self.state = ClassicState.EMPTY
            self.protocol_name = None
            return []
        self.state = ClassicState.COMPLETING_REBALANCE
        self.protocol_name = self._select_protocol()
        replies = []
        for member in self._members.values():
            assert member.join_waiter is not None
            replies.append(Reply(member.join_waiter, self._join_answer(member)))
            member.join_waiter = None
            member.is_new = False
            member.deadline_ms = now_ms + member.joined.session_timeout_ms
        return replies

    def _select_protocol(self) -> str:
        """Kafka's vote: among the protocols every member supports, each member votes for
        the one it lists first; most votes wins (ties: the earlier vote)."""
        members = list(self._members.values())
        common = {name for name, _ in members[0].protocols}
        for member in members[1:]:
            common &= {name for name, _ in member.protocols}
        votes: dict[str, int] = {}
        for member in members:
            choice = next(name for name, _ in member.protocols if name in common)
            votes[choice] = votes.get(choice, 0) + 1
        return max(votes, key=lambda name: votes[name])

    def _join_answer(self, member: _Member, *, with_members: bool = True) -> JoinAnswer:
        members: tuple[JoinedMember, ...] = ()
        if with_members and member.member_id == self.leader:
            members = tuple(
                JoinedMember(
                    m.member_id, m.joined.group_instance_id, m.metadata(self.protocol_name)
                )
                for m in self._members.values()
            )
        return JoinAnswer(
            ErrorCode.NONE,
            member.member_id,
            self.generation,
            self.protocol_type,
            self.protocol_name,
            self.leader or "",
            members,
        )

    def _sync_answer(self, member: _Member) -> SyncAnswer:
        return SyncAnswer(ErrorCode.NONE, self.protocol_type, self.protocol_name, member.assignment)
