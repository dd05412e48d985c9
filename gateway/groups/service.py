"""Consumer groups for the gateway: the asyncio service around the pure coordinators.

One GroupCoordinator per group (gateway/groups/coordinator.py) decides membership and
assignment; this module feeds it events with the event loop's clock through the group's
MembershipStore (which owns session timers, and decides where the authoritative state
lives), keeps each group's committed offsets in memory as written through it, and
persists through the storage Backend only: committed offsets, and the generation as group
metadata so it keeps growing across restarts.

A stream (or a pull consumer) gets a Membership from `join`:

    membership = await groups.join(group, topic, principal=p)   # or member_id=... to rejoin
    send_assignment(membership.assignment)              # starting_offsets: where to begin
    while True:
        assignment = await membership.changed()          # a new generation for this member
        stop(assignment.lost); start(assignment.starting_offsets)

Positions. `starting_offsets` maps each partition to (re)start to the group's committed
offset, or None when the group has none ("use the stream's from="). A committed offset
can be below the log start after retention; the stream should then start at the log start.

Ownership. `membership.owns(p)` is live: it turns False in the same event-loop step the
coordinator moves p away, before the stream sees `changed()`, so a stream that checks it
before sending each record never sends a record of a partition it no longer owns.

Commits are serialised per group and validated against the coordinator both before and
after the end-offset check. A commit validated just before a rebalance may land after the
new owner read its starting offset: that can only cause redelivery, never loss.

commit=auto (what a stream does, gateway/streams/group_stream.py): commit, per owned
partition, only what the client has shown it received. While the connection is healthy that
is a position written to it at least one commit interval before a later write to it
succeeded; nothing is committed for the last window when the connection drops or the member
expires (those records are redelivered to the next owner). On FencedGeneration or
NotPartitionOwner the commit is dropped; the next one uses the generation from `changed()`.

Principals. With auth on, a member id belongs to the principal that joined with it (the
gateway's `Principal.identity`, kept in the coordinator's state, so every gateway knows it):
`join` with a member id, `member` (pulls, leaving) and `commit` name a principal, and for
any other one the id is unknown, with the same answer as an id nobody has. Ids are never
chosen by clients: a rejoin names a member of the same principal that is still alive.

Cursors (`commit_received`). A reconnecting commit=auto stream proves with its cursor what
its client received before. The cursor names the group's offsets epoch (`cursor_epoch`): a
random number drawn when this gateway loads the group and again at every seek, so a cursor
made before a seek, a delete or a restart of this gateway commits nothing. Within one epoch
the cursor's offsets are committed where they are ahead of the committed offset and within
the log, whoever owns the partition now: a cursor only proves receipt, so committing it can
only skip records that client already has; committed offsets never move back for it. With
a store shared by several gateways there is no shared epoch, and cursors commit nothing;
nor do they while the group has members of another protocol, and a commit of that protocol
draws a new epoch (its clients may have moved the offsets back on purpose).

Seek policy: allowed at any time. It writes the new committed offsets, draws a new offsets
epoch, and, when the topic has members, opens a new generation in which every partition of
the topic restarts from them (older-generation commits are fenced, and older cursors carry
the old epoch, so none can undo the seek).

Other protocols. A group may instead have members that speak Kafka (gateway/kafka/groups/,
attached as `ForeignGroups`, see gateway/groups/foreign.py): one protocol's members at a
time (`join` and `seek` raise GroupProtocolConflict while the other has members), one set
of committed offsets (`commit_as` writes the other protocol's commits, `committed_offsets`
reads them), one sequence of generations (`advance`), and lists and descriptions show
whichever members the group has.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.groups.assignors import ASSIGNORS, DEFAULT_ASSIGNOR
from gateway.groups.coordinator import (
    Advance,
    Commit,
    GroupCoordinator,
    GroupSnapshot,
    GroupState,
    Join,
    Leave,
    MemberInfo,
    Rebalance,
    Rejected,
    RejectReason,
    Seek,
)
from gateway.groups.errors import (
    FencedGeneration,
    GroupError,
    GroupNotEmpty,
    GroupProtocolConflict,
    InvalidGroupName,
    InvalidMemberId,
    InvalidOffsets,
    NotPartitionOwner,
    UnknownGroup,
    UnknownMember,
)
from gateway.groups.foreign import ForeignGroups
from gateway.groups.membership import Membership
from gateway.groups.store import LocalGroup, MembershipStore, new_offsets_epoch, now_ms
from storage.backend import Backend
from storage.errors import GroupNotFound, PartitionNotFound, StorageError, TopicNotFound
from storage.names import is_valid_group_name
from storage.types import TopicPartition

log = logging.getLogger(__name__)

DEFAULT_SESSION_TIMEOUT_S = 30.0

SeekTarget = Literal["earliest", "latest"] | int  # an int is a timestamp in ms
"""Where `seek` moves a group: the log start, the end, or the first record at or after a time."""


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed_offset: int | None
    end_offset: int
    lag: int | None  # end_offset - committed_offset; None when nothing is committed


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """GET /v1/groups/{group}."""

    group: str
    state: GroupState
    generation: int
    protocol: str
    members: tuple[MemberInfo, ...]
    partitions: tuple[PartitionLag, ...]


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """One entry of GET /v1/groups."""

    group: str
    state: GroupState
    generation: int
    members: int


class ConsumerGroups:
    """Every consumer group of one gateway process, over one storage Backend."""

    def __init__(
        self,
        backend: Backend,
        store: MembershipStore,
        *,
        session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S,
        assignor: str = DEFAULT_ASSIGNOR.name,
    ) -> None:
        """`store` decides membership: in this process, or shared through JetStream
        (gateway/backends.py `membership_store` picks the one that fits the backend)."""
        if session_timeout_s <= 0:
            raise ValueError("session_timeout_s must be positive")
        if assignor not in ASSIGNORS:
            raise ValueError(f"unknown assignor {assignor!r}: one of {sorted(ASSIGNORS)}")
        self._backend = backend
        self._session_timeout_ms = max(1, round(session_timeout_s * 1000))
        self._assignor = ASSIGNORS[assignor]
        self._groups: dict[str, LocalGroup] = {}
        self._open_lock = asyncio.Lock()
        self._store = store
        self._store.bind(self._announce)
        self._foreign: ForeignGroups | None = None

    def attach(self, foreign: ForeignGroups | None) -> None:
        """The groups of another protocol (the Kafka listener's), or None to detach them."""
        self._foreign = foreign

    # -- members --------------------------------------------------------------------------

    async def join(
        self,
        group: str,
        topic: str,
        member_id: str | None = None,
        *,
        principal: str | None = None,
    ) -> Membership:
        """Join `group` as a consumer of `topic`; the returned assignment is already current.

        Without `member_id` a new member (with a new id) joins. With the id of a live member
        of `principal` on this gateway, on the same topic it returns that Membership (as a
        heartbeat); on another topic, the old membership leaves first. Raises TopicNotFound,
        UnknownMember for any other id (left, expired, another principal's, never seen).
        """
        _check_group_name(group)
        if member_id is not None and not is_valid_group_name(member_id):
            raise InvalidMemberId(member_id)
        topic_info = await self._backend.get_topic(topic)
        g = await self._open(group, create=True)
        existing = None
        if member_id is not None:
            existing = self.member(group, member_id, principal)
        member_id = member_id or str(uuid.uuid4())
        join = Join(member_id, topic, topic_info.partitions, now_ms(), principal)
        if existing is not None and existing.topic == topic:
            decision = await self._store.change(g, join)
            if isinstance(decision, Rebalance):  # the topic's partition count changed
                await self._announce(g, decision)
            return existing
        if existing is not None:
            await self._leave(g, member_id)
        membership = Membership(self, group, member_id, topic, principal)
        g.members[member_id] = membership  # from here on the other protocol sees it
        if (foreign := self._foreign_snapshot(group)) is not None:
            del g.members[member_id]
            raise GroupProtocolConflict(group, self._foreign_protocol(), len(foreign.members))
        try:
            decision = await self._store.change(g, join)
        except BaseException:
            g.members.pop(member_id, None)
            raise
        assert isinstance(decision, Rebalance)
        await self._announce(g, decision)
        membership._deliver()
        return membership

    def member(self, group: str, member_id: str, principal: str | None = None) -> Membership:
        """The live member `member_id` of `principal` on this gateway (pull consumers).
        Raises UnknownMember, also when the member is another principal's."""
        g = self._groups.get(group)
        membership = g.members.get(member_id) if g is not None else None
        if membership is None or membership.principal != principal:
            raise UnknownMember(group, member_id)
        return membership

    async def leave(self, group: str, member_id: str) -> None:
        """Remove a member now; a no-op for one that is already gone."""
        g = self._groups.get(group)
        if g is not None:
            await self._leave(g, member_id)

    async def commit(
        self,
        group: str,
        member_id: str,
        generation: int,
        offsets: Mapping[TopicPartition, int],
        *,
        principal: str | None = None,
    ) -> None:
        """Commit offsets (the next offset to read) for a member of the current generation.

        Raises UnknownMember (also for a member of another principal), FencedGeneration, NotPartitionOwner, or InvalidOffsets for an
        empty commit, a negative offset or one beyond the partition's end offset. An
        accepted commit also counts as a heartbeat.
        """
        g = self._groups.get(group)
        if g is None:
            raise UnknownMember(group, member_id)
        commit = Commit(member_id, generation, offsets, principal)

        async def check() -> None:
            await self._check_commit(g, commit)

        await self._write_commit(g, offsets, check)
        self._store.heartbeat(g, member_id, now_ms())

    async def commit_as(
        self, group: str, offsets: Mapping[TopicPartition, int], check: Callable[[], None]
    ) -> None:
        """Commit offsets that another protocol's coordinator validates: `check` raises to
        refuse, and runs before and after the end-offset checks (whose awaits allow a
        rebalance there). Creates the group. Raises GroupProtocolConflict while the group has
        HTTP members (then no other protocol's member may commit), InvalidOffsets."""
        _check_group_name(group)
        g = await self._open(group, create=True)

        async def check_both() -> None:
            if count := self._http_members(g):
                raise GroupProtocolConflict(group, "HTTP", count)
            check()
            # its clients may move offsets back on purpose: no older cursor may undo that
            g.offsets_epoch = new_offsets_epoch()

        await self._write_commit(g, offsets, check_both)

    async def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The group's committed offsets ({} for a group that never committed)."""
        g = self._groups.get(group)
        if g is not None and not self._store.shared:
            return dict(g.committed)
        return await self._backend.committed_offsets(group)

    async def http_membership(self, group: str) -> tuple[int, int]:
        """(members, generation) of the group on HTTP's side, members still joining on this
        gateway included: what another protocol checks before it admits a member."""
        _check_group_name(group)
        g = await self._open(group, create=True)
        return self._http_members(g), g.coordinator.generation

    async def advance(self, group: str, generation: int) -> None:
        """Generations up to `generation` were used by another protocol's members: HTTP's
        next one comes after them (and the generation is saved like HTTP's own)."""
        g = await self._open(group, create=True)
        decision = await self._store.change(g, Advance(generation))
        if isinstance(decision, Rebalance):
            await self._announce(g, decision)

    def cursor_epoch(self, group: str) -> int | None:
        """The epoch a group stream's cursors carry, read when it joins and at each `changed()`;
        None when cursors cannot commit (a shared store, or a group not loaded here)."""
        g = self._groups.get(group)
        return None if g is None or self._store.shared else g.offsets_epoch

    async def commit_received(
        self, group: str, topic: str, epoch: int, offsets: Mapping[int, int]
    ) -> dict[int, int]:
        """Commit {partition: next offset} that a client's cursor of `epoch` proves it
        received (see the module's Cursors rule); return what was committed.

        Partitions where the group's committed offset is at or beyond the cursor, or where
        the cursor is beyond the end offset (another incarnation of the topic), are left
        alone; a cursor of another epoch commits nothing, and so does any while the group has
        members of another protocol. Needs no membership: the stream commits before it
        joins, so its member starts from what the cursor proves.
        """
        g = self._groups.get(group)
        if g is None or self._store.shared or epoch != g.offsets_epoch:
            return {}
        async with g.lock:
            if epoch != g.offsets_epoch or self._foreign_snapshot(group) is not None:
                return {}  # a seek (or another protocol's commit) came first
            ahead: dict[TopicPartition, int] = {}
            for partition, offset in sorted(offsets.items()):
                tp = TopicPartition(topic, partition)
                committed = g.committed.get(tp)
                if committed is not None and offset <= committed:
                    continue
                info = await self._backend.partition_info(topic, partition)
                if offset <= info.end_offset:
                    ahead[tp] = offset
            if ahead:
                await self._backend.commit_offsets(group, ahead)
                g.committed.update(ahead)
        return {tp.partition: offset for tp, offset in ahead.items()}

    # -- groups ---------------------------------------------------------------------------

    async def list_groups(self) -> list[GroupSummary]:
        """Every group with members (of either protocol), committed offsets or saved
        metadata, by name."""
        names = set(await self._backend.list_groups()) | set(self._groups)
        names |= await self._store.group_names()
        if self._foreign is not None:
            names |= self._foreign.group_names()
        summaries = []
        for name in sorted(names):
            g = await self._open(name, create=True)
            snapshot = self._foreign_snapshot(name) or g.coordinator.snapshot()
            summaries.append(
                GroupSummary(name, snapshot.state, snapshot.generation, len(snapshot.members))
            )
        return summaries

    async def describe(self, group: str) -> GroupDescription:
        """State, generation, members, and committed offset, end offset and lag per partition.

        Partitions listed: every partition of the topics the members read, and every one the
        group has committed (of topics that still exist). Raises UnknownGroup.
        """
        foreign = self._foreign_snapshot(group)
        g = await self._open(group, create=foreign is not None)
        if self._store.shared:  # other gateways commit too
            g.committed = await self._backend.committed_offsets(group)
        snapshot = foreign or g.coordinator.snapshot()
        wanted = set(g.committed)
        for member in snapshot.members:
            wanted.update(TopicPartition(member.topic, p) for p in member.partitions)
        partitions = []
        for tp in sorted(wanted):
            try:
                info = await self._backend.partition_info(tp.topic, tp.partition)
            except (TopicNotFound, PartitionNotFound):
                continue
            committed = g.committed.get(tp)
            lag = None if committed is None else max(0, info.end_offset - committed)
            partitions.append(PartitionLag(tp.topic, tp.partition, committed, info.end_offset, lag))
        return GroupDescription(
            group,
            snapshot.state,
            snapshot.generation,
            snapshot.protocol,
            snapshot.members,
            tuple(partitions),
        )

    async def seek(self, group: str, topic: str, to: SeekTarget) -> dict[int, int]:
        """Move the group's committed offsets of every partition of `topic`; return them.

        `to` is "earliest" (log start), "latest" (end offset) or a timestamp in ms (the
        first record at or after it). Members of the topic restart from the new offsets in
        a new generation. Raises TopicNotFound, InvalidOffsets for a negative timestamp.
        """
        _check_group_name(group)
        if isinstance(to, int) and to < 0:
            raise InvalidOffsets("a seek timestamp must not be negative")
        if not isinstance(to, int) and to not in ("earliest", "latest"):
            raise InvalidOffsets(f"seek to 'earliest', 'latest' or a timestamp, not {to!r}")
        topic_info = await self._backend.get_topic(topic)
        offsets: dict[int, int] = {}
        for partition in range(topic_info.partitions):
            if isinstance(to, int):
                offsets[partition] = await self._backend.offset_for_timestamp(topic, partition, to)
            else:
                info = await self._backend.partition_info(topic, partition)
                offsets[partition] = info.log_start_offset if to == "earliest" else info.end_offset
        g = await self._open(group, create=True)
        committed = {TopicPartition(topic, p): offset for p, offset in offsets.items()}
        async with g.lock:
            if (foreign := self._foreign_snapshot(group)) is not None:
                # their clients keep their positions and would commit over the seek
                raise GroupProtocolConflict(group, self._foreign_protocol(), len(foreign.members))
            await self._backend.commit_offsets(group, committed)
            g.committed.update(committed)
            decision = await self._store.change(g, Seek(topic))
            if isinstance(decision, Rebalance):
                await self._announce(g, decision)
            # after the announce, with no await since: a stream that reads the new epoch
            # (at `changed()`) already has the restart positions (see `cursor_epoch`)
            g.offsets_epoch = new_offsets_epoch()
        return offsets

    async def delete(self, group: str) -> None:
        """Forget an empty group's offsets and metadata. Raises GroupNotEmpty, UnknownGroup."""
        async with self._open_lock:
            if (foreign := self._foreign_snapshot(group)) is not None:
                raise GroupNotEmpty(group, len(foreign.members))
            g = self._groups.get(group)
            if g is not None:
                if g.members:
                    raise GroupNotEmpty(group, len(g.members))
                async with g.lock:
                    del self._groups[group]
                    await self._store.forget(g, deleted=True)
            try:
                await self._backend.delete_group(group)
            except GroupNotFound:
                if g is None:
                    raise UnknownGroup(group) from None

    async def close(self) -> None:
        """Stop timers, end every membership (their `changed()` raise) and flush metadata."""
        groups, self._groups = list(self._groups.values()), {}
        for g in groups:
            for membership in g.members.values():
                membership._close("lost its membership when the gateway closed")
            g.members.clear()
        await self._store.close()

    # -- internals ------------------------------------------------------------------------

    async def _open(self, group: str, *, create: bool) -> LocalGroup:
        """The group's state, loaded from storage on first use. Raises UnknownGroup when
        `create` is false and the group has nothing stored."""
        g = self._groups.get(group)
        if g is not None:
            return g
        async with self._open_lock:
            g = self._groups.get(group)
            if g is not None:
                return g
            metadata = await self._backend.load_group_metadata(group)
            committed = await self._backend.committed_offsets(group)
            coordinator = GroupCoordinator.from_metadata(
                group,
                metadata,
                session_timeout_ms=self._session_timeout_ms,
                assignor=self._assignor,
            )
            g = LocalGroup(group, coordinator, committed, coordinator.generation)
            stored = await self._store.open(g)
            if not create and not stored and metadata is None and not committed:
                await self._store.forget(g, deleted=False)
                raise UnknownGroup(group)
            g.announced_generation = g.coordinator.generation
            self._groups[group] = g
            return g

    def _foreign_snapshot(self, group: str) -> GroupSnapshot | None:
        return None if self._foreign is None else self._foreign.snapshot(group)

    def _foreign_protocol(self) -> str:
        return "other" if self._foreign is None else self._foreign.protocol

    @staticmethod
    def _http_members(g: LocalGroup) -> int:
        """Members of the coordinator (any gateway's) and local ones still joining."""
        return len(set(g.members) | {m.member_id for m in g.coordinator.snapshot().members})

    async def _write_commit(
        self,
        g: LocalGroup,
        offsets: Mapping[TopicPartition, int],
        check: Callable[[], Awaitable[None]],
    ) -> None:
        """Validate the offsets and write them, serialised per group; `check` runs before and
        after the end-offset checks, whose awaits allowed a rebalance."""
        if not offsets:
            raise InvalidOffsets("a commit needs at least one offset")
        negative = sorted(tp for tp, offset in offsets.items() if offset < 0)
        if negative:
            raise InvalidOffsets(f"negative offset for {negative[0].topic}/{negative[0].partition}")
        async with g.lock:
            await check()
            for tp, offset in sorted(offsets.items()):
                end_offset = (await self._backend.partition_info(tp.topic, tp.partition)).end_offset
                if offset > end_offset:
                    raise InvalidOffsets(
                        f"offset {offset} of {tp.topic}/{tp.partition} is beyond its end"
                        f" offset {end_offset}"
                    )
            await check()
            await self._backend.commit_offsets(g.name, dict(offsets))
            g.committed.update(offsets)

    def heartbeat(self, group: str, member_id: str) -> None:
        """A member is alive (Membership.heartbeat). Raises UnknownMember."""
        g = self._groups.get(group)
        if g is None or not self._store.heartbeat(g, member_id, now_ms()):
            raise UnknownMember(group, member_id)

    async def _leave(self, g: LocalGroup, member_id: str) -> None:
        decision = await self._store.change(g, Leave(member_id))
        if isinstance(decision, Rebalance):
            await self._announce(g, decision)

    async def _check_commit(self, g: LocalGroup, commit: Commit) -> None:
        decision = await self._store.check_commit(g, commit)
        if not isinstance(decision, Rejected):
            return
        error: GroupError
        match decision.reason:
            case RejectReason.UNKNOWN_MEMBER:
                error = UnknownMember(g.name, commit.member_id)
            case RejectReason.FENCED_GENERATION:
                error = FencedGeneration(g.name, commit.generation, decision.generation)
            case RejectReason.NOT_OWNER:
                error = NotPartitionOwner(g.name, commit.member_id, decision.partitions)
        raise error

    async def _announce(self, g: LocalGroup, decision: Rebalance) -> None:
        """Tell the local members about a generation (from this gateway or the store)."""
        if self._store.shared and decision.generation > g.announced_generation:
            try:
                g.committed = await self._backend.committed_offsets(g.name)
            except StorageError:  # announce anyway: a start from older commits only redelivers
                log.warning("group %r: starting from cached commits", g.name, exc_info=True)
        self._apply(g, decision)

    def _apply(self, g: LocalGroup, decision: Rebalance) -> None:
        """Announce a new generation to the local members; older ones than the last
        announced are dropped (with several gateways they can arrive out of order).

        Gained and lost partitions are taken relative to what each handle owns, so a
        member that missed a generation (learned from another gateway) still starts
        every partition it now owns and stops every one it lost.
        """
        if decision.generation <= g.announced_generation:
            return
        log.debug("group %r: generation %d", g.name, decision.generation)
        g.announced_generation = decision.generation
        for member_id in decision.left:
            if (gone := g.members.pop(member_id, None)) is not None:
                gone._close("left")
        for member_id in decision.expired:
            if (gone := g.members.pop(member_id, None)) is not None:
                gone._close("expired after its session timeout")
        assigned = {a.member_id for a in decision.assignments}
        # (a handle still joining has generation 0: its own decision is on its way)
        for member_id in [m for m, h in g.members.items() if m not in assigned and h.generation]:
            g.members.pop(member_id)._close("is no longer a member (expired on another gateway)")
        for a in decision.assignments:
            handle = g.members.get(a.member_id)
            if handle is None:
                continue  # a member of another gateway
            owned = set(handle.partitions)
            gained = set(a.gained) | (set(a.partitions) - owned)
            lost = tuple(sorted(owned - set(a.partitions)))
            starts = {p: g.committed.get(TopicPartition(a.topic, p)) for p in sorted(gained)}
            handle._update(decision.generation, a.partitions, lost, starts)
        self._store.announced(g, decision)


def _check_group_name(group: str) -> None:
    if not is_valid_group_name(group):
        raise InvalidGroupName(group)
