"""One member's handle on its consumer group, as a stream or a pull consumer holds it.

`ConsumerGroups.join` (gateway/groups/service.py) hands it out and drives it: a new
generation reaches the handle through `_update`, and `changed()` folds the generations a
member has not picked up yet into one `Assignment`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.groups.errors import UnknownMember
from storage.types import TopicPartition


class GroupOperations(Protocol):
    """What a member's handle asks of the groups it belongs to (ConsumerGroups)."""

    def heartbeat(self, group: str, member_id: str) -> None: ...

    async def commit(
        self,
        group: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, int],
        *,
        principal: str | None = None,
    ) -> None: ...

    async def leave(self, group: str, member_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a member must do for a generation, relative to the previous one it was given.

    `starting_offsets`: partitions to (re)start, each at the group's committed offset, or
    None to use the stream's `from=`. `lost`: partitions to stop reading.
    """

    member_id: str
    topic: str
    generation: int
    partitions: tuple[int, ...]
    starting_offsets: Mapping[int, int | None]
    lost: tuple[int, ...] = ()


class Membership:
    """One member's handle on its group: assignment, heartbeats, commits, leaving."""

    def __init__(
        self,
        groups: GroupOperations,
        group: str,
        member_id: str,
        topic: str,
        principal: str | None = None,
    ) -> None:
        self._groups = groups
        self.group = group
        self.member_id = member_id
        self.topic = topic
        self.principal = principal  # who joined: the only one who may act as this member
        self._generation = 0
        self._partitions: tuple[int, ...] = ()
        self._pending_starts: dict[int, int | None] = {}
        self._assignment = Assignment(member_id, topic, 0, (), {})
        self._gone: UnknownMember | None = None
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def assignment(self) -> Assignment:
        """The assignment last handed out (by `join` or `changed()`)."""
        return self._assignment

    @property
    def generation(self) -> int:
        """The current generation (may be newer than `assignment.generation`)."""
        return self._generation

    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions owned right now (may differ from `assignment.partitions`)."""
        return self._partitions

    @property
    def active(self) -> bool:
        return self._gone is None

    def live_assignment(self) -> dict[str, Any]:
        """What the member owns right now, as `event: assignment` and pull members see it."""
        return {
            "member_id": self.member_id,
            "generation": self._generation,
            "partitions": list(self._partitions),
        }

    def owns(self, partition: int) -> bool:
        """Whether the member owns `partition` right now; check before sending a record."""
        return self._gone is None and partition in self._partitions

    async def changed(self) -> Assignment:
        """Wait for a generation newer than the last assignment handed out, and return it.

        Intermediate generations are folded into one: `lost` and `starting_offsets` are
        relative to the previous assignment returned. Raises UnknownMember once the member
        has left, expired or the gateway is closing.
        """
        while True:
            if self._gone is not None:
                # a fresh exception each time: re-raising one instance grows its traceback
                raise UnknownMember(self.group, self.member_id, self._gone.why)
            if self._generation != self._assignment.generation:
                return self._deliver()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def heartbeat(self) -> None:
        """Keep the session alive. Raises UnknownMember if it already expired."""
        self._groups.heartbeat(self.group, self.member_id)

    async def commit(self, generation: int, offsets: Mapping[int, int]) -> None:
        """Commit {partition: next offset to read} of this member's topic.

        Raises FencedGeneration (use the newer `changed()` assignment's generation, for the
        partitions still owned), NotPartitionOwner, UnknownMember, InvalidOffsets.
        """
        await self._groups.commit(
            self.group,
            self.member_id,
            generation,
            {TopicPartition(self.topic, p): offset for p, offset in offsets.items()},
            principal=self.principal,
        )

    async def leave(self) -> None:
        """Leave the group now (a rebalance hands the partitions on). Idempotent."""
        await self._groups.leave(self.group, self.member_id)

    def _update(
        self,
        generation: int,
        partitions: tuple[int, ...],
        lost: tuple[int, ...],
        starts: Mapping[int, int | None],
    ) -> None:
        for partition in lost:
            self._pending_starts.pop(partition, None)
        self._pending_starts.update(starts)
        self._generation = generation
        self._partitions = partitions
        self._wake()

    def _deliver(self) -> Assignment:
        owned = set(self._partitions)
        self._assignment = Assignment(
            self.member_id,
            self.topic,
            self._generation,
            self._partitions,
            {p: offset for p, offset in sorted(self._pending_starts.items()) if p in owned},
            tuple(sorted(set(self._assignment.partitions) - owned)),
        )
        self._pending_starts.clear()
        return self._assignment

    def _close(self, why: str) -> None:
        self._gone = UnknownMember(self.group, self.member_id, why)
        self._partitions = ()
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
