"""Membership decided in this process (the embedded backend: one gateway owns the log).

The mirror *is* the coordinator: events are handled in place; session deadlines expire
through one `loop.call_later` per group (a Tick at the earliest deadline); the generation
is saved as group metadata so it keeps growing across restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from gateway.groups.coordinator import (
    Commit,
    CommitAccepted,
    Heartbeat,
    MembershipEvent,
    Rebalance,
    Rejected,
    Tick,
)
from gateway.groups.store import Announce, Decision, LocalGroup, now_ms
from storage.backend import Backend
from storage.errors import StorageError

log = logging.getLogger(__name__)


class InMemoryStore:
    """The coordinator in this process; deadlines by timer; the generation saved as metadata."""

    shared = False

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._announce: Announce | None = None
        self._groups: dict[str, LocalGroup] = {}
        self._announcing: set[asyncio.Future[None]] = set()  # expiries being announced

    def bind(self, announce: Announce) -> None:
        self._announce = announce

    async def open(self, g: LocalGroup) -> bool:
        self._groups[g.name] = g
        return False

    async def change(self, g: LocalGroup, event: MembershipEvent) -> Decision:
        return g.coordinator.handle(event)

    async def check_commit(self, g: LocalGroup, commit: Commit) -> CommitAccepted | Rejected:
        return g.coordinator.handle(commit)

    def heartbeat(self, g: LocalGroup, member_id: str, now_ms: int) -> bool:
        return not isinstance(g.coordinator.handle(Heartbeat(member_id, now_ms)), Rejected)

    def announced(self, g: LocalGroup, decision: Rebalance) -> None:
        if g.saver is None or g.saver.done():
            g.saver = asyncio.create_task(self._save_generation(g))
        self._arm_timer(g)

    async def group_names(self) -> set[str]:
        return set()

    async def forget(self, g: LocalGroup, *, deleted: bool) -> None:
        self._groups.pop(g.name, None)
        _cancel_timer(g)
        if g.saver is not None:
            await g.saver

    async def close(self) -> None:
        groups, self._groups = list(self._groups.values()), {}
        for g in groups:
            _cancel_timer(g)
        await asyncio.gather(*(g.saver for g in groups if g.saver is not None))

    async def _save_generation(self, g: LocalGroup) -> None:
        """Persist the latest generation; bursts of rebalances share one write."""
        while g.saved_generation != g.coordinator.generation:
            generation = g.coordinator.generation
            try:
                await self._backend.save_group_metadata(g.name, g.coordinator.metadata())
            except StorageError:
                log.exception("could not save generation %d of group %r", generation, g.name)
                return
            g.saved_generation = generation

    def _arm_timer(self, g: LocalGroup) -> None:
        """Have a Tick arrive at the earliest session deadline (heartbeats only move
        deadlines later, so a timer armed earlier fires, finds nothing and re-arms)."""
        deadline_ms = g.coordinator.next_deadline_ms()
        if deadline_ms is None:
            _cancel_timer(g)
            return
        if g.timer is not None and g.timer_at_ms is not None and g.timer_at_ms <= deadline_ms:
            return
        _cancel_timer(g)
        delay_s = max(0, deadline_ms - now_ms() + 1) / 1000
        g.timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer, g)
        g.timer_at_ms = deadline_ms

    def _on_timer(self, g: LocalGroup) -> None:
        g.timer = g.timer_at_ms = None
        if self._groups.get(g.name) is not g:
            return
        decision = g.coordinator.handle(Tick(now_ms()))
        if isinstance(decision, Rebalance) and self._announce is not None:
            self._spawn(self._announce(g, decision))
        else:
            self._arm_timer(g)

    # -- many gateways over JetStream -------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)


def _cancel_timer(g: LocalGroup) -> None:
    if g.timer is not None:
        g.timer.cancel()
    g.timer = g.timer_at_ms = None
