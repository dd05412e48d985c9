"""Groups whose members speak another protocol than HTTP, as ConsumerGroups sees them (the
Kafka listener's classic groups, gateway/kafka/groups/, implement `ForeignGroups`).

A group is one group whichever protocol its members speak: one set of committed offsets,
one sequence of generations, one entry in `GET /v1/groups`. Its members speak one protocol
at a time, though: Kafka's classic protocol has the clients compute the assignment, in a
rebalance they pace (every member rejoins within the rebalance timeout, then the leader's
assignor decides), while HTTP members are assigned by the gateway at once and cannot take
part in a Kafka rebalance; docs/kafka.md says more. So ConsumerGroups asks the attached
ForeignGroups before it admits an HTTP member, seeks or deletes a group, and shows the
foreign members in lists and descriptions; the foreign side asks ConsumerGroups
(`http_membership`) before it admits one of its own.
"""

from __future__ import annotations

from typing import Protocol

from gateway.groups.coordinator import GroupSnapshot


class ForeignGroups(Protocol):
    protocol: str  # what its members are called in errors ("Kafka")

    def snapshot(self, group: str) -> GroupSnapshot | None:
        """The group's membership there; None when it has no members there."""

    def group_names(self) -> set[str]:
        """Groups that have state there (members, or generations used)."""
