"""Kafka's classic group protocol as a pure state machine (gateway/kafka/groups/classic.py):
examples of each rule a Kafka 3.x broker follows, then a model test of the invariants."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.classic import (
    ClassicGroup,
    ClassicJoin,
    ClassicState,
    ClassicSync,
    JoinAnswer,
    JoinRequest,
    Protocols,
    Reply,
    SyncAnswer,
)

SESSION_MS = 10_000
REBALANCE_MS = 60_000
DELAY_MS = 3000
RANGE: Protocols = (("range", b"range-metadata"),)

_waiters = itertools.count(1)


def join(
    member_id: str = "",
    *,
    new_id: str = "m",
    now: int = 0,
    protocols: Protocols = RANGE,
    protocol_type: str = "consumer",
    known_id_first: bool = False,
    principal: str | None = None,
    instance: str | None = None,
) -> ClassicJoin:
    request = JoinRequest(
        "g", member_id, instance, "client", "/127.0.0.1", principal, SESSION_MS, REBALANCE_MS,
        protocol_type, protocols, known_id_first,
    )  # fmt: skip
    return ClassicJoin(request, new_id, next(_waiters), now)


def sync(
    member_id: str,
    generation: int,
    *,
    now: int = 0,
    assignments: Mapping[str, bytes] | None = None,
    principal: str | None = None,
) -> ClassicSync:
    return ClassicSync(
        member_id, generation, "consumer", None, assignments or {}, principal, next(_waiters), now
    )


def state(group: ClassicGroup) -> ClassicState:
    """The state, read through a call so that mypy does not narrow it between asserts."""
    return group.state


def answers(replies: list[Reply]) -> dict[int, JoinAnswer | SyncAnswer]:
    out = {r.waiter: r.answer for r in replies}
    assert len(out) == len(replies), "a waiter answered twice"
    return out


def joined(replies: list[Reply], event: ClassicJoin) -> JoinAnswer:
    answer = answers(replies)[event.waiter]
    assert isinstance(answer, JoinAnswer)
    return answer


def synced(replies: list[Reply], event: ClassicSync) -> SyncAnswer:
    answer = answers(replies)[event.waiter]
    assert isinstance(answer, SyncAnswer)
    return answer


def stable_group(*members: str) -> ClassicGroup:
    """A Stable group of `members` in generation 1 since time 0, `members[0]` the leader
    (they joined during the initial delay, so all land in the first generation)."""
    group = ClassicGroup("g", DELAY_MS)
    start = -DELAY_MS * (2 if len(members) > 1 else 1)  # a second arrival extends the delay
    events = [join(new_id=m, now=start) for m in members]
    replies = [r for event in events for r in group.join(event)]
    while (deadline := group.next_deadline_ms()) is not None and deadline < 0:
        replies += group.tick(deadline)
    replies += group.tick(0)
    assert all(joined(replies, e).error is ErrorCode.NONE for e in events)
    leader = sync(members[0], 1, assignments={m: m.encode() for m in members})
    assert synced(group.sync(leader), leader).assignment == members[0].encode()
    assert state(group) is ClassicState.STABLE
    return group


def test_a_new_member_gets_an_id_then_waits_out_the_initial_delay() -> None:
    group = ClassicGroup("g", DELAY_MS)
    first = join(known_id_first=True, new_id="a")
    answer = joined(group.join(first), first)
    assert (answer.error, answer.member_id) == (ErrorCode.MEMBER_ID_REQUIRED, "a")
    again = join("a", now=10)
    assert group.join(again) == []  # waits: members starting together land in one generation
    assert state(group) is ClassicState.PREPARING_REBALANCE
    assert group.next_deadline_ms() == 10 + DELAY_MS
    assert group.tick(10 + DELAY_MS - 1) == []
    answer = joined(group.tick(10 + DELAY_MS), again)
    assert (answer.error, answer.generation, answer.leader) == (ErrorCode.NONE, 1, "a")
    assert (answer.protocol_type, answer.protocol_name) == ("consumer", "range")
    assert [(m.member_id, m.metadata) for m in answer.members] == [("a", b"range-metadata")]
    assert state(group) is ClassicState.COMPLETING_REBALANCE


def test_each_arrival_extends_the_initial_delay_up_to_the_rebalance_timeout() -> None:
    group = ClassicGroup("g", DELAY_MS)
    a, b = join(new_id="a"), join(new_id="b", now=DELAY_MS - 1)
    group.join(a)
    group.join(b)
    assert group.tick(DELAY_MS) == []  # b arrived during the delay: another delay
    replies = group.tick(2 * DELAY_MS)
    leader, follower = joined(replies, a), joined(replies, b)
    assert leader.generation == follower.generation == 1
    assert [m.member_id for m in leader.members] == ["a", "b"]
    assert follower.members == ()  # only the leader gets everyone's metadata


def test_the_protocol_most_members_prefer_among_the_common_ones_wins() -> None:
    group = ClassicGroup("g", DELAY_MS)
    both: Protocols = (("cooperative-sticky", b"c"), ("range", b"r"))
    events = [
        join(new_id="a", protocols=(("range", b"r"), ("cooperative-sticky", b"c"))),
        join(new_id="b", protocols=both),
        join(new_id="c", protocols=both),
    ]
    replies = [r for e in events for r in group.join(e)]
    replies += group.tick(DELAY_MS) + group.tick(2 * DELAY_MS)  # arrivals extended the delay
    leader = joined(replies, events[0])
    assert leader.protocol_name == "cooperative-sticky"
    assert [m.metadata for m in leader.members] == [b"c", b"c", b"c"]


@pytest.mark.parametrize(
    "event",
    [
        join(new_id="x", protocol_type="connect"),
        join(new_id="x", protocols=(("roundrobin", b""),)),
        join(new_id="x", protocols=()),
        join(new_id="x", protocol_type=""),
    ],
    ids=["other-type", "no-common-protocol", "no-protocols", "empty-type"],
)
def test_a_member_that_cannot_share_the_groups_protocol_is_refused(event: ClassicJoin) -> None:
    group = stable_group("a")
    answer = joined(group.join(event), event)
    assert answer.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert state(group) is ClassicState.STABLE
    assert group.members_count == 1


def test_a_newcomer_rebalances_and_the_join_ends_once_everyone_rejoined() -> None:
    group = stable_group("a", "b")
    c = join(new_id="c", now=100)
    assert group.join(c) == []
    assert state(group) is ClassicState.PREPARING_REBALANCE
    assert group.heartbeat("a", 1, None, 200) is ErrorCode.REBALANCE_IN_PROGRESS
    a_sync = sync("a", 1, now=200)
    assert synced(group.sync(a_sync), a_sync).error is ErrorCode.REBALANCE_IN_PROGRESS
    assert group.validate_commit("a", 1, None, 200) is ErrorCode.NONE  # eager clients commit now
    a = join("a", now=300)
    assert group.join(a) == []
    b = join("b", now=400)
    replies = group.join(b)  # the last one: no need to wait for the rebalance timeout
    assert {joined(replies, e).generation for e in (a, b, c)} == {2}
    assert joined(replies, a).leader == "a"
    assert group.validate_commit("a", 1, None, 500) is ErrorCode.ILLEGAL_GENERATION
    assert group.validate_commit("a", 2, None, 500) is ErrorCode.REBALANCE_IN_PROGRESS
    follower = sync("b", 2, now=500)
    assert group.sync(follower) == []  # waits for the leader's assignment
    leader = sync("a", 2, now=600, assignments={"a": b"A", "b": b"B", "c": b"C"})
    replies = group.sync(leader)
    assert synced(replies, follower).assignment == b"B"
    assert synced(replies, leader).assignment == b"A"
    late = sync("c", 2, now=700)
    assert synced(group.sync(late), late).assignment == b"C"
    assert group.validate_commit("c", 2, None, 800) is ErrorCode.NONE


def test_members_that_do_not_rejoin_are_removed_at_the_rebalance_timeout() -> None:
    group = stable_group("a", "b")
    for now in range(0, REBALANCE_MS, SESSION_MS // 2):  # b heartbeats but never rejoins
        assert group.heartbeat("b", 1, None, now) is ErrorCode.NONE
    a = join("a", now=REBALANCE_MS)  # the leader asks for a new assignment
    assert group.join(a) == []
    deadline = group.next_deadline_ms()
    assert deadline is not None
    group.heartbeat("b", 1, None, deadline - 1)
    answer = joined(group.tick(REBALANCE_MS + REBALANCE_MS), a)
    assert (answer.generation, [m.member_id for m in answer.members]) == (2, ["a"])
    assert group.heartbeat("b", 2, None, 0) is ErrorCode.UNKNOWN_MEMBER_ID


def test_a_silent_member_expires_after_its_session_timeout_but_not_while_it_waits() -> None:
    group = stable_group("a", "b")
    group.heartbeat("a", 1, None, SESSION_MS)
    assert group.tick(SESSION_MS) == []  # b's deadline is SESSION_MS after the sync at 0
    assert group.members_count == 1  # b expired: a rebalance began
    assert group.heartbeat("a", 1, None, SESSION_MS + 1) is ErrorCode.REBALANCE_IN_PROGRESS
    a = join("a", now=SESSION_MS + 2)
    answer = joined(group.join(a), a)
    assert (answer.generation, len(answer.members)) == (2, 1)
    group = stable_group("a", "b")
    assert group.join(join("a", now=1)) == []  # a waits for b to rejoin
    group.heartbeat("b", 1, None, SESSION_MS - 1)
    assert group.tick(SESSION_MS) == []
    assert group.members_count == 2  # a cannot heartbeat while it waits: it does not expire


def test_a_waiting_sync_is_answered_rebalance_in_progress_when_a_member_leaves() -> None:
    group = stable_group("a", "b")
    group.join(join("a"))  # the leader asks for a new assignment
    group.join(join("b"))
    assert state(group) is ClassicState.COMPLETING_REBALANCE
    waiting = sync("b", 2)
    assert group.sync(waiting) == []
    error, replies = group.leave("a", None, None, 10)
    assert error is ErrorCode.NONE
    assert synced(replies, waiting).error is ErrorCode.REBALANCE_IN_PROGRESS
    assert state(group) is ClassicState.PREPARING_REBALANCE


def test_the_last_member_leaving_empties_the_group_in_a_new_generation() -> None:
    group = stable_group("a")
    error, _ = group.leave("a", None, None, 10)
    assert (error, group.state, group.generation) == (ErrorCode.NONE, ClassicState.EMPTY, 2)
    assert group.leave("a", None, None, 20)[0] is ErrorCode.UNKNOWN_MEMBER_ID
    group.raise_generation(7)  # HTTP members used generations meanwhile
    a = join(new_id="a2", now=30)
    group.join(a)
    assert joined(group.tick(30 + DELAY_MS), a).generation == 8


def test_a_stable_followers_rejoin_with_the_same_metadata_does_not_rebalance() -> None:
    group = stable_group("a", "b")
    again = join("b", now=5)
    answer = joined(group.join(again), again)
    assert (answer.error, answer.generation, answer.members) == (ErrorCode.NONE, 1, ())
    assert state(group) is ClassicState.STABLE
    changed = join("b", now=6, protocols=(("range", b"other topics"),))
    assert group.join(changed) == []
    assert state(group) is ClassicState.PREPARING_REBALANCE


@pytest.mark.parametrize(
    ("member_id", "generation", "expected"),
    [
        ("a", 1, ErrorCode.NONE),
        ("a", 0, ErrorCode.ILLEGAL_GENERATION),
        ("nobody", 1, ErrorCode.UNKNOWN_MEMBER_ID),
        ("", -1, ErrorCode.UNKNOWN_MEMBER_ID),  # members only, while the group has members
        ("", 1, ErrorCode.UNKNOWN_MEMBER_ID),
    ],
)
def test_commits_of_a_stable_group(member_id: str, generation: int, expected: ErrorCode) -> None:
    assert stable_group("a").validate_commit(member_id, generation, None, 1) is expected


def test_an_empty_group_takes_commits_of_clients_that_assign_themselves() -> None:
    group = ClassicGroup("g")
    assert group.validate_commit("", -1, None, 0) is ErrorCode.NONE
    assert group.validate_commit("x", -1, None, 0) is ErrorCode.UNKNOWN_MEMBER_ID


def test_a_member_id_belongs_to_the_principal_that_joined() -> None:
    group = ClassicGroup("g", 0)
    a = join(new_id="a", principal="api-key:alice")
    group.join(a)
    group.tick(0)
    assert group.heartbeat("a", 1, "api-key:mallory", 1) is ErrorCode.UNKNOWN_MEMBER_ID
    assert group.validate_commit("a", 1, "api-key:mallory", 1) is ErrorCode.UNKNOWN_MEMBER_ID
    assert group.leave("a", None, "api-key:mallory", 1)[0] is ErrorCode.UNKNOWN_MEMBER_ID
    hijack = join("a", principal="api-key:mallory")
    assert joined(group.join(hijack), hijack).error is ErrorCode.UNKNOWN_MEMBER_ID
    pending = join(new_id="p", known_id_first=True, principal="api-key:alice")
    group.join(pending)
    taken = join("p", principal="api-key:mallory")
    assert joined(group.join(taken), taken).error is ErrorCode.UNKNOWN_MEMBER_ID


def test_a_static_member_that_restarts_replaces_its_old_self() -> None:
    group = ClassicGroup("g", 0)
    old = join(new_id="old", instance="i-1")
    group.join(old)
    group.tick(0)
    restarted = join(new_id="new", instance="i-1", now=5)
    replies = group.join(restarted)
    assert [m.member_id for m in joined(replies, restarted).members] == ["new"]
    assert group.heartbeat("old", 2, None, 6) is ErrorCode.UNKNOWN_MEMBER_ID
    stranger = join(new_id="s", instance="i-1", principal="api-key:mallory")
    assert joined(group.join(stranger), stranger).error is ErrorCode.FENCED_INSTANCE_ID
    assert group.leave("", "i-1", None, 7)[0] is ErrorCode.NONE
    assert group.members_count == 0


def test_a_pending_member_that_never_comes_back_stops_delaying_the_join() -> None:
    group = stable_group("a")
    pending = join(new_id="p", known_id_first=True, now=0)
    group.join(pending)
    a = join("a", now=1)  # the leader rejoins: the join waits for the pending member
    assert group.join(a) == []
    assert group.next_deadline_ms() == SESSION_MS
    answer = joined(group.tick(SESSION_MS), a)
    assert (answer.generation, [m.member_id for m in answer.members]) == (2, ["a"])


# -- a model of the invariants --------------------------------------------------------------


class ClassicGroupModel(RuleBasedStateMachine):
    """Random joins, syncs, heartbeats, leaves and time; whatever happens, every waiting
    request is answered exactly once, generations only grow, and a completed join answers
    every member of the new generation with it."""

    def __init__(self) -> None:
        super().__init__()
        self.group = ClassicGroup("g", DELAY_MS)
        self.now = 0
        self.ids = itertools.count()
        self.open: dict[int, str] = {}  # waiter -> what it waits for
        self.answered: set[int] = set()
        self.known: list[str] = []
        self.generation = 0

    def _apply(self, replies: list[Reply], own: int | None = None) -> None:
        for reply in replies:
            assert reply.waiter not in self.answered, "answered twice"
            assert reply.waiter in self.open or reply.waiter == own
            self.answered.add(reply.waiter)
            self.open.pop(reply.waiter, None)
            answer = reply.answer
            if isinstance(answer, JoinAnswer) and answer.error is ErrorCode.NONE:
                assert answer.generation == self.group.generation
            if isinstance(answer, JoinAnswer) and answer.member_id not in self.known:
                self.known.append(answer.member_id)

    @rule(known=st.booleans(), which=st.integers(0, 5), protocol=st.sampled_from(["range", "rr"]))
    def join(self, known: bool, which: int, protocol: str) -> None:
        member_id = self.known[which % len(self.known)] if known and self.known else ""
        event = join(
            member_id,
            new_id=f"m{next(self.ids)}",
            now=self.now,
            protocols=((protocol, b"x"), ("range", b"y")),
            known_id_first=which % 2 == 0,
        )
        self.open[event.waiter] = "join"
        self._apply(self.group.join(event))

    @rule(protocol=st.sampled_from(["range", "rr"]))
    def everyone_rejoins(self, protocol: str) -> None:
        for member in self.group.describe():
            event = join(
                member.member_id, now=self.now, protocols=((protocol, b"x"), ("range", b"y"))
            )
            self.open[event.waiter] = "join"
            self._apply(self.group.join(event))

    @rule()
    def the_leader_assigns(self) -> None:
        if self.group.leader is not None:
            event = sync(self.group.leader, self.group.generation, now=self.now,
                         assignments={m.member_id: b"a" for m in self.group.describe()})  # fmt: skip
            self.open[event.waiter] = "sync"
            self._apply(self.group.sync(event))

    @rule(which=st.integers(0, 5), stale=st.booleans(), lead=st.booleans())
    def sync(self, which: int, stale: bool, lead: bool) -> None:
        if not self.known:
            return
        member_id = (
            self.group.leader if lead and self.group.leader else self.known[which % len(self.known)]
        )
        generation = self.group.generation - (1 if stale else 0)
        event = sync(member_id, generation, now=self.now, assignments={member_id: b"a"})
        self.open[event.waiter] = "sync"
        self._apply(self.group.sync(event))

    @rule(which=st.integers(0, 5))
    def heartbeat_or_commit(self, which: int) -> None:
        if self.known:
            member_id = self.known[which % len(self.known)]
            self.group.heartbeat(member_id, self.group.generation, None, self.now)
            self.group.validate_commit(member_id, self.group.generation, None, self.now)

    @rule()
    def everyone_heartbeats(self) -> None:
        for member in self.group.describe():
            self.group.heartbeat(member.member_id, self.group.generation, None, self.now)

    @rule(which=st.integers(0, 5))
    def leave(self, which: int) -> None:
        if self.known:
            _, replies = self.group.leave(self.known[which % len(self.known)], None, None, self.now)
            self._apply(replies)

    @rule(step_ms=st.sampled_from([1, 100, 1000, DELAY_MS, DELAY_MS, SESSION_MS, REBALANCE_MS]))
    def time_passes(self, step_ms: int) -> None:
        self.now += step_ms
        self._apply(self.group.tick(self.now))

    @invariant()
    def generations_only_grow(self) -> None:
        assert self.group.generation >= self.generation
        self.generation = self.group.generation

    @invariant()
    def the_state_fits_the_members(self) -> None:
        group = self.group
        if group.members_count == 0:
            assert state(group) in (ClassicState.EMPTY, ClassicState.PREPARING_REBALANCE)
        else:
            assert group.leader in {m.member_id for m in group.describe()}
        if state(group) is not ClassicState.PREPARING_REBALANCE:
            assert all(kind != "join" for kind in self.open.values()), "a join left waiting"
        if state(group) is ClassicState.STABLE or state(group) is ClassicState.EMPTY:
            assert not self.open, "a request left waiting"

    @invariant()
    def something_is_timed_while_anyone_waits(self) -> None:
        if self.open:
            assert self.group.next_deadline_ms() is not None


TestClassicGroupModel = pytest.mark.slow(ClassicGroupModel.TestCase)  # 3-4 s
TestClassicGroupModel.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
