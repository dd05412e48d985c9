"""ConsumerGroups over a real EmbeddedBackend in tmp_path: membership, expiry, commits,
restarts, seek, describe and delete. Session timeouts are short; nothing asserts a timing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.backends import membership_store
from gateway.groups.coordinator import GroupState
from gateway.groups.errors import (
    FencedGeneration,
    GroupNotEmpty,
    InvalidGroupName,
    InvalidOffsets,
    NotPartitionOwner,
    UnknownGroup,
    UnknownMember,
)
from gateway.groups.membership import Membership
from gateway.groups.service import ConsumerGroups
from storage.embedded import EmbeddedBackend
from storage.errors import TopicNotFound
from storage.types import Durability, DurabilityPolicy, NewRecord, TopicConfig, TopicPartition

SESSION_TIMEOUT_S = 0.2


async def _open_backend(data_dir: Path) -> EmbeddedBackend:
    return await EmbeddedBackend.open(data_dir, DurabilityPolicy(Durability.NEVER))


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    backend = await _open_backend(tmp_path / "data")
    try:
        await backend.create_topic("orders", 6, TopicConfig())
        await backend.create_topic("audit", 1, TopicConfig())
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def groups(embedded: EmbeddedBackend) -> AsyncIterator[ConsumerGroups]:
    consumer_groups = ConsumerGroups(
        embedded, membership_store(embedded), session_timeout_s=SESSION_TIMEOUT_S
    )
    try:
        yield consumer_groups
    finally:
        await consumer_groups.close()


async def _fill(backend: EmbeddedBackend, topic: str, partition: int, count: int) -> None:
    await backend.append(topic, partition, [NewRecord(b"%d" % i) for i in range(count)])


def _check_partitioned(members: list[Membership], partitions_count: int) -> None:
    """One generation, and its partitions split disjointly and completely among members."""
    assert len({m.generation for m in members}) == 1
    owned = sorted(p for m in members for p in m.partitions)
    assert owned == list(range(partitions_count))


async def _keep_alive(members: list[Membership]) -> None:
    """Heartbeat far more often than the session timeout, as a live stream would."""
    while True:
        for member in members:
            member.heartbeat()
        await asyncio.sleep(SESSION_TIMEOUT_S / 10)


async def _until(condition: Callable[[], bool], wake: Callable[[], Awaitable[object]]) -> None:
    while not condition():
        await wake()


async def _until_gone(member: Membership) -> None:
    """Follow the member's generations until `changed()` raises UnknownMember."""
    while True:
        await member.changed()


async def test_three_members_split_six_partitions_and_rebalance_when_one_leaves(
    groups: ConsumerGroups,
) -> None:
    a = await groups.join("payments", "orders")
    b = await groups.join("payments", "orders")
    c = await groups.join("payments", "orders")
    assert len({a.member_id, b.member_id, c.member_id}) == 3
    _check_partitioned([a, b, c], 6)
    for member in (a, b):  # a and b were assigned earlier and are told of generation 3
        assignment = await member.changed()
        assert assignment.generation == 3
        assert assignment.partitions == member.partitions
    assert c.assignment.partitions == c.partitions
    assert set(c.assignment.starting_offsets) == set(c.partitions)
    assert set(c.assignment.starting_offsets.values()) == {None}, "nothing committed yet"

    leaving = c.partitions
    await c.leave()
    assert not c.active
    with pytest.raises(UnknownMember):
        await c.changed()
    new_a, new_b = await a.changed(), await b.changed()
    assert new_a.generation == new_b.generation == 4
    _check_partitioned([a, b], 6)
    assert sorted([*new_a.starting_offsets, *new_b.starting_offsets]) == sorted(leaving)
    assert new_a.lost == new_b.lost == ()
    await c.leave()  # idempotent


async def test_a_member_that_stops_heartbeating_expires(groups: ConsumerGroups) -> None:
    alive = await groups.join("g", "orders")
    silent = await groups.join("g", "orders")
    keep_alive = asyncio.create_task(_keep_alive([alive]))
    try:
        with pytest.raises(UnknownMember, match="expired"):
            await _until_gone(silent)
        await _until(lambda: alive.partitions == (0, 1, 2, 3, 4, 5), alive.changed)
        with pytest.raises(UnknownMember):
            silent.heartbeat()
    finally:
        keep_alive.cancel()
    with pytest.raises(UnknownMember):  # alone and silent, it expires too
        await _until_gone(alive)
    description = await groups.describe("g")
    assert description.state is GroupState.EMPTY
    assert description.members == ()


async def test_changed_folds_generations_the_member_did_not_see(groups: ConsumerGroups) -> None:
    a = await groups.join("g", "orders")
    b = await groups.join("g", "orders")
    await b.leave()
    assignment = await a.changed()
    assert assignment.generation == 3
    assert assignment.partitions == (0, 1, 2, 3, 4, 5)
    assert assignment.lost == ()
    # b took three partitions and gave them back: a restarts them at the committed offset.
    assert len(assignment.starting_offsets) == 3


async def test_commits_are_fenced_checked_for_ownership_and_bounded_by_the_end(
    groups: ConsumerGroups, embedded: EmbeddedBackend
) -> None:
    for partition in range(6):
        await _fill(embedded, "orders", partition, 5)
    a = await groups.join("g", "orders")
    old_generation = a.generation
    b = await groups.join("g", "orders")
    a_now = await a.changed()
    mine, theirs = a_now.partitions[0], b.partitions[0]

    await a.commit(a_now.generation, {mine: 3})
    with pytest.raises(FencedGeneration) as fenced:
        await a.commit(old_generation, {mine: 4})
    assert fenced.value.current_generation == a_now.generation
    assert fenced.value.status == 409
    with pytest.raises(NotPartitionOwner) as not_owner:
        await a.commit(a_now.generation, {theirs: 1})
    assert not_owner.value.partitions == (TopicPartition("orders", theirs),)
    with pytest.raises(InvalidOffsets, match="beyond"):
        await a.commit(a_now.generation, {mine: 6})
    with pytest.raises(InvalidOffsets):
        await a.commit(a_now.generation, {mine: -1})
    with pytest.raises(InvalidOffsets):
        await a.commit(a_now.generation, {})
    with pytest.raises(UnknownMember):
        await groups.commit("g", "nobody", a_now.generation, {TopicPartition("orders", 0): 1})
    with pytest.raises(UnknownMember):
        await groups.commit("no-such-group", "nobody", 1, {TopicPartition("orders", 0): 1})
    assert await embedded.committed_offsets("g") == {TopicPartition("orders", mine): 3}

    # The commit is where the next owner of the partition starts.
    await a.leave()
    b_now = await b.changed()
    assert b_now.starting_offsets[mine] == 3
    assert theirs not in b_now.starting_offsets, "a kept partition does not restart"


async def test_committed_offsets_and_generations_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    backend = await _open_backend(data_dir)
    await backend.create_topic("orders", 2, TopicConfig())
    await _fill(backend, "orders", 0, 10)
    await _fill(backend, "orders", 1, 10)
    groups = ConsumerGroups(backend, membership_store(backend), session_timeout_s=SESSION_TIMEOUT_S)
    member = await groups.join("g", "orders")
    await member.commit(member.generation, {0: 7, 1: 4})
    generation_before = member.generation
    await groups.close()
    await backend.close()

    backend = await _open_backend(data_dir)
    groups = ConsumerGroups(backend, membership_store(backend), session_timeout_s=SESSION_TIMEOUT_S)
    try:
        with pytest.raises(UnknownMember):
            await groups.commit("g", member.member_id, generation_before, {})
        again = await groups.join("g", "orders")
        assert again.generation > generation_before
        assert again.assignment.starting_offsets == {0: 7, 1: 4}
    finally:
        await groups.close()
        await backend.close()


async def test_a_member_can_rejoin_with_its_id(groups: ConsumerGroups) -> None:
    a = await groups.join("g", "orders")
    assert await groups.join("g", "orders", member_id=a.member_id) is a
    assert groups.member("g", a.member_id) is a
    moved = await groups.join("g", "audit", member_id=a.member_id)
    assert moved is not a
    assert moved.member_id == a.member_id
    assert not a.active
    assert moved.partitions == (0,)
    with pytest.raises(UnknownMember):
        groups.member("g", "someone-else")
    with pytest.raises(UnknownMember):  # ids are given out, never chosen
        await groups.join("g", "orders", member_id="payments-1")


async def test_a_member_id_is_bound_to_the_principal_that_joined(
    groups: ConsumerGroups, embedded: EmbeddedBackend
) -> None:
    """Another principal naming the member gets what an id nobody has gets."""
    await _fill(embedded, "orders", 0, 3)
    mine = await groups.join("g", "orders", principal="api-key:payments")
    other = "api-key:auditor"
    for member_id in (mine.member_id, "nobody-has-this-id"):
        with pytest.raises(UnknownMember) as refused:
            groups.member("g", member_id, other)
        assert (
            str(refused.value) == f"{member_id!r} is not a member of consumer group 'g'; join again"
        )
        with pytest.raises(UnknownMember):
            await groups.join("g", "orders", member_id=member_id, principal=other)
        with pytest.raises(UnknownMember):
            await groups.commit(
                "g", member_id, mine.generation, {TopicPartition("orders", 0): 1}, principal=other
            )
    with pytest.raises(UnknownMember):  # auth off (None) is not a principal's
        groups.member("g", mine.member_id)
    assert groups.member("g", mine.member_id, "api-key:payments") is mine
    assert mine.active
    assert mine.partitions == tuple(range(6))
    await mine.commit(mine.generation, {0: 1})  # the handle commits as its principal
    assert groups.member("g", mine.member_id, "api-key:payments").generation == mine.generation


async def test_seek_moves_committed_offsets_and_restarts_the_topics_members(
    groups: ConsumerGroups, embedded: EmbeddedBackend
) -> None:
    for partition in range(6):
        await _fill(embedded, "orders", partition, partition + 1)
    assert await groups.seek("g", "orders", "latest") == {p: p + 1 for p in range(6)}
    member = await groups.join("g", "orders")
    assert member.assignment.starting_offsets == {p: p + 1 for p in range(6)}
    await member.commit(member.generation, {0: 1})
    generation = member.generation

    assert await groups.seek("g", "orders", "earliest") == dict.fromkeys(range(6), 0)
    restarted = await member.changed()
    assert restarted.generation == generation + 1
    assert restarted.starting_offsets == dict.fromkeys(range(6), 0)
    with pytest.raises(FencedGeneration):
        await member.commit(generation, {0: 1})

    future_ms = 2**45
    assert await groups.seek("g", "orders", future_ms) == {p: p + 1 for p in range(6)}
    assert (await member.changed()).starting_offsets == {p: p + 1 for p in range(6)}
    with pytest.raises(InvalidOffsets):
        await groups.seek("g", "orders", -1)
    with pytest.raises(TopicNotFound):
        await groups.seek("g", "missing", "latest")


async def test_describe_list_and_delete(groups: ConsumerGroups, embedded: EmbeddedBackend) -> None:
    await _fill(embedded, "orders", 0, 10)
    member = await groups.join("g", "orders")
    await member.commit(member.generation, {0: 4})
    description = await groups.describe("g")
    assert description.state is GroupState.STABLE
    assert description.generation == member.generation
    assert description.protocol == "sticky"
    assert [(m.member_id, m.partitions) for m in description.members] == [
        (member.member_id, (0, 1, 2, 3, 4, 5))
    ]
    lag = {p.partition: (p.committed_offset, p.end_offset, p.lag) for p in description.partitions}
    assert lag[0] == (4, 10, 6)
    assert lag[1] == (None, 0, None)

    summaries = await groups.list_groups()
    assert [(s.group, s.state, s.members) for s in summaries] == [("g", GroupState.STABLE, 1)]
    with pytest.raises(GroupNotEmpty):
        await groups.delete("g")
    await member.leave()
    await groups.delete("g")
    assert await groups.list_groups() == []
    with pytest.raises(UnknownGroup):
        await groups.describe("g")
    with pytest.raises(UnknownGroup):
        await groups.delete("g")


async def test_bad_names_and_unknown_topics(groups: ConsumerGroups) -> None:
    with pytest.raises(InvalidGroupName):
        await groups.join("", "orders")
    with pytest.raises(TopicNotFound):
        await groups.join("g", "missing")


async def test_concurrent_churn_never_shares_or_loses_a_partition(
    groups: ConsumerGroups,
) -> None:
    """Seeded random joins and leaves, run concurrently: after each wave, the live members'
    partitions (what `owns` answers) are disjoint and complete, in one generation."""
    rng = random.Random(7)
    members: list[Membership] = []
    generations: list[int] = []
    for _ in range(20):
        leaving = rng.sample(members, rng.randint(0, len(members)))
        members = [m for m in members if m not in leaving]
        joined = await asyncio.gather(
            *(groups.join("g", "orders") for _ in range(rng.randint(0, 4))),
            *(m.leave() for m in leaving),
        )
        members += [m for m in joined if isinstance(m, Membership)]
        assert all(not m.active for m in leaving)
        if members:
            _check_partitioned(members, 6)
            assert all(sum(m.owns(p) for m in members) == 1 for p in range(6)), "exactly one owner"
            generations.append(members[0].generation)
    assert generations == sorted(generations)
