"""Property tests of the assignors: complete, disjoint, balanced, deterministic, and sticky."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.groups.assignors import (
    ASSIGNORS,
    MemberPartitions,
    assign_range,
    assign_round_robin,
    assign_sticky,
)

member_ids = st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=12, unique=True)
partitions_counts = st.integers(min_value=1, max_value=40)


def _check_complete_and_balanced(
    partitions_count: int, members: list[str], result: MemberPartitions
) -> None:
    assert set(result) == set(members)
    owned = [p for partitions in result.values() for p in partitions]
    if members:
        assert sorted(owned) == list(range(partitions_count)), "each partition exactly once"
        sizes = [len(partitions) for partitions in result.values()]
        assert max(sizes) - min(sizes) <= 1
    for partitions in result.values():
        assert list(partitions) == sorted(partitions)


@st.composite
def previous_assignments(draw: st.DrawFn) -> tuple[int, list[str], dict[str, list[int]]]:
    """A partition count, the new members, and a previous (valid) assignment among old ones."""
    partitions_count = draw(partitions_counts)
    old_members = draw(member_ids)
    new_members = draw(member_ids)
    previous: dict[str, list[int]] = {m: [] for m in old_members}
    if old_members:
        for p in range(partitions_count):
            owner = draw(st.sampled_from([*old_members, None]))
            if owner is not None:
                previous[owner].append(p)
    return partitions_count, new_members, previous


@given(partitions_counts, member_ids)
def test_range_and_round_robin_are_complete_and_balanced(
    partitions_count: int, members: list[str]
) -> None:
    for assign in (assign_range, assign_round_robin):
        result = assign(partitions_count, members)
        _check_complete_and_balanced(partitions_count, members, result)
        assert assign(partitions_count, list(reversed(members))) == result


def test_range_gives_contiguous_blocks_and_round_robin_interleaves() -> None:
    assert assign_range(7, ["b", "a", "c"]) == {"a": (0, 1, 2), "b": (3, 4), "c": (5, 6)}
    assert assign_round_robin(7, ["b", "a", "c"]) == {"a": (0, 3, 6), "b": (1, 4), "c": (2, 5)}


@given(previous_assignments())
def test_sticky_is_complete_balanced_and_deterministic(
    case: tuple[int, list[str], dict[str, list[int]]],
) -> None:
    partitions_count, members, previous = case
    result = assign_sticky(partitions_count, members, previous)
    _check_complete_and_balanced(partitions_count, members, result)
    reordered = {m: list(reversed(ps)) for m, ps in reversed(list(previous.items()))}
    assert assign_sticky(partitions_count, list(reversed(members)), reordered) == result


@given(previous_assignments())
def test_sticky_keeps_the_most_partitions_a_balanced_assignment_can(
    case: tuple[int, list[str], dict[str, list[int]]],
) -> None:
    """Kept = sum of min(quota, previous count) with the larger quotas on the larger holders."""
    partitions_count, members, previous = case
    if not members:
        return
    result = assign_sticky(partitions_count, members, previous)
    kept = sum(len(set(result[m]) & set(previous.get(m, []))) for m in members)
    held = sorted((len(previous.get(m, [])) for m in members), reverse=True)
    base, extra = divmod(partitions_count, len(members))
    quotas = [base + 1] * extra + [base] * (len(members) - extra)
    assert kept == sum(min(q, h) for q, h in zip(quotas, held, strict=True))
    # No member both gives up a partition and receives another one.
    for m in members:
        mine, now = set(previous.get(m, [])), set(result[m])
        assert not (mine - now and now - mine)


@given(partitions_counts, member_ids)
def test_sticky_changes_nothing_when_membership_is_unchanged(
    partitions_count: int, members: list[str]
) -> None:
    first = assign_sticky(partitions_count, members, {})
    assert assign_sticky(partitions_count, members, first) == first


def test_sticky_moves_only_what_a_new_member_needs() -> None:
    before = assign_sticky(12, ["a", "b", "c"], {})
    after = assign_sticky(12, ["a", "b", "c", "d"], before)
    moved = sum(1 for m in "abc" for p in before[m] if p not in after[m])
    assert moved == 3
    assert len(after["d"]) == 3


def test_sticky_ignores_partitions_outside_the_topic_and_double_claims() -> None:
    result = assign_sticky(3, ["a", "b"], {"a": [0, 1, 7], "b": [1, 2]})
    assert result == {"a": (0, 1), "b": (2,)}


def test_assignors_are_registered_by_protocol_name() -> None:
    assert sorted(ASSIGNORS) == ["range", "roundrobin", "sticky"]
