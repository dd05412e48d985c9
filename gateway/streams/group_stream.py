"""A stream that is a member of a consumer group, and the task that follows its group.

Every generation is announced with `event: assignment` before any of its records
(`LogStream.reassign`); `membership.owns(p)` is checked as each batch is handed to the
connection, so records of a lost partition stop at once. A (re)started partition begins at
the group's committed offset, clamped into the log, else at `from=`. The stream heartbeats
the membership after every write, so a client that stops reading (or vanishes without a
FIN) stops heartbeating once its buffers fill and expires after the session timeout.

commit=auto commits only what the client has shown it received (`ReceiptLedger`): a
position counts once the connection accepted a later write at least one commit interval
(`AUTO_COMMIT_INTERVAL_S`) after the one that carried it — a client reading its stream
had it in hand by then. The follower checks every quarter interval, commits what became
proven, and, when a quiet stream holds a position only a later write could prove, wakes the
stream for a heartbeat that proves it. Nothing unproven is ever committed: not when the
client disconnects, not when the member expires, not when the gateway shuts down; those
records go to the partition's next owner (at least once, at most about 1.25 intervals of
records again per partition and disconnect). A reconnecting client's cursor proves the rest
(gateway/groups/service.py `commit_received`, called by the route before it joins).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Collection, Mapping
from contextlib import aclosing
from typing import Any

from gateway.groups.errors import FencedGeneration, GroupError, NotPartitionOwner, UnknownMember
from gateway.groups.membership import Assignment, Membership
from gateway.http.problems import Problem, from_group_error, from_storage_error
from gateway.streams.log_stream import End, LogStream, Reassigned, RecordBatch, StreamEvent
from gateway.streams.positions import start_positions
from storage import errors
from storage.backend import Backend

log = logging.getLogger(__name__)

AUTO_COMMIT_INTERVAL_S = 1.0
CHECKS_PER_INTERVAL = 4


class ReceiptLedger:
    """Which positions written to a connection count as received by its client: those
    written at least `interval_s` before a later write to the same connection succeeded.

    Pure bookkeeping on times the caller passes in (seconds on any monotonic clock).
    """

    __slots__ = ("_last_write_s", "_unproven", "interval_s", "proven")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.proven: dict[int, int] = {}  # partition -> next offset, received
        self._unproven: list[tuple[float, int, int]] = []  # (written at, partition, next offset)
        self._last_write_s = float("-inf")

    def wrote(self, now_s: float, partition: int | None = None, next_offset: int = 0) -> None:
        """A write to the connection succeeded at `now_s` (carrying `partition`'s records up
        to `next_offset`, if a partition is given)."""
        self._last_write_s = now_s
        if partition is not None:
            self._unproven.append((now_s, partition, next_offset))

    def prove(self) -> dict[int, int]:
        """Move what the writes so far prove into `proven`, and return it."""
        horizon = self._last_write_s - self.interval_s
        done = 0
        for written_s, partition, next_offset in self._unproven:
            if written_s > horizon:
                break
            self.proven[partition] = next_offset
            done += 1
        if done:
            del self._unproven[:done]
        return self.proven

    def needs_write(self, now_s: float) -> bool:
        """Whether a write now would prove a position that no write has proven yet."""
        return bool(self._unproven) and (
            self._unproven[0][0] <= now_s - self.interval_s
            and self._last_write_s < self._unproven[0][0] + self.interval_s
        )

    def keep(self, partitions: Collection[int]) -> None:
        """A new assignment: keep only the partitions that go on where they were."""
        self.proven = {p: o for p, o in self.proven.items() if p in partitions}
        self._unproven = [entry for entry in self._unproven if entry[1] in partitions]


class GroupStream(LogStream):
    """A stream that is a member of a consumer group.

    It sends only records of partitions the member owns at the moment they are handed to
    the connection (`membership.owns`), heartbeats the membership after every write (so a
    client that stops reading stops heartbeating once the connection's buffers are full,
    and is removed after the session timeout), and keeps, per partition, the next offset
    after the last record written to the connection since the last assignment, and (with
    commit=auto) in `ledger` which of those writes the client has shown it received: what
    it commits. Its cursors carry the group's offsets epoch as `cursor_epoch()` gives it.
    """

    def __init__(
        self,
        backend: Backend,
        membership: Membership,
        heartbeat_s: float,
        cursor_epoch: Callable[[], int | None],
        auto_commit: bool,
    ) -> None:
        super().__init__(backend, membership.topic, {})
        self.membership = membership
        self.member_heartbeat_s = heartbeat_s
        self.cursor_epoch = cursor_epoch
        self.generation = 0  # of the last assignment sent to the client
        self.written: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.ledger = ReceiptLedger(AUTO_COMMIT_INTERVAL_S) if auto_commit else None
        self.client_gone = False
        self._problem: Problem | None = None

    def next_positions(self) -> dict[int, int]:
        """The positions the stream will read from next (an assignment not yet sent wins)."""
        pending = self._pending
        return dict(pending.positions) if pending is not None else self.positions

    def end(self, problem: Problem) -> None:
        """End the stream with `problem` (an `error` event) as soon as it can."""
        self._problem = problem
        self.close()

    def disconnected(self) -> None:
        self.client_gone = True
        self.close()

    async def events(self, heartbeat_s: float | None = None) -> AsyncGenerator[StreamEvent, None]:
        """The group's events; the code after each `yield` runs once the connection took
        what the event became (the response asks for the next chunk only after a send)."""
        interval = self.member_heartbeat_s
        if heartbeat_s is not None:
            interval = min(interval, heartbeat_s)
        clock = asyncio.get_running_loop().time
        ledger = self.ledger
        async with aclosing(super().events(interval)) as events:
            async for event in events:
                if isinstance(event, RecordBatch):
                    if not self.membership.owns(event.partition):
                        continue  # the partition moved in this very loop step
                    yield event
                    next_offset = event.records[-1].offset + 1
                    self.written[event.partition] = next_offset
                    if ledger is not None:
                        ledger.wrote(clock(), event.partition, next_offset)
                elif isinstance(event, Reassigned):
                    self.generation = int(event.announcement["generation"])
                    # keep only what continues exactly where this connection left off
                    self.written = {
                        p: o for p, o in self.written.items() if event.positions.get(p) == o
                    }
                    self.committed = {p: o for p, o in self.committed.items() if p in self.written}
                    if ledger is not None:
                        ledger.keep(self.written.keys())
                    yield event
                    if ledger is not None:
                        ledger.wrote(clock())
                elif isinstance(event, End):
                    yield End(event.problem or self._problem)
                    return
                else:
                    yield event
                    if ledger is not None:
                        ledger.wrote(clock())
                try:
                    self.membership.heartbeat()
                except UnknownMember as exc:
                    self.end(from_group_error(exc))

    def check_receipts(self) -> None:
        """Wake a quiet stream for a heartbeat when a write now would prove something."""
        ledger = self.ledger
        if ledger is not None and ledger.needs_write(asyncio.get_running_loop().time()):
            self.wake()

    async def auto_commit(self) -> None:
        """Commit what the client has shown it received (commit=auto); a fenced or no longer
        owned partition's commit is dropped (its records go to the next owner again)."""
        if self.client_gone or self.ledger is None:
            return
        offsets = {
            p: o
            for p, o in self.ledger.prove().items()
            if o != self.committed.get(p) and self.membership.owns(p)
        }
        if not offsets:
            return
        try:
            await self.membership.commit(self.generation, offsets)
        except (FencedGeneration, NotPartitionOwner, UnknownMember):
            return
        except (GroupError, errors.StorageError):
            log.warning("auto-commit of group %r failed", self.membership.group, exc_info=True)
            return
        self.committed.update(offsets)


async def group_starts(
    backend: Backend, topic: str, starting_offsets: Mapping[int, int | None], start: str
) -> dict[int, int]:
    """Where each (re)started partition begins: the group's committed offset, moved into
    the log when retention or a recreated topic left it outside; `from=` with none."""
    positions: dict[int, int] = {}
    unset = [p for p, offset in starting_offsets.items() if offset is None]
    positions.update(await start_positions(backend, topic, unset, start))
    for p, offset in starting_offsets.items():
        if offset is not None:
            info = await backend.partition_info(topic, p)
            positions[p] = min(max(offset, info.log_start_offset), info.end_offset)
    return positions


def announcement(membership: Membership, assignment: Assignment) -> dict[str, Any]:
    return {
        "member_id": membership.member_id,
        "generation": assignment.generation,
        "partitions": list(assignment.partitions),
    }


async def follow(stream: GroupStream, start: str, auto_commit: bool) -> None:
    """Turn each new generation into a reassignment, and commit=auto what became proven."""
    membership = stream.membership
    check_s = AUTO_COMMIT_INTERVAL_S / CHECKS_PER_INTERVAL if auto_commit else None
    try:
        while True:
            try:
                async with asyncio.timeout(check_s):
                    assignment = await membership.changed()
            except TimeoutError:
                stream.check_receipts()
                await stream.auto_commit()
                continue
            epoch = stream.cursor_epoch()  # before any await: see ConsumerGroups.cursor_epoch
            starts = await group_starts(
                stream.backend, stream.topic, assignment.starting_offsets, start
            )
            current = stream.next_positions()  # read with no await before reassign
            positions = {
                p: starts[p] if p in starts else current[p]
                for p in assignment.partitions
                if p in starts or p in current
            }
            stream.reassign(positions, announcement(membership, assignment), epoch)
    except UnknownMember as exc:  # expired, or the gateway is closing
        stream.end(from_group_error(exc))
    except errors.StorageError as exc:
        stream.end(from_storage_error(exc))
    except Exception:  # a stream that no longer follows its group must not go on reading
        log.exception("group stream of %r stopped following its group", membership.group)
        stream.end(Problem("internal-error", "the stream lost track of its group; reconnect"))
