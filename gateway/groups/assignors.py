"""Partition assignors: pure functions that share one topic's partitions among its members.

Each assignor maps (partitions_count, member ids, previous assignment) to
{member_id: sorted partitions}. All three give every partition 0..n-1 to exactly one member,
keep the group balanced (sizes differ by at most one), and are deterministic: the result
depends only on the arguments' values, never on their iteration order (members are sorted).

- range: member i (in sorted order) gets one contiguous block, the first n % m blocks one
  longer — Kafka's RangeAssignor for one topic.
- roundrobin: partition p goes to member p % m — Kafka's RoundRobinAssignor for one topic.
- sticky: every surviving member keeps as many of its previous partitions as a balanced
  assignment allows, so a rebalance moves the fewest partitions (and so causes the fewest
  restarts from committed offsets). The default.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

MemberPartitions = dict[str, tuple[int, ...]]


class AssignFunction(Protocol):
    def __call__(
        self,
        partitions_count: int,
        member_ids: Collection[str],
        previous: Mapping[str, Collection[int]],
    ) -> MemberPartitions: ...


def assign_range(
    partitions_count: int,
    member_ids: Collection[str],
    previous: Mapping[str, Collection[int]] | None = None,
) -> MemberPartitions:
    """Contiguous blocks in member order; ignores `previous`."""
    members = sorted(set(member_ids))
    if not members:
        return {}
    base, extra = divmod(partitions_count, len(members))
    result: MemberPartitions = {}
    start = 0
    for index, member_id in enumerate(members):
        size = base + (1 if index < extra else 0)
        result[member_id] = tuple(range(start, start + size))
        start += size
    return result


def assign_round_robin(
    partitions_count: int,
    member_ids: Collection[str],
    previous: Mapping[str, Collection[int]] | None = None,
) -> MemberPartitions:
    """Partition p to member p % m in member order; ignores `previous`."""
    members = sorted(set(member_ids))
    if not members:
        return {}
    return {
        member_id: tuple(range(index, partitions_count, len(members)))
        for index, member_id in enumerate(members)
    }


def assign_sticky(
    partitions_count: int,
    member_ids: Collection[str],
    previous: Mapping[str, Collection[int]] | None = None,
) -> MemberPartitions:
    """Balanced, keeping the largest possible number of partitions with their previous owner.

    Quotas are n // m, and n % m members get one more: those that previously held the most
    (ties by member id), because only a member holding more than the base quota can use the
    extra slot to keep one more partition. Each member keeps its lowest previous partitions
    up to its quota; the rest are dealt out in order to members below quota. That keeps
    sum(min(quota, previous count)) partitions in place, the maximum for a balanced result.
    Partitions outside 0..n-1, and a partition listed under two members (the later member
    in sorted order loses it), are ignored.
    """
    members = sorted(set(member_ids))
    if not members:
        return {}
    previous = previous or {}
    keepable: dict[str, list[int]] = {}
    claimed: set[int] = set()
    for member_id in members:
        mine = sorted(p for p in set(previous.get(member_id, ())) if 0 <= p < partitions_count)
        mine = [p for p in mine if p not in claimed]
        claimed.update(mine)
        keepable[member_id] = mine
    base, extra = divmod(partitions_count, len(members))
    by_previous_count = sorted(members, key=lambda m: (-len(keepable[m]), m))
    quota = {m: base + (1 if index < extra else 0) for index, m in enumerate(by_previous_count)}
    result = {m: keepable[m][: quota[m]] for m in members}
    kept = {p for partitions in result.values() for p in partitions}
    free = iter([p for p in range(partitions_count) if p not in kept])
    for member_id in members:
        result[member_id].extend(
            next(free) for _ in range(quota[member_id] - len(result[member_id]))
        )
    return {m: tuple(sorted(partitions)) for m, partitions in result.items()}


@dataclass(frozen=True, slots=True)
class Assignor:
    """An assignor with the protocol name shown in GET /v1/groups/{group}."""

    name: str
    assign: AssignFunction


RANGE = Assignor("range", assign_range)
ROUND_ROBIN = Assignor("roundrobin", assign_round_robin)
STICKY = Assignor("sticky", assign_sticky)
ASSIGNORS: Mapping[str, Assignor] = {a.name: a for a in (RANGE, ROUND_ROBIN, STICKY)}
DEFAULT_ASSIGNOR = STICKY
