"""The coordinator as a pure state machine: examples of each transition, then a model test."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.groups.assignors import RANGE
from gateway.groups.coordinator import (
    Commit,
    CommitAccepted,
    GroupCoordinator,
    GroupState,
    Heartbeat,
    Join,
    Leave,
    Rebalance,
    Rejected,
    RejectReason,
    Seek,
    Tick,
)
from storage.types import TopicPartition

TIMEOUT_MS = 1000


def _rebalance(decision: object) -> Rebalance:
    assert isinstance(decision, Rebalance), decision
    return decision


def _shares(decision: Rebalance) -> dict[str, tuple[int, ...]]:
    return {a.member_id: a.partitions for a in decision.assignments}


def test_three_members_share_six_partitions_then_one_leaves() -> None:
    c = GroupCoordinator("g", session_timeout_ms=TIMEOUT_MS)
    assert c.snapshot().state is GroupState.EMPTY
    for i, member in enumerate("abc"):
        decision = _rebalance(c.handle(Join(member, "t", 6, now_ms=0)))
        assert decision.generation == i + 1
        assert decision.joined == (member,)
    shares = _shares(decision)
    leaving = shares["b"]
    assert sorted(p for ps in shares.values() for p in ps) == list(range(6))
    assert [len(ps) for ps in shares.values()] == [2, 2, 2]
    assert c.state is GroupState.STABLE

    decision = _rebalance(c.handle(Leave("b")))
    assert decision.generation == 4
    assert decision.left == ("b",)
    owned = sorted(p for ps in _shares(decision).values() for p in ps)
    assert owned == list(range(6))
    by_member = {a.member_id: a for a in decision.assignments}
    assert by_member["a"].lost == by_member["c"].lost == ()
    assert sorted(by_member["a"].gained + by_member["c"].gained) == list(leaving)


def test_rejoin_on_the_same_topic_is_a_heartbeat_and_moving_topic_rebalances() -> None:
    c = GroupCoordinator("g", session_timeout_ms=TIMEOUT_MS)
    c.handle(Join("a", "t", 2, now_ms=0))
    assert c.handle(Join("a", "t", 2, now_ms=500)) is None
    assert c.handle(Tick(now_ms=1000)) is None, "the rejoin extended the session"
    decision = _rebalance(c.handle(Join("a", "u", 3, now_ms=600)))
    assert decision.assignments[0].topic == "u"
    assert decision.assignments[0].gained == (0, 1, 2)
    partitions_grew = _rebalance(c.handle(Join("a", "u", 4, now_ms=600)))
    assert partitions_grew.assignments[0].gained == (3,)


def test_members_expire_after_the_session_timeout_unless_they_heartbeat() -> None:
    c = GroupCoordinator("g", session_timeout_ms=TIMEOUT_MS)
    c.handle(Join("a", "t", 4, now_ms=0))
    c.handle(Join("b", "t", 4, now_ms=0))
    assert c.next_deadline_ms() == 1000
    assert c.handle(Heartbeat("a", now_ms=900)) is None
    assert c.handle(Tick(now_ms=999)) is None
    decision = _rebalance(c.handle(Tick(now_ms=1000)))
    assert decision.expired == ("b",)
    assert _shares(decision) == {"a": (0, 1, 2, 3)}
    assert c.next_deadline_ms() == 1900
    last = _rebalance(c.handle(Tick(now_ms=5000)))
    assert last.expired == ("a",)
    assert last.assignments == ()
    assert c.state is GroupState.EMPTY
    assert c.next_deadline_ms() is None


def test_commit_validation() -> None:
    c = GroupCoordinator("g", session_timeout_ms=TIMEOUT_MS, assignor=RANGE)
    c.handle(Join("a", "t", 2, now_ms=0))
    c.handle(Join("b", "t", 2, now_ms=0))
    mine, theirs = TopicPartition("t", 0), TopicPartition("t", 1)
    assert c.handle(Commit("a", 2, {mine: 5})) == CommitAccepted(2)
    fenced = c.handle(Commit("a", 1, {mine: 5}))
    assert isinstance(fenced, Rejected)
    assert fenced.reason is RejectReason.FENCED_GENERATION
    assert fenced.generation == 2
    not_owner = c.handle(Commit("a", 2, {mine: 5, theirs: 5, TopicPartition("u", 0): 1}))
    assert isinstance(not_owner, Rejected)
    assert not_owner.reason is RejectReason.NOT_OWNER
    assert not_owner.partitions == (theirs, TopicPartition("u", 0))
    unknown = c.handle(Commit("z", 2, {mine: 5}))
    assert isinstance(unknown, Rejected)
    assert unknown.reason is RejectReason.UNKNOWN_MEMBER
    assert isinstance(c.handle(Leave("z")), Rejected)
    assert isinstance(c.handle(Heartbeat("z", 0)), Rejected)


def test_a_member_is_bound_to_the_principal_that_joined() -> None:
    """Another principal naming the member is answered as for an unknown member; the member
    keeps its topic, its partitions and the generation."""
    c = GroupCoordinator("g", session_timeout_ms=TIMEOUT_MS)
    c.handle(Join("a", "t", 2, now_ms=0, principal="api-key:victim"))
    mine = TopicPartition("t", 0)
    for intruder in ("api-key:attacker", None):
        hijack = c.handle(Join("a", "u", 3, now_ms=0, principal=intruder))
        assert hijack == Rejected(RejectReason.UNKNOWN_MEMBER, "a", 1)
        commit = c.handle(Commit("a", 1, {mine: 1}, principal=intruder))
        assert commit == Rejected(RejectReason.UNKNOWN_MEMBER, "a", 1)
        assert c.handle(Commit("z", 1, {mine: 1}, principal=intruder)) == Rejected(
            RejectReason.UNKNOWN_MEMBER, "z", 1
        )
    assert c.handle(Commit("a", 1, {mine: 1}, principal="api-key:victim")) == CommitAccepted(1)
    assert c.handle(Join("a", "t", 2, now_ms=10, principal="api-key:victim")) is None
    assert [(m.topic, m.partitions) for m in c.snapshot().members] == [("t", (0, 1))]
    assert c.generation == 1


def test_seek_restarts_the_topics_members_in_a_new_generation() -> None:
    c = GroupCoordinator("g")
    assert c.handle(Seek("t")) is None, "nobody to restart"
    c.handle(Join("a", "t", 2, now_ms=0))
    c.handle(Join("b", "u", 1, now_ms=0))
    decision = _rebalance(c.handle(Seek("t")))
    assert decision.generation == 3
    by_member = {a.member_id: a for a in decision.assignments}
    assert by_member["a"].gained == (0, 1)
    assert by_member["b"].gained == ()


def test_generation_survives_a_restart_through_metadata() -> None:
    c = GroupCoordinator("g")
    c.handle(Join("a", "t", 1, now_ms=0))
    c.handle(Leave("a"))
    restarted = GroupCoordinator.from_metadata("g", c.metadata())
    assert restarted.generation == 2
    assert _rebalance(restarted.handle(Join("b", "t", 1, now_ms=0))).generation == 3
    assert GroupCoordinator.from_metadata("g", None).generation == 0


def test_snapshot_lists_members_in_order() -> None:
    c = GroupCoordinator("g")
    c.handle(Join("b", "t", 3, now_ms=0))
    c.handle(Join("a", "t", 3, now_ms=0))
    snap = c.snapshot()
    assert (snap.state, snap.generation, snap.protocol) == (GroupState.STABLE, 2, "sticky")
    assert [(m.member_id, len(m.partitions)) for m in snap.members] == [("a", 1), ("b", 2)]


def test_events_are_validated() -> None:
    with pytest.raises(ValueError, match="partitions_count"):
        Join("a", "t", 0, now_ms=0)
    with pytest.raises(ValueError, match="session_timeout_ms"):
        GroupCoordinator("g", session_timeout_ms=0)


# -- model test -----------------------------------------------------------------------------

MEMBERS = [f"m{i}" for i in range(7)]
TOPICS = {"t": 6, "u": 2}


class CoordinatorModel(RuleBasedStateMachine):
    """Random joins, leaves, heartbeats, time passing and commits against a simple model.

    The model knows who should be a member and when each session ends; ownership is
    tracked only from the decisions the coordinator announced, as an adapter would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.coordinator = GroupCoordinator("g", session_timeout_ms=TIMEOUT_MS)
        self.now_ms = 0
        self.topic_of: dict[str, str] = {}
        self.deadline_ms: dict[str, int] = {}
        self.generation = 0
        self.owned: dict[str, tuple[str, tuple[int, ...]]] = {}

    def _announce(self, decision: Rebalance) -> None:
        assert decision.generation > self.generation, "generations strictly increase"
        self.generation = decision.generation
        assert {a.member_id for a in decision.assignments} == set(self.topic_of)
        for a in decision.assignments:
            old_topic, old = self.owned.get(a.member_id, (a.topic, ()))
            if old_topic == a.topic:
                assert set(a.gained) >= set(a.partitions) - set(old)
                assert set(a.lost) == set(old) - set(a.partitions)
        self.owned = {a.member_id: (a.topic, a.partitions) for a in decision.assignments}

    @rule(member=st.sampled_from(MEMBERS), topic=st.sampled_from(sorted(TOPICS)))
    def join(self, member: str, topic: str) -> None:
        decision = self.coordinator.handle(Join(member, topic, TOPICS[topic], self.now_ms))
        changed = self.topic_of.get(member) != topic
        self.topic_of[member] = topic
        self.deadline_ms[member] = max(self.deadline_ms.get(member, 0), self.now_ms + TIMEOUT_MS)
        if changed:
            self._announce(_rebalance(decision))
        else:
            assert decision is None

    @rule(member=st.sampled_from(MEMBERS))
    def leave(self, member: str) -> None:
        decision = self.coordinator.handle(Leave(member))
        if member in self.topic_of:
            del self.topic_of[member], self.deadline_ms[member]
            self._announce(_rebalance(decision))
            assert _rebalance(decision).left == (member,)
        else:
            assert isinstance(decision, Rejected)

    @rule(member=st.sampled_from(MEMBERS))
    def heartbeat(self, member: str) -> None:
        decision = self.coordinator.handle(Heartbeat(member, self.now_ms))
        if member in self.topic_of:
            assert decision is None
            self.deadline_ms[member] = max(self.deadline_ms[member], self.now_ms + TIMEOUT_MS)
        else:
            assert isinstance(decision, Rejected)

    @rule(elapsed_ms=st.integers(min_value=0, max_value=2 * TIMEOUT_MS))
    def time_passes(self, elapsed_ms: int) -> None:
        self.now_ms += elapsed_ms
        decision = self.coordinator.handle(Tick(self.now_ms))
        expired = sorted(m for m, d in self.deadline_ms.items() if d <= self.now_ms)
        for member in expired:
            del self.topic_of[member], self.deadline_ms[member]
        if expired:
            assert _rebalance(decision).expired == tuple(expired)
            self._announce(_rebalance(decision))
        else:
            assert decision is None

    @precondition(lambda self: self.topic_of)
    @rule(topic=st.sampled_from(sorted(TOPICS)))
    def seek(self, topic: str) -> None:
        decision = self.coordinator.handle(Seek(topic))
        if topic in self.topic_of.values():
            self._announce(_rebalance(decision))
        else:
            assert decision is None

    @rule(
        member=st.sampled_from(MEMBERS),
        generation_delta=st.integers(min_value=-2, max_value=1),
        partitions=st.lists(
            st.tuples(st.sampled_from(sorted(TOPICS)), st.integers(0, 5)), min_size=1
        ),
    )
    def commit(self, member: str, generation_delta: int, partitions: list[tuple[str, int]]) -> None:
        generation = self.generation + generation_delta
        offsets = {TopicPartition(t, p): 1 for t, p in partitions}
        decision = self.coordinator.handle(Commit(member, generation, offsets))
        if member not in self.topic_of:
            assert isinstance(decision, Rejected)
            assert decision.reason is RejectReason.UNKNOWN_MEMBER
        elif generation != self.generation:
            assert isinstance(decision, Rejected), "a fenced commit is always rejected"
            assert decision.reason is RejectReason.FENCED_GENERATION
        else:
            topic, owned = self.owned[member]
            owner_of_all = all(tp.topic == topic and tp.partition in owned for tp in offsets)
            expected = CommitAccepted(generation) if owner_of_all else RejectReason.NOT_OWNER
            if owner_of_all:
                assert decision == expected
            else:
                assert isinstance(decision, Rejected)
                assert decision.reason is expected

    @invariant()
    def one_owner_per_partition_and_none_lost(self) -> None:
        for topic, count in TOPICS.items():
            owners = [
                (m, p)
                for m, (t, partitions) in self.owned.items()
                if t == topic
                for p in partitions
            ]
            partitions = [p for _, p in owners]
            assert len(partitions) == len(set(partitions)), "a partition with two owners"
            if topic in self.topic_of.values():
                assert sorted(partitions) == list(range(count)), "a partition lost"
        snapshot = self.coordinator.snapshot()
        assert snapshot.generation == self.generation
        assert {m.member_id: (m.topic, m.partitions) for m in snapshot.members} == self.owned
        assert (snapshot.state is GroupState.EMPTY) == (not self.topic_of)


TestCoordinatorModel = pytest.mark.slow(CoordinatorModel.TestCase)
TestCoordinatorModel.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
