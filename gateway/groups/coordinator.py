"""The consumer-group coordinator: a pure state machine, one instance per group.

Events in, decisions out, as in h11: no I/O, no asyncio, no clock (time arrives as `now_ms`
inside the events). gateway/groups/service.py feeds it through a membership store, which
owns the timers (memory_store.py) or shares the state across gateways (jetstream_store.py).

A member subscribes to one topic; a group may have members on several topics, and each
topic's partitions are shared among that topic's members by the assignor (sticky by
default, see gateway/groups/assignors.py). The generation is group-wide: it grows by one on every
change of membership (and on a seek of a topic that has members), which fences every
commit made against an earlier one.

States: Empty (no members) and Stable (members with a complete assignment). A rebalance is
computed inside one event, so there is no "preparing rebalance" state to be stuck in.

| state  | event                          | condition                           | next   | decision                       |
| ------ | ------------------------------ | ----------------------------------- | ------ | ------------------------------ |
| any    | Join(m, topic, n, now, p)      | m a member of another principal     | same   | Rejected(UNKNOWN_MEMBER)       |
| Empty  | Join(m, topic, n, now)         | -                                   | Stable | Rebalance(g+1, joined=[m])     |
| Stable | Join(m, topic, n, now)         | m new, moves topic, or n changed    | Stable | Rebalance(g+1)                 |
| Stable | Join(m, topic, n, now)         | m already on topic with n           | Stable | None (counts as a heartbeat)   |
| Stable | Leave(m)                       | m a member, others remain           | Stable | Rebalance(g+1, left=[m])       |
| Stable | Leave(m)                       | m the last member                   | Empty  | Rebalance(g+1, left=[m])       |
| Stable | Heartbeat(m, now)              | m a member                          | Stable | None; m's deadline = now + T   |
| Stable | Tick(now)                      | some deadlines <= now, others live  | Stable | Rebalance(g+1, expired=[...])  |
| Stable | Tick(now)                      | every deadline <= now               | Empty  | Rebalance(g+1, expired=[...])  |
| any    | Tick(now)                      | no deadline <= now                  | same   | None                           |
| any    | Seek(topic)                    | topic has members                   | Stable | Rebalance(g+1), topic restarts |
| any    | Seek(topic)                    | topic has no members                | same   | None                           |
| any    | Advance(n)                     | n > g                               | same   | Rebalance(n), assignment kept  |
| any    | Advance(n)                     | n <= g                              | same   | None                           |
| any    | Leave(m), Heartbeat(m)         | m not a member                      | same   | Rejected(UNKNOWN_MEMBER)       |
| any    | Commit(m, gen, offsets, p)     | m not a member, or not p's          | same   | Rejected(UNKNOWN_MEMBER)       |
| any    | Commit(m, gen, offsets)        | gen != g                            | same   | Rejected(FENCED_GENERATION)    |
| any    | Commit(m, gen, offsets)        | m does not own every partition      | same   | Rejected(NOT_OWNER)            |
| any    | Commit(m, gen, offsets)        | otherwise                           | same   | CommitAccepted                 |

(T is the session timeout; p the principal that sends the event, which a member id is bound
to when it joins: another principal naming it is told what it would be told of an id nobody
has. A Rebalance lists every member of the new generation with its
partitions and the partitions it gained and lost; after a Seek every partition of the
topic's members counts as gained, so each restarts at the new committed offset. Advance
carries a generation that another protocol's members of the group used (Kafka's classic
groups, gateway/kafka/groups/): a group has one sequence of generations whichever protocol
its members speak, so a commit naming a generation can never be confused across them.)

Invariants: within one generation no partition is owned by two members; while a topic has
members, each of its partitions is owned by one of them; generations only grow, also across
restarts, because the adapter persists `metadata()` and passes it back to `from_metadata`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import overload

import orjson

from gateway.groups.assignors import DEFAULT_ASSIGNOR, Assignor
from storage.types import TopicPartition

# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    member_id: str
    topic: str
    partitions_count: int
    now_ms: int
    principal: str | None = None  # None: auth is off

    def __post_init__(self) -> None:
        if not self.member_id:
            raise ValueError("member_id must not be empty")
        if self.partitions_count < 1:
            raise ValueError("partitions_count must be positive")


@dataclass(frozen=True, slots=True)
class Leave:
    member_id: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    member_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: expire the members whose session deadline is at or before now_ms."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class Seek:
    """The topic's committed offsets were moved: its members must restart from them."""

    topic: str


@dataclass(frozen=True, slots=True)
class Advance:
    """Generations up to `generation` were used by the group's members of another protocol:
    continue after them."""

    generation: int


@dataclass(frozen=True, slots=True)
class Commit:
    """A request to commit; the coordinator only validates it (storage is the adapter's)."""

    member_id: str
    generation: int
    offsets: Mapping[TopicPartition, int]
    principal: str | None = None


MembershipEvent = Join | Leave | Heartbeat | Tick | Seek | Advance
Event = MembershipEvent | Commit

# -- decisions ------------------------------------------------------------------------------


class GroupState(enum.Enum):
    """HTTP's coordinator is Empty or Stable; Kafka's classic groups (gateway/kafka/groups/)
    also spend time preparing and completing a rebalance, while their members rejoin."""

    EMPTY = "Empty"
    STABLE = "Stable"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"


@dataclass(frozen=True, slots=True)
class MemberAssignment:
    """One member's share of a generation.

    `gained` are the partitions to (re)start at the group's committed offset; `lost` are
    the ones to stop reading at once.
    """

    member_id: str
    topic: str
    partitions: tuple[int, ...]
    gained: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Rebalance:
    """A new generation: every member's assignment (sorted by member id), and who went."""

    generation: int
    assignments: tuple[MemberAssignment, ...]
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()


class RejectReason(enum.Enum):
    UNKNOWN_MEMBER = "unknown_member"
    FENCED_GENERATION = "fenced_generation"
    NOT_OWNER = "not_owner"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a commit (or a leave or heartbeat) was refused; `generation` is the current one."""

    reason: RejectReason
    member_id: str
    generation: int
    partitions: tuple[TopicPartition, ...] = ()  # for NOT_OWNER: the partitions not owned


@dataclass(frozen=True, slots=True)
class CommitAccepted:
    generation: int


@dataclass(frozen=True, slots=True)
class MemberInfo:
    member_id: str
    topic: str
    partitions: tuple[int, ...]
    client: str = "http"  # or "kafka": the protocol the member speaks
    client_id: str | None = None  # a Kafka member's client.id


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """What GET /v1/groups/{group} shows of membership."""

    group: str
    state: GroupState
    generation: int
    protocol: str
    members: tuple[MemberInfo, ...]


# -- the state machine ----------------------------------------------------------------------


@dataclass(slots=True)
class _Member:
    topic: str
    deadline_ms: int
    partitions: tuple[int, ...] = ()
    principal: str | None = None


@dataclass(slots=True)
class GroupCoordinator:
    """Membership and assignment of one group. Feed it events with `handle`."""

    group: str
    session_timeout_ms: int = 30_000
    assignor: Assignor = DEFAULT_ASSIGNOR
    generation: int = 0
    _members: dict[str, _Member] = field(default_factory=dict)
    _partitions_count: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.session_timeout_ms <= 0:
            raise ValueError("session_timeout_ms must be positive")
        if self.generation < 0:
            raise ValueError("generation must not be negative")

    @classmethod
    def from_metadata(
        cls,
        group: str,
        metadata: bytes | None,
        *,
        session_timeout_ms: int = 30_000,
        assignor: Assignor = DEFAULT_ASSIGNOR,
    ) -> GroupCoordinator:
        """A coordinator that continues the generations saved by `metadata()` (None: new)."""
        generation = 0
        if metadata is not None:
            generation = int(orjson.loads(metadata)["generation"])
        return cls(group, session_timeout_ms, assignor, generation)

    def metadata(self) -> bytes:
        """What must survive a restart: the generation, so it keeps growing."""
        return orjson.dumps({"generation": self.generation, "protocol": self.assignor.name})

    def membership_state(self) -> bytes:
        """Members, their partitions, partition counts and the generation: what a store
        shared by several gateways keeps (session deadlines stay with each gateway)."""
        return orjson.dumps(
            {
                "generation": self.generation,
                "protocol": self.assignor.name,
                "members": {
                    mid: {"topic": m.topic, "partitions": list(m.partitions)}
                    | ({} if m.principal is None else {"principal": m.principal})
                    for mid, m in sorted(self._members.items())
                },
                "partitions_count": self._partitions_count,
            }
        )

    @classmethod
    def from_membership_state(
        cls,
        group: str,
        state: bytes,
        *,
        session_timeout_ms: int = 30_000,
        assignor: Assignor = DEFAULT_ASSIGNOR,
        deadlines_ms: Mapping[str, int],
        default_deadline_ms: int,
    ) -> GroupCoordinator:
        """A coordinator continuing `membership_state()`; each member's session deadline
        is `deadlines_ms[member]`, else `default_deadline_ms`."""
        decoded = orjson.loads(state)
        coordinator = cls(group, session_timeout_ms, assignor, int(decoded["generation"]))
        for member_id, member in decoded["members"].items():
            coordinator._members[member_id] = _Member(
                member["topic"],
                deadlines_ms.get(member_id, default_deadline_ms),
                tuple(member["partitions"]),
                member.get("principal"),
            )
        coordinator._partitions_count = {t: int(n) for t, n in decoded["partitions_count"].items()}
        return coordinator

    @property
    def state(self) -> GroupState:
        return GroupState.STABLE if self._members else GroupState.EMPTY

    def next_deadline_ms(self) -> int | None:
        """When the next Tick could expire someone (None: nobody to expire)."""
        return min((m.deadline_ms for m in self._members.values()), default=None)

    def snapshot(self) -> GroupSnapshot:
        return GroupSnapshot(
            self.group,
            self.state,
            self.generation,
            self.assignor.name,
            tuple(
                MemberInfo(member_id, m.topic, m.partitions)
                for member_id, m in sorted(self._members.items())
            ),
        )

    @overload
    def handle(self, event: Commit) -> CommitAccepted | Rejected: ...
    @overload
    def handle(self, event: MembershipEvent) -> Rebalance | Rejected | None: ...
    def handle(self, event: Event) -> Rebalance | CommitAccepted | Rejected | None:
        """Apply one event; return the decision (None: nothing to announce)."""
        match event:
            case Join():
                return self._join(event)
            case Leave(member_id):
                if member_id not in self._members:
                    return self._reject(RejectReason.UNKNOWN_MEMBER, member_id)
                del self._members[member_id]
                return self._rebalance(left=(member_id,))
            case Heartbeat(member_id, now_ms):
                member = self._members.get(member_id)
                if member is None:
                    return self._reject(RejectReason.UNKNOWN_MEMBER, member_id)
                member.deadline_ms = max(member.deadline_ms, now_ms + self.session_timeout_ms)
                return None
            case Tick(now_ms):
                expired = tuple(
                    sorted(mid for mid, m in self._members.items() if m.deadline_ms <= now_ms)
                )
                if not expired:
                    return None
                for member_id in expired:
                    del self._members[member_id]
                return self._rebalance(expired=expired)
            case Seek(topic):
                if not any(m.topic == topic for m in self._members.values()):
                    return None
                return self._rebalance(restart_topic=topic)
            case Advance(generation):
                if generation <= self.generation:
                    return None
                self.generation = generation - 1
                return self._rebalance()
            case Commit():
                return self._validate_commit(event)
        raise TypeError(f"not a coordinator event: {event!r}")

    def _join(self, event: Join) -> Rebalance | Rejected | None:
        deadline_ms = event.now_ms + self.session_timeout_ms
        member = self._members.get(event.member_id)
        if member is not None and member.principal != event.principal:
            return self._reject(RejectReason.UNKNOWN_MEMBER, event.member_id)
        if member is not None and member.topic == event.topic:
            member.deadline_ms = max(member.deadline_ms, deadline_ms)
            if self._partitions_count[event.topic] == event.partitions_count:
                return None
        else:
            # New, or moving from another topic: that is a leave and a join in one generation,
            # so it starts with no partitions and reports every new one as gained.
            self._members[event.member_id] = _Member(
                event.topic, deadline_ms, principal=event.principal
            )
        self._partitions_count[event.topic] = event.partitions_count
        return self._rebalance(joined=(event.member_id,) if member is None else ())

    def _validate_commit(self, event: Commit) -> CommitAccepted | Rejected:
        member = self._members.get(event.member_id)
        if member is None or member.principal != event.principal:
            return self._reject(RejectReason.UNKNOWN_MEMBER, event.member_id)
        if event.generation != self.generation:
            return self._reject(RejectReason.FENCED_GENERATION, event.member_id)
        not_owned = tuple(
            sorted(
                tp
                for tp in event.offsets
                if tp.topic != member.topic or tp.partition not in member.partitions
            )
        )
        if not_owned:
            return self._reject(RejectReason.NOT_OWNER, event.member_id, not_owned)
        return CommitAccepted(self.generation)

    def _reject(
        self, reason: RejectReason, member_id: str, partitions: tuple[TopicPartition, ...] = ()
    ) -> Rejected:
        return Rejected(reason, member_id, self.generation, partitions)

    def _rebalance(
        self,
        *,
        joined: tuple[str, ...] = (),
        left: tuple[str, ...] = (),
        expired: tuple[str, ...] = (),
        restart_topic: str | None = None,
    ) -> Rebalance:
        """Reassign every topic that has members and open the next generation."""
        by_topic: dict[str, list[str]] = {}
        for member_id, member in self._members.items():
            by_topic.setdefault(member.topic, []).append(member_id)
        for topic in [t for t in self._partitions_count if t not in by_topic]:
            del self._partitions_count[topic]
        self.generation += 1
        assignments: list[MemberAssignment] = []
        for topic, member_ids in by_topic.items():
            previous = {mid: self._members[mid].partitions for mid in member_ids}
            shares = self.assignor.assign(self._partitions_count[topic], member_ids, previous)
            for member_id in member_ids:
                new, old = shares[member_id], previous[member_id]
                self._members[member_id].partitions = new
                gained = new if topic == restart_topic else tuple(sorted(set(new) - set(old)))
                lost = tuple(sorted(set(old) - set(new)))
                assignments.append(MemberAssignment(member_id, topic, new, gained, lost))
        assignments.sort(key=lambda a: a.member_id)
        return Rebalance(self.generation, tuple(assignments), joined, left, expired)
