"""The coordinator state a shared membership store keeps: it round-trips, and expiring
chosen members is the coordinator's own Tick against deadlines of 0 for them."""

from __future__ import annotations

from gateway.groups.coordinator import Commit, GroupCoordinator, Join, Rebalance, Rejected, Tick
from storage.types import TopicPartition

NEVER_MS = 2**62


def _restore(state: bytes, deadlines_ms: dict[str, int]) -> GroupCoordinator:
    return GroupCoordinator.from_membership_state(
        "g", state, deadlines_ms=deadlines_ms, default_deadline_ms=NEVER_MS
    )


def test_state_round_trips() -> None:
    coordinator = GroupCoordinator("g")
    for member in ("a", "b", "c"):
        coordinator.handle(Join(member, "orders", 6, now_ms=0))
    restored = _restore(coordinator.membership_state(), {})
    assert restored.snapshot() == coordinator.snapshot()
    assert restored.membership_state() == coordinator.membership_state()
    # a join on the restored state continues the same generations, sticky from the same shares
    decision = restored.handle(Join("d", "orders", 6, now_ms=0))
    assert isinstance(decision, Rebalance)
    assert decision.generation == coordinator.generation + 1
    assert sorted(p for a in decision.assignments for p in a.partitions) == list(range(6))


def test_principals_round_trip_so_every_gateway_knows_whose_member_it_is() -> None:
    coordinator = GroupCoordinator("g")
    coordinator.handle(Join("a", "orders", 2, now_ms=0, principal="api-key:payments"))
    coordinator.handle(Join("b", "orders", 2, now_ms=0))  # auth off
    restored = _restore(coordinator.membership_state(), {})
    assert restored.membership_state() == coordinator.membership_state()
    a = TopicPartition("orders", restored.snapshot().members[0].partitions[0])
    refused = restored.handle(Commit("a", restored.generation, {a: 0}, principal="api-key:x"))
    assert isinstance(refused, Rejected)
    assert restored.handle(Commit("a", restored.generation, {a: 0}, principal="api-key:payments"))
    assert isinstance(restored.handle(Join("a", "other", 1, now_ms=0)), Rejected)


def test_expiring_chosen_members() -> None:
    coordinator = GroupCoordinator("g")
    for member in ("a", "b", "c"):
        coordinator.handle(Join(member, "orders", 6, now_ms=0))
    restored = _restore(coordinator.membership_state(), {"b": 0})
    decision = restored.handle(Tick(0))
    assert isinstance(decision, Rebalance)
    assert decision.expired == ("b",)
    assert [a.member_id for a in decision.assignments] == ["a", "c"]
    assert sorted(p for a in decision.assignments for p in a.partitions) == list(range(6))
    assert restored.handle(Tick(10**12)) is None  # nobody else has a deadline
