"""The streaming consumer: `async for record in consumer` over SSE, reconnecting by itself.

Resume. Every SSE record carries a cursor (`id:`) that holds the next offset of every
partition the stream reads. The consumer remembers the cursor of the last record it handed
to you and reconnects with it as `Last-Event-ID`, so a dropped connection, a gateway restart
or a `retry:` pause loses nothing and repeats nothing. Reconnects wait the server's `retry:`
(or `reconnect_delay_ms`), doubling while the gateway stays unreachable, up to
`max_reconnect_delay_ms`; `max_reconnect_attempts` (default: forever, like EventSource)
bounds consecutive failures. Heartbeat comments keep the read timeout from firing on an idle
stream; a stream silent for longer than the client's `stream_read_timeout_s` is reconnected.

Groups. With `group=`, the stream is a member of the group: the gateway announces each
generation (`event: assignment`), which sets `consumer.assignment` and calls
`on_assignment`, and starts each assigned partition at the group's committed offset. Each
connection is a new member, so a reconnect joins again and resumes from the group's
commits, not from a cursor: whatever was not committed is delivered again (at least once),
after a rebalance, a reconnect, a crash or a restart.

Commits, as Kafka's consumers make them. With `commit="auto"` (the default) the consumer
commits what your code has processed: a record counts as processed once you ask for the
next one (or leave an `async with` block without an exception); every
`auto_commit_interval_ms` (1 s) it commits the processed positions of the generation they
were delivered in, and once more when it is closed. Never a record it has merely received:
when your code crashes, or the member is replaced, at most one interval of processed
records is delivered again, plus the one in hand. A rebalance fences the positions of the
older generation (they come again to the partition's owner). Hand records to other tasks
and move on, and they count as processed: then use `commit="manual"` and call `commit()`
once they are done.

Auth. `event: expired` (the token the stream was opened with ran out) calls `on_expired`
before the reconnect, so it can put a fresh token into `client.http.headers`.

A problem the stream ends with (`event: error`) or answers with is raised as its typed
error, unless it is retriable (shutting-down, storage-unavailable), which reconnects.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from httpx_sse import EventSource, SSEError

from logway_client._closing import AsyncClosesOnExit
from logway_client.client import AsyncLogwayClient, path_segment, raise_for_problem
from logway_client.errors import (
    ConnectionFailed,
    FencedGeneration,
    LogwayError,
    NotPartitionOwner,
    ProtocolViolation,
    UnknownMember,
    error_from_problem,
)
from logway_client.types import Assignment, Record

AssignmentCallback = Callable[[Assignment], Awaitable[None] | None]
ExpiredCallback = Callable[[], Awaitable[None] | None]
DEFAULT_RECONNECT_DELAY_MS = 1000.0
DEFAULT_AUTO_COMMIT_INTERVAL_MS = 1000.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Generation:
    """The member and generation records were delivered in: what a commit of them needs."""

    member_id: str
    generation: int


class AsyncConsumer(AsyncClosesOnExit):
    """Stream `topic`; iterate with `async for record in consumer`. Use as `async with`.

    `start`: where partitions without a cursor (or group commit) begin: "earliest",
    "latest" (the gateway's default) or a timestamp in ms. `partitions`: read only these
    (not with `group`). `cursor`: resume a stream from a cursor saved earlier
    (`consumer.cursor`). With `group`: `commit` "auto" (default: commits what was
    processed, every `auto_commit_interval_ms`) or "manual" (call `commit()`).
    """

    def __init__(
        self,
        client: AsyncLogwayClient,
        topic: str,
        *,
        start: Literal["earliest", "latest"] | int | None = None,
        partitions: Iterable[int] | None = None,
        cursor: str | None = None,
        group: str | None = None,
        commit: Literal["auto", "manual"] = "auto",
        auto_commit_interval_ms: float = DEFAULT_AUTO_COMMIT_INTERVAL_MS,
        on_assignment: AssignmentCallback | None = None,
        on_expired: ExpiredCallback | None = None,
        reconnect_delay_ms: float | None = None,
        max_reconnect_delay_ms: float = 30_000.0,
        max_reconnect_attempts: int | None = None,
    ) -> None:
        if group is not None and partitions is not None:
            raise ValueError("a group member reads the partitions the group assigns it")
        if commit not in ("auto", "manual"):
            raise ValueError("commit must be 'auto' or 'manual'")
        if auto_commit_interval_ms <= 0:
            raise ValueError("auto_commit_interval_ms must be positive")
        self.client = client
        self.topic = topic
        self.start = start
        self.partitions = None if partitions is None else tuple(sorted(set(partitions)))
        self.group = group
        self.commit_mode = commit
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.on_assignment = on_assignment
        self.on_expired = on_expired
        self.cursor = cursor
        self.assignment: Assignment | None = None
        self.reconnects = 0  # connections opened after the first one
        self._reconnect_delay_ms = reconnect_delay_ms
        self.server_retry_ms: float | None = None
        self._max_reconnect_delay_ms = max_reconnect_delay_ms
        self._max_reconnect_attempts = max_reconnect_attempts
        self._delivered: dict[int, int] = {}  # partition -> next offset after the last record
        # commit="auto": the record in hand (not processed yet), and what was processed
        self._in_hand: tuple[_Generation, int, int] | None = None
        self._processed: dict[int, int] = {}
        self._processed_in: _Generation | None = None
        self._committed: dict[int, int] = {}
        self._committer: asyncio.Task[None] | None = None
        self._records: AsyncGenerator[Record, None] | None = None
        self._response: httpx.Response | None = None
        self._closed = False

    def __aiter__(self) -> AsyncConsumer:
        return self

    async def __anext__(self) -> Record:
        if self._closed:
            raise StopAsyncIteration
        if self._records is None:
            self._records = self._run()
        return await self._records.__anext__()

    async def close(self, *, processed_last: bool = False) -> None:
        """End the stream (a group member leaves when its connection closes). A task waiting
        in `anext(consumer)` meanwhile gets StopAsyncIteration.

        With commit="auto", first commits what was processed; `processed_last` counts the
        record last handed out as processed too (leaving `async with` without an exception
        does).
        """
        if self._closed:
            return
        self._closed = True
        if self._committer is not None:
            self._committer.cancel()
        if processed_last:
            self._moved_past()
        if self._auto_commits:
            await self._commit_processed()
        if self._response is not None:
            await self._response.aclose()
        if self._records is not None and not getattr(self._records, "ag_running", False):
            await self._records.aclose()

    async def close_on_exit(self, clean: bool) -> None:
        """Leaving `async with` without an exception: the record in hand was processed."""
        await self.close(processed_last=clean)

    async def commit(
        self, records: Iterable[Record] | None = None, *, offsets: Mapping[int, int] | None = None
    ) -> None:
        """Commit the group's position: after `records` (each partition's last record), or
        explicit `offsets` ({partition: next offset to read}), or by default everything this
        consumer has handed out since the latest assignment.

        Raises FencedGeneration when a rebalance happened since (those records go to the
        partition's new owner, which starts at the last successful commit).
        """
        if self.group is None:
            raise RuntimeError("commit() needs a consumer in a group")
        if self.assignment is None:
            raise RuntimeError("no assignment yet: iterate the consumer first")
        positions: dict[int, int] = {}
        if offsets is not None:
            positions.update(offsets)
        elif records is not None:
            for record in records:
                positions[record.partition] = max(
                    positions.get(record.partition, 0), record.next_offset
                )
        else:
            positions = dict(self._delivered)
        if not positions:
            return
        await self.client.commit_offsets(
            self.group,
            self.assignment.member_id,
            self.assignment.generation,
            self.topic,
            positions,
        )

    # -- commit="auto" ------------------------------------------------------------------------

    @property
    def _auto_commits(self) -> bool:
        return self.group is not None and self.commit_mode == "auto"

    def _handing_out(self, record: Record) -> None:
        if self._auto_commits and self.assignment is not None:
            generation = _Generation(self.assignment.member_id, self.assignment.generation)
            self._in_hand = (generation, record.partition, record.next_offset)
            if self._committer is None:
                self._committer = asyncio.get_running_loop().create_task(self._commit_every())

    def _moved_past(self) -> None:
        """The record in hand is processed (the application asked for the next one)."""
        if self._in_hand is None:
            return
        generation, partition, next_offset = self._in_hand
        self._in_hand = None
        if generation != self._processed_in:  # positions of a fenced generation are no use
            self._processed, self._committed = {}, {}
            self._processed_in = generation
        self._processed[partition] = next_offset

    async def _commit_every(self) -> None:
        while True:
            await asyncio.sleep(self.auto_commit_interval_ms / 1000)
            await self._commit_processed()

    async def _commit_processed(self) -> None:
        """Commit what was processed and not committed yet; a refusal (a rebalance, a member
        that is gone) or a failure leaves those records to be delivered again."""
        generation = self._processed_in
        positions = {p: o for p, o in self._processed.items() if self._committed.get(p) != o}
        if generation is None or not positions:
            return
        assert self.group is not None
        try:
            await self.client.commit_offsets(
                self.group, generation.member_id, generation.generation, self.topic, positions
            )
        except (FencedGeneration, NotPartitionOwner, UnknownMember) as exc:
            log.debug("auto-commit of %s refused: %s", positions, exc)
            if generation == self._processed_in:  # it never will be accepted: stop trying
                self._processed = {}
            return
        except LogwayError as exc:
            log.debug("auto-commit of %s failed: %s", positions, exc)
            return
        if generation == self._processed_in:
            self._committed.update(positions)

    # -- the stream ------------------------------------------------------------------------

    def _params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.start is not None:
            params["from"] = str(self.start)
        if self.partitions is not None:
            params["partitions"] = ",".join(map(str, self.partitions))
        if self.group is not None:
            params["group"] = self.group  # the gateway never commits for this client
        return params

    def _delay_s(self, failures: int) -> float:
        base = self._reconnect_delay_ms or self.server_retry_ms or DEFAULT_RECONNECT_DELAY_MS
        return min(self._max_reconnect_delay_ms, base * 2.0 ** max(0, failures - 1)) / 1000

    async def _run(self) -> AsyncGenerator[Record, None]:
        try:
            async with aclosing(self._reconnecting()) as records:
                async for record in records:
                    self._handing_out(record)
                    yield record
                    self._moved_past()
        finally:
            if self._committer is not None and not self._closed:  # an error ended the stream
                self._committer.cancel()

    async def _reconnecting(self) -> AsyncGenerator[Record, None]:
        failures = 0
        first = True
        while not self._closed:
            if not first:
                self.reconnects += 1
            first = False
            try:
                async for record in self._connect():
                    failures = 0
                    yield record
                failures = 0  # a clean end (the gateway restarting): reconnect and resume
            except LogwayError as exc:
                if self._closed:
                    return
                # a member that expired, or whose gateway is closing, joins again
                rejoin = self.group is not None and isinstance(exc, UnknownMember)
                if not (exc.retriable or rejoin):
                    raise
                failures += 1
                if (
                    self._max_reconnect_attempts is not None
                    and failures > self._max_reconnect_attempts
                ):
                    raise
            await asyncio.sleep(self._delay_s(failures))

    async def _connect(self) -> AsyncGenerator[Record, None]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.cursor and self.group is None:  # a member restarts from the group's commits
            headers["Last-Event-ID"] = self.cursor
        timeout = httpx.Timeout(self.client.timeout_s, read=self.client.stream_read_timeout_s)
        path = f"/v1/topics/{path_segment(self.topic)}/events"
        try:
            async with self.client.http.stream(
                "GET", path, params=self._params(), headers=headers, timeout=timeout
            ) as response:
                self._response = response
                if response.status_code != 200:
                    raise_for_problem(response, await response.aread())
                    raise ProtocolViolation(f"unexpected status {response.status_code}")
                async for sse in EventSource(response).aiter_sse():
                    if sse.retry is not None:
                        self.server_retry_ms = float(sse.retry)
                    if sse.event == "record":
                        record = Record.from_json(self._data(sse.data))
                        self.cursor = sse.id or self.cursor
                        self._delivered[record.partition] = record.next_offset
                        yield record
                    elif sse.event == "gap":
                        self.cursor = sse.id or self.cursor
                    elif sse.event == "assignment":
                        assignment = Assignment.from_json(self._data(sse.data))
                        # an empty assignment has no `id:`; httpx-sse repeats the last one
                        await self._assigned(assignment, sse.id if assignment.partitions else None)
                    elif sse.event == "expired" and self.on_expired is not None:
                        await _call(self.on_expired)
                    elif sse.event == "error":
                        problem = self._data(sse.data)
                        status = problem.get("status") if isinstance(problem, dict) else None
                        raise error_from_problem(
                            status if isinstance(status, int) else 500,
                            problem if isinstance(problem, dict) else {},
                        )
        except (httpx.TransportError, httpx.StreamClosed) as exc:
            raise ConnectionFailed(f"stream of {self.topic!r}: {exc!r}") from exc
        except SSEError as exc:
            raise ProtocolViolation(str(exc)) from exc
        finally:
            self._response = None

    @staticmethod
    def _data(data: str) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ProtocolViolation(f"an SSE event whose data is not JSON: {exc}") from None

    async def _assigned(self, assignment: Assignment, cursor: str | None) -> None:
        self.assignment = assignment
        self.cursor = cursor or None
        # a position handed out before may belong to a partition that restarted (a seek)
        self._delivered = {}
        if self.on_assignment is not None:
            await _call(self.on_assignment, assignment)


async def _call(callback: Callable[..., Awaitable[None] | None], *args: Any) -> None:
    """Run a user callback, sync or async."""
    result = callback(*args)
    if inspect.isawaitable(result):
        await result
