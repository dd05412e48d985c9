"""Membership shared by any number of gateways through JetStream (the jetstream backend).

The coordinator's state lives in the KV bucket `<ns>_members` under `s.<group>`. Every
change reads the state with its revision, applies the event to a coordinator rebuilt from
it, and writes the result back only if the revision is unchanged (a conflict retries from
the new state): generations are fenced by KV revision. Liveness: each gateway writes
`h.<group>.<member>` for its own live members every session_timeout/3 with a Nats-TTL of
the session timeout; any gateway that has the group open and has not seen a member's
heartbeat for a session timeout checks the key and, if JetStream removed it, expires the
member (a Tick against deadlines of 0 for those members, so the coordinator's own rules
apply). One KV watch (an ordered push consumer on the bucket) tells every gateway about
new states and heartbeats: a newer state is handed to the local handles as a Rebalance,
so streams and routes see the same `changed()` as with one gateway.

A member whose gateway dies is expired by another gateway that has its group open; if
none has, by the first one that opens the group afterwards (a session timeout later).

Imported only when the jetstream backend is chosen (it needs nats-py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from gateway.groups.coordinator import (
    Commit,
    CommitAccepted,
    GroupCoordinator,
    MemberAssignment,
    MembershipEvent,
    Rebalance,
    Rejected,
    Tick,
)
from gateway.groups.store import Announce, Decision, LocalGroup, now_ms
from storage.errors import StorageUnavailable
from storage.jetstream import JetStreamBackend, KeyValue, KvChange, RevisionConflict

MEMBERS_BUCKET = "members"  # storage.jetstream creates it when the backend opens
NEVER_MS = 2**62  # a session deadline no Tick reaches (liveness is kept elsewhere)
MAX_CAS_ATTEMPTS = 64
BUCKET_ATTEMPTS = 3

log = logging.getLogger(__name__)


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def _untoken(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


@dataclass(slots=True, eq=False)
class _Liveness:
    """Per open group: when each member's heartbeat was last seen (loop ms), the local
    members' own deadlines, and the timer that checks for missing heartbeats."""

    seen_ms: dict[str, int] = field(default_factory=dict)
    local_deadline_ms: dict[str, int] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class JetStreamStore:
    """Group state in a JetStream KV bucket shared by every gateway (see the module doc)."""

    shared = True

    def __init__(self, backend: JetStreamBackend) -> None:
        self._backend = backend
        self._kv: KeyValue | None = None
        self._kv_lock = asyncio.Lock()
        self._stop_watch: Callable[[], Awaitable[None]] | None = None
        self._announce: Announce | None = None
        self._groups: dict[str, LocalGroup] = {}
        self._liveness: dict[str, _Liveness] = {}
        self._refresher: asyncio.TimerHandle | None = None
        self._session_ms = 30_000
        self._background: set[asyncio.Task[None]] = set()

    def bind(self, announce: Announce) -> None:
        self._announce = announce

    async def _bucket(self) -> KeyValue:
        async with self._kv_lock:
            if self._kv is None:
                kv = await _retry(lambda: self._backend.key_value(MEMBERS_BUCKET))
                self._stop_watch = await kv.watch("", self._on_change)
                self._kv = kv
            return self._kv

    async def open(self, g: LocalGroup) -> bool:
        kv = await self._bucket()
        self._session_ms = g.coordinator.session_timeout_ms
        self._groups[g.name] = g
        self._liveness.setdefault(g.name, _Liveness())
        state, revision = await kv.read(_state_key(g.name))
        if state is None:
            g.revision = revision
            return False
        self._adopt(g, state, revision)
        return True

    async def change(self, g: LocalGroup, event: MembershipEvent) -> Decision:
        return await self._change(g, event, ())

    async def _change(
        self, g: LocalGroup, event: MembershipEvent | None, expire: tuple[str, ...]
    ) -> Decision:
        """Read, apply, write back if the revision is unchanged; retry on conflict."""
        kv = await self._bucket()
        key = _state_key(g.name)
        for _ in range(MAX_CAS_ATTEMPTS):
            state, revision = await kv.read(key)  # one read: value and revision agree
            found = None if state is None else (state, revision)
            if state is None:
                coordinator = _continue(g.coordinator)
            else:
                coordinator = _restore(g.coordinator, state, {m: 0 for m in expire})
            decision = coordinator.handle(Tick(0) if event is None else event)
            if not isinstance(decision, Rebalance):
                if revision > g.revision:
                    await self._adopt_and_announce(g, found)
                return decision
            state = _encode_state(coordinator, decision)
            try:
                new_revision = await kv.put(key, state, last=revision)
            except RevisionConflict:
                continue
            if new_revision > g.revision:
                g.coordinator, g.revision = coordinator, new_revision
            for a in decision.assignments:
                if a.member_id in g.members:
                    self._seen(g.name, a.member_id)
            return decision
        raise StorageUnavailable(f"membership of group {g.name!r} kept changing under us")

    async def _adopt_and_announce(self, g: LocalGroup, found: tuple[bytes, int] | None) -> None:
        """A newer state read while deciding something else: hand it to the local members."""
        if found is not None:
            self._adopt(g, found[0], found[1])
            if self._announce is not None:
                await self._announce(g, _rebalance_for(g, found[0]))

    async def check_commit(self, g: LocalGroup, commit: Commit) -> CommitAccepted | Rejected:
        kv = await self._bucket()
        found = await kv.get(_state_key(g.name))
        if found is None:
            return _continue(g.coordinator).handle(commit)
        if found[1] > g.revision:
            await self._adopt_and_announce(g, found)
        return _restore(g.coordinator, found[0], {}).handle(commit)

    def heartbeat(self, g: LocalGroup, member_id: str, now_ms: int) -> bool:
        liveness = self._liveness.get(g.name)
        if liveness is None or member_id not in g.members:
            return False
        liveness.local_deadline_ms[member_id] = now_ms + self._session_ms
        return True

    def announced(self, g: LocalGroup, decision: Rebalance) -> None:
        liveness = self._liveness.get(g.name)
        if liveness is None:
            return
        now = now_ms()
        for member_id in list(liveness.local_deadline_ms):
            if member_id not in g.members:
                del liveness.local_deadline_ms[member_id]
        fresh = [m for m in g.members if m not in liveness.local_deadline_ms]
        for member_id in fresh:
            liveness.local_deadline_ms[member_id] = now + self._session_ms
        if fresh:
            self._spawn(self._write_heartbeats(g.name, fresh))
        for member_id in [m for m in liveness.seen_ms if m not in _member_ids(g)]:
            del liveness.seen_ms[member_id]
        for member_id in _member_ids(g):
            liveness.seen_ms.setdefault(member_id, now)
        self._arm_expiry(g.name)
        self._arm_refresher()

    async def group_names(self) -> set[str]:
        kv = await self._bucket()
        return {_untoken(k[2:]) for k in await kv.keys("s.")}

    async def forget(self, g: LocalGroup, *, deleted: bool) -> None:
        self._groups.pop(g.name, None)
        liveness = self._liveness.pop(g.name, None)
        if liveness is not None and liveness.timer is not None:
            liveness.timer.cancel()
        if deleted and self._kv is not None:
            await self._kv.purge(_state_key(g.name))

    async def close(self) -> None:
        for liveness in self._liveness.values():
            if liveness.timer is not None:
                liveness.timer.cancel()
        self._liveness.clear()
        self._groups.clear()
        if self._refresher is not None:
            self._refresher.cancel()
        if self._stop_watch is not None:
            await self._stop_watch()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- internals ------------------------------------------------------------------------

    def _adopt(self, g: LocalGroup, state: bytes, revision: int) -> None:
        g.coordinator = _restore(g.coordinator, state, {})
        g.revision = revision

    async def _on_change(self, change: KvChange) -> None:
        """The watch: a new state of an open group, or a member's heartbeat."""
        kind, _, rest = change.key.partition(".")
        if kind == "s":
            g = self._groups.get(_untoken(rest))
            if g is None or change.revision <= g.revision or change.value is None:
                return
            self._adopt(g, change.value, change.revision)
            if self._announce is not None:
                await self._announce(g, _rebalance_for(g, change.value))
        elif kind == "h" and change.value is not None:
            group_token, _, member_token = rest.partition(".")
            name = _untoken(group_token)
            if name in self._groups:
                self._seen(name, _untoken(member_token))

    def _seen(self, group: str, member_id: str) -> None:
        liveness = self._liveness.get(group)
        if liveness is not None:
            liveness.seen_ms[member_id] = now_ms()

    def _arm_expiry(self, group: str) -> None:
        """One timer per open group, at the earliest moment a remote member's heartbeat
        could be a session timeout old."""
        liveness = self._liveness.get(group)
        g = self._groups.get(group)
        if liveness is None or g is None:
            return
        if liveness.timer is not None:
            liveness.timer.cancel()
            liveness.timer = None
        remote = [ms for m, ms in liveness.seen_ms.items() if m not in g.members]
        if not remote:
            return
        delay_s = max(0, min(remote) + self._session_ms - now_ms() + 1) / 1000
        liveness.timer = asyncio.get_running_loop().call_later(
            delay_s, lambda: self._spawn(self._expire_missing(group))
        )

    async def _expire_missing(self, group: str) -> None:
        liveness = self._liveness.get(group)
        g = self._groups.get(group)
        kv = self._kv
        if liveness is None or g is None or kv is None:
            return
        liveness.timer = None
        now = now_ms()
        due = [
            m
            for m, ms in liveness.seen_ms.items()
            if m not in g.members and ms + self._session_ms <= now
        ]
        missing = []
        for member_id in due:
            if await kv.get(_heartbeat_key(group, member_id)) is None:
                missing.append(member_id)
            else:
                liveness.seen_ms[member_id] = now
        if missing:
            log.info("group %r: expiring %s (no heartbeat)", group, missing)
            decision = await self._change(g, None, tuple(sorted(missing)))
            if isinstance(decision, Rebalance) and self._announce is not None:
                await self._announce(g, decision)
        self._arm_expiry(group)

    def _arm_refresher(self) -> None:
        if self._refresher is None:
            delay_s = self._session_ms / 3000
            self._refresher = asyncio.get_running_loop().call_later(delay_s, self._refresh)

    def _refresh(self) -> None:
        """Every session_timeout/3: write the heartbeat of each live local member, and
        expire the local members that stopped heartbeating here."""
        self._refresher = None
        now = now_ms()
        for name, liveness in self._liveness.items():
            g = self._groups.get(name)
            if g is None:
                continue
            live = [m for m, deadline in liveness.local_deadline_ms.items() if deadline > now]
            dead = [m for m, deadline in liveness.local_deadline_ms.items() if deadline <= now]
            if live:
                self._spawn(self._write_heartbeats(name, live))
            if dead:
                self._spawn(self._expire_local(g, tuple(sorted(dead))))
        if any(lv.local_deadline_ms for lv in self._liveness.values()):
            self._arm_refresher()

    async def _expire_local(self, g: LocalGroup, members: tuple[str, ...]) -> None:
        decision = await self._change(g, None, members)
        if isinstance(decision, Rebalance) and self._announce is not None:
            await self._announce(g, decision)

    async def _write_heartbeats(self, group: str, members: list[str]) -> None:
        kv = self._kv
        if kv is None:
            return
        ttl_s = max(1, math.ceil(self._session_ms / 1000))
        await asyncio.gather(
            *(kv.put(_heartbeat_key(group, m), b"", ttl_s=ttl_s) for m in members),
            return_exceptions=True,
        )

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("group membership work failed", exc_info=task.exception())


async def _retry(make: Callable[[], Awaitable[KeyValue]]) -> KeyValue:
    """Creating an R3 bucket can outlast one request timeout on a busy cluster."""
    for _ in range(BUCKET_ATTEMPTS - 1):
        try:
            return await make()
        except StorageUnavailable:
            log.warning("the membership bucket is not available yet; trying again")
    return await make()


def _state_key(group: str) -> str:
    return f"s.{_token(group)}"


def _heartbeat_key(group: str, member_id: str) -> str:
    return f"h.{_token(group)}.{_token(member_id)}"


def _member_ids(g: LocalGroup) -> list[str]:
    return [m.member_id for m in g.coordinator.snapshot().members]


def _continue(mirror: GroupCoordinator) -> GroupCoordinator:
    """A new empty coordinator that continues the mirror's generations (no state stored)."""
    return GroupCoordinator(
        mirror.group, mirror.session_timeout_ms, mirror.assignor, mirror.generation
    )


def _restore(
    mirror: GroupCoordinator, state: bytes, deadlines_ms: dict[str, int]
) -> GroupCoordinator:
    return GroupCoordinator.from_membership_state(
        mirror.group,
        orjson.dumps(orjson.loads(state)["coordinator"]),
        session_timeout_ms=mirror.session_timeout_ms,
        assignor=mirror.assignor,
        deadlines_ms=deadlines_ms,
        default_deadline_ms=NEVER_MS,
    )


def _encode_state(coordinator: GroupCoordinator, decision: Rebalance) -> bytes:
    """The coordinator's state and what the last decision restarted, so gateways that
    learn it from the watch restart the same partitions (a seek restarts owned ones)."""
    return orjson.dumps(
        {
            "coordinator": orjson.loads(coordinator.membership_state()),
            "gained": {a.member_id: list(a.gained) for a in decision.assignments},
        }
    )


def _rebalance_for(g: LocalGroup, state: bytes) -> Rebalance:
    """The Rebalance a state learned from the watch means for this gateway's members."""
    decoded = orjson.loads(state)
    gained: dict[str, list[int]] = decoded["gained"]
    snapshot = g.coordinator.snapshot()
    assignments = tuple(
        MemberAssignment(m.member_id, m.topic, m.partitions, tuple(gained.get(m.member_id, ())))
        for m in snapshot.members
    )
    present = {m.member_id for m in snapshot.members}
    # (a handle still joining has generation 0: its own write is on its way)
    gone = tuple(sorted(m for m, h in g.members.items() if m not in present and h.generation))
    return Rebalance(snapshot.generation, assignments, left=gone)
