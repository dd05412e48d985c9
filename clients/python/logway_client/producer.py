"""The batching producer: `send()` queues a record and returns a future of where it landed.

Per topic, records wait up to `linger_ms` for company, and a batch leaves as soon as it
holds `max_batch_records` records or `max_batch_bytes` of encoded JSON. One batch per topic
is in flight at a time, so records of a topic are written in the order they were sent,
also across retries (Kafka's max.in.flight=1).

Retries are safe: a batch is encoded once and carries one Idempotency-Key, the same on every
attempt, so when an attempt was written but its answer was lost (a reset connection, a
timeout, a restart), the gateway answers the retry with the first result and writes nothing
twice. Retried: no answer at all, 5xx answers other than 507 and 429s, with exponential backoff
(`retry_backoff_ms` doubling up to `max_backoff_ms`, with jitter, at least any Retry-After),
until `delivery_timeout_ms` since the batch's first attempt. Anything else (a 4xx, a full
disk) fails the batch's futures at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from logway_client._closing import AsyncClosesOnExit
from logway_client.client import AsyncLogwayClient, records_body
from logway_client.errors import LogwayError
from logway_client.types import NewRecord, RecordMetadata


@dataclass(slots=True)
class _Pending:
    encoded: bytes
    future: asyncio.Future[RecordMetadata]
    queued_at: float  # loop time; a record lingers at most linger_ms from here


@dataclass(slots=True)
class _TopicQueue:
    pending: list[_Pending] = field(default_factory=list)
    pending_bytes: int = 0
    in_flight: list[asyncio.Future[RecordMetadata]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    sender: asyncio.Task[None] | None = None


class AsyncProducer(AsyncClosesOnExit):
    """Batches records per topic and delivers them with safe retries.

    `producer.send(topic, value, key=…)` queues a record and returns a future of its
    RecordMetadata: `await` it for the acknowledgement, or keep many and gather them. `flush()` waits for
    everything sent so far; `close()` flushes and stops. Use as `async with`.
    """

    def __init__(
        self,
        client: AsyncLogwayClient,
        *,
        linger_ms: float = 5.0,
        max_batch_records: int = 500,
        max_batch_bytes: int = 1024 * 1024,
        retry_backoff_ms: float = 100.0,
        max_backoff_ms: float = 5000.0,
        delivery_timeout_ms: float = 120_000.0,
    ) -> None:
        if max_batch_records < 1 or max_batch_bytes < 1:
            raise ValueError("max_batch_records and max_batch_bytes must be positive")
        self.client = client
        self.linger_s = linger_ms / 1000
        self.max_batch_records = max_batch_records
        self.max_batch_bytes = max_batch_bytes
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.max_backoff_s = max_backoff_ms / 1000
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.attempts = 0  # requests sent, retries included (for tests and metrics)
        self._topics: dict[str, _TopicQueue] = {}
        self._flushing = 0
        self._closed = False

    def send(
        self,
        topic: str,
        value: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; the future resolves to where it was written (or its error)."""
        return self.send_record(topic, NewRecord(value, key, headers or {}, partition))

    def send_record(self, topic: str, record: NewRecord) -> asyncio.Future[RecordMetadata]:
        """`send` for a ready NewRecord; never suspends, so calls queue in call order."""
        if self._closed:
            raise RuntimeError("the producer is closed")
        loop = asyncio.get_running_loop()
        queue = self._topics.get(topic)
        if queue is None:
            queue = self._topics[topic] = _TopicQueue()
        if queue.sender is None or queue.sender.done():
            queue.sender = loop.create_task(self._send_loop(topic, queue))
        future: asyncio.Future[RecordMetadata] = loop.create_future()
        encoded = record.encode()
        queue.pending.append(_Pending(encoded, future, loop.time()))
        queue.pending_bytes += len(encoded) + 1
        queue.arrived.set()
        return future

    async def flush(self) -> None:
        """Send everything queued now, without lingering, and wait for every answer.

        Errors stay in the records' futures; flush itself does not raise them.
        """
        futures = [p.future for q in self._topics.values() for p in q.pending]
        futures += [f for q in self._topics.values() for f in q.in_flight]
        self._flushing += 1
        try:
            for queue in self._topics.values():
                queue.arrived.set()
            if futures:
                await asyncio.wait(futures)
        finally:
            self._flushing -= 1

    async def close(self) -> None:
        """Flush, then stop the senders. Sending afterwards is an error."""
        if self._closed:
            return
        await self.flush()
        self._closed = True
        for queue in self._topics.values():
            if queue.sender is not None:
                queue.sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await queue.sender

    # -- sending ---------------------------------------------------------------------------

    def _full(self, queue: _TopicQueue) -> bool:
        return (
            len(queue.pending) >= self.max_batch_records
            or queue.pending_bytes >= self.max_batch_bytes
        )

    async def _send_loop(self, topic: str, queue: _TopicQueue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await queue.arrived.wait()
            queue.arrived.clear()
            if not queue.pending:
                continue
            # linger: wait for more records until the batch is full, flushed, or old enough
            while not self._full(queue) and not self._flushing and not self._closed:
                remaining = queue.pending[0].queued_at + self.linger_s - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.arrived.wait(), remaining)
                queue.arrived.clear()
            batch = self._take(queue)
            if queue.pending:
                queue.arrived.set()
            queue.in_flight = [p.future for p in batch]
            try:
                await self._deliver(topic, batch)
            except Exception as exc:  # a bug must not leave futures (and flush) hanging
                self._fail(batch, exc)
            queue.in_flight = []

    def _take(self, queue: _TopicQueue) -> list[_Pending]:
        """The oldest records that fit one batch (at least one, however large)."""
        count, size = 0, 0
        for pending in queue.pending:
            grown = size + len(pending.encoded) + 1
            if count and (count == self.max_batch_records or grown > self.max_batch_bytes):
                break
            count, size = count + 1, grown
        batch, queue.pending = queue.pending[:count], queue.pending[count:]
        queue.pending_bytes -= size
        return batch

    async def _deliver(self, topic: str, batch: list[_Pending]) -> None:
        body = records_body(p.encoded for p in batch)
        key = uuid.uuid4().hex
        deadline = time.monotonic() + self.delivery_timeout_s
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            try:
                offsets = await self.client.produce_encoded(
                    topic, body, len(batch), idempotency_key=key
                )
            except LogwayError as exc:
                delay = self._backoff_s(attempt, exc.retry_after_s)
                if exc.retriable and time.monotonic() + delay < deadline:
                    await asyncio.sleep(delay)
                    continue
                self._fail(batch, exc)
                return
            for pending, metadata in zip(batch, offsets, strict=True):
                if not pending.future.done():
                    pending.future.set_result(metadata)
            return

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)

    def _backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        delay = min(self.max_backoff_s, self.retry_backoff_s * 2.0 ** (attempt - 1))
        delay *= random.uniform(0.8, 1.2)
        # Jitter above Retry-After too: producers refused together must not all come back at once.
        return max(delay, (retry_after_s or 0.0) * random.uniform(1.0, 1.2))
