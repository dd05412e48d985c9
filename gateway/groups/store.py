"""Where a consumer group's membership is decided: the store behind ConsumerGroups.

ConsumerGroups (gateway/groups/service.py) keeps, per group, a `LocalGroup`: a mirror of
the group's GroupCoordinator plus the Membership handles of the members connected to this
gateway. A MembershipStore decides what the authoritative coordinator is:

- `InMemoryStore` (gateway/groups/memory_store.py; embedded backend, one gateway): the
  mirror *is* the coordinator.
- `JetStreamStore` (gateway/groups/jetstream_store.py; jetstream backend, any number of
  gateways): the coordinator's state lives in a JetStream KV bucket, fenced by revision.

gateway/backends.py picks the store that fits the backend.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.groups.coordinator import (
    Commit,
    CommitAccepted,
    GroupCoordinator,
    MembershipEvent,
    Rebalance,
    Rejected,
)
from gateway.groups.membership import Membership
from storage.types import TopicPartition

Decision = Rebalance | Rejected | None


def new_offsets_epoch() -> int:
    """A fresh epoch for a group's committed offsets: random, so none repeats across restarts."""
    return secrets.randbits(32)


@dataclass(slots=True, eq=False)
class LocalGroup:
    """This gateway's view of one group: the coordinator mirror and its local members."""

    name: str
    coordinator: GroupCoordinator
    committed: dict[TopicPartition, int]
    saved_generation: int
    members: dict[str, Membership] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # commits, seeks and delete
    # names this gateway's incarnation of the committed offsets (ConsumerGroups.commit_received)
    offsets_epoch: int = field(default_factory=new_offsets_epoch)
    announced_generation: int = 0
    revision: int = 0  # JetStreamStore: the KV revision the mirror was read at
    timer: asyncio.TimerHandle | None = None
    timer_at_ms: int | None = None
    saver: asyncio.Task[None] | None = None


Announce = Callable[[LocalGroup, Rebalance], Awaitable[None]]


class MembershipStore(Protocol):
    shared: bool  # other gateways change groups too: re-read committed offsets before starts

    def bind(self, announce: Announce) -> None:
        """Where changes this store learns by itself (expiry, other gateways) are sent."""

    async def open(self, g: LocalGroup) -> bool:
        """Load the group's state into the mirror; True if the store has any for it."""

    async def change(self, g: LocalGroup, event: MembershipEvent) -> Decision:
        """Apply a membership event to the authoritative state and the mirror."""

    async def check_commit(self, g: LocalGroup, commit: Commit) -> CommitAccepted | Rejected:
        """Validate a commit against the current authoritative state."""

    def heartbeat(self, g: LocalGroup, member_id: str, now_ms: int) -> bool:
        """A local member is alive; False if it is no longer a member."""

    def announced(self, g: LocalGroup, decision: Rebalance) -> None:
        """The local members were told about `decision`."""

    async def group_names(self) -> set[str]:
        """Groups that have membership state in the store."""

    async def forget(self, g: LocalGroup, *, deleted: bool) -> None:
        """Stop timers and watches of a group (and drop its state when it is deleted)."""

    async def close(self) -> None: ...


def now_ms() -> int:
    """The event loop's clock in ms: what session deadlines are measured in."""
    return int(asyncio.get_running_loop().time() * 1000)
