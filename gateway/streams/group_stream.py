"""A stream that is a member of a consumer group, and the task that follows its group.

Every generation is announced with `event: assignment` before any of its records
(`LogStream.reassign`); `membership.owns(p)` is checked as each batch is handed to the
connection, so records of a lost partition stop at once. A (re)started partition begins at
the group's committed offset, clamped into the log, else at `from=`. The stream heartbeats
the membership after every write, so a client that stops reading (or vanishes without a
FIN) stops heartbeating once its buffers fill and expires after the session timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping
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


class GroupStream(LogStream):
    """A stream that is a member of a consumer group.

    It sends only records of partitions the member owns at the moment they are handed to
    the connection (`membership.owns`), heartbeats the membership after every write (so a
    client that stops reading stops heartbeating once the connection's buffers are full,
    and is removed after the session timeout), and remembers, per partition, the next
    offset after the last record written to the connection since the last assignment —
    what commit=auto commits.
    """

    def __init__(self, backend: Backend, membership: Membership, heartbeat_s: float) -> None:
        super().__init__(backend, membership.topic, {})
        self.membership = membership
        self.member_heartbeat_s = heartbeat_s
        self.generation = 0  # of the last assignment sent to the client
        self.written: dict[int, int] = {}
        self.committed: dict[int, int] = {}
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
        interval = self.member_heartbeat_s
        if heartbeat_s is not None:
            interval = min(interval, heartbeat_s)
        async with aclosing(super().events(interval)) as events:
            async for event in events:
                if isinstance(event, RecordBatch):
                    if not self.membership.owns(event.partition):
                        continue  # the partition moved in this very loop step
                    yield event
                    self.written[event.partition] = event.records[-1].offset + 1
                elif isinstance(event, Reassigned):
                    self.generation = int(event.announcement["generation"])
                    # keep only what continues exactly where this connection left off
                    self.written = {
                        p: o for p, o in self.written.items() if event.positions.get(p) == o
                    }
                    self.committed = {p: o for p, o in self.committed.items() if p in self.written}
                    yield event
                elif isinstance(event, End):
                    yield End(event.problem or self._problem)
                    return
                else:
                    yield event
                try:
                    self.membership.heartbeat()
                except UnknownMember as exc:
                    self.end(from_group_error(exc))

    async def auto_commit(self) -> None:
        """Commit what was written to the connection (commit=auto); a fenced or no longer
        owned partition's commit is dropped (its records go to the next owner again)."""
        offsets = {
            p: o
            for p, o in self.written.items()
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
    """Turn each new generation into `stream.reassign`, and commit=auto every interval."""
    membership = stream.membership
    try:
        while True:
            try:
                async with asyncio.timeout(AUTO_COMMIT_INTERVAL_S if auto_commit else None):
                    assignment = await membership.changed()
            except TimeoutError:
                await stream.auto_commit()
                continue
            starts = await group_starts(
                stream.backend, stream.topic, assignment.starting_offsets, start
            )
            current = stream.next_positions()  # read with no await before reassign
            positions = {
                p: starts[p] if p in starts else current[p]
                for p in assignment.partitions
                if p in starts or p in current
            }
            stream.reassign(positions, announcement(membership, assignment))
    except UnknownMember as exc:  # expired, or the gateway is closing
        stream.end(from_group_error(exc))
    except errors.StorageError as exc:
        stream.end(from_storage_error(exc))
    except Exception:  # a stream that no longer follows its group must not go on reading
        log.exception("group stream of %r stopped following its group", membership.group)
        stream.end(Problem("internal-error", "the stream lost track of its group; reconnect"))
