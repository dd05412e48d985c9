"""Waiting for records without polling: one subscription per partition to its stream's
RePublish subject (headers only, sent after each store), shared by every waiter on that
partition and kept a while after the last one leaves.

A notifier learns its partition's end offset by subscribing first and asking the stream
second, so no append falls in between; each RePublish carries the stored sequence, which
is the new end offset. Notifications sent while the connection was down are lost, so a
reconnect wakes every waiter and starts fresh notifiers; so do a deleted topic and close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from storage.errors import PartitionNotFound, StorageUnavailable, TopicNotFound
from storage.jetstream.api import JetStreamApi, unsubscribe
from storage.jetstream.codec import notify_subject

log = logging.getLogger(__name__)

UNKNOWN_END_OFFSET = -1
# Keep a partition's notification subscription this long after its last waiter left.
NOTIFIER_LINGER_S = 30.0

PartitionKey = tuple[str, int]  # (topic, partition)


@dataclass
class Notifier:
    """One partition's subscription to its stream's RePublish subject, shared by waiters."""

    subscription: Subscription
    end_offset: int
    waiters: dict[asyncio.Future[bool], int] = field(default_factory=dict)
    users: int = 0
    linger: asyncio.TimerHandle | None = None

    def advance(self, end_offset: int) -> None:
        if end_offset <= self.end_offset:
            return
        self.end_offset = end_offset
        for future, position in list(self.waiters.items()):
            if end_offset > position and not future.done():
                future.set_result(True)

    def wake_all(self) -> None:
        for future in self.waiters:
            if not future.done():
                future.set_result(True)


class Notifiers:
    """The notifiers of one connection, by partition.

    `end_offset(topic, partition)` reads a partition's end offset from its stream
    (StorageUnavailable when the stream has no leader); `keep_until_done` holds the
    unsubscribes that nobody awaits.
    """

    def __init__(
        self,
        js: JetStreamApi,
        namespace: str,
        end_offset: Callable[[str, int], Awaitable[int]],
        keep_until_done: Callable[[asyncio.Future[Any]], None],
    ) -> None:
        self._js = js
        self._namespace = namespace
        self._end_offset = end_offset
        self._keep_until_done = keep_until_done
        self._notifiers: dict[PartitionKey, Notifier] = {}
        self._locks: dict[PartitionKey, asyncio.Lock] = {}

    async def wait(self, topic: str, positions: Mapping[int, int], timeout_s: float | None) -> bool:
        """Park one future on the partitions' notifiers (see Backend.wait_for_records)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        acquired: list[tuple[PartitionKey, Notifier]] = []
        try:
            for p, position in positions.items():
                try:
                    notifier = await self._acquire(topic, p)
                except (TopicNotFound, PartitionNotFound):
                    return True
                acquired.append(((topic, p), notifier))
                if notifier.end_offset > position:
                    return True
                notifier.waiters[future] = position
            if self._js.closed:
                return True
            if timeout_s is not None and timeout_s <= 0:
                return False
            try:
                async with asyncio.timeout(timeout_s):
                    return await future
            except TimeoutError:
                return False
        finally:
            for key, notifier in acquired:
                self._release(key, notifier, future)

    def wake_topics(self, matches: Callable[[str], bool]) -> None:
        """Wake the waiters of every topic that `matches` (it was deleted)."""
        for (topic, _), notifier in list(self._notifiers.items()):
            if matches(topic):
                notifier.wake_all()

    def reset(self) -> None:
        """Every known end offset is stale (after a reconnect): wake all waiters and let
        the next ones start fresh notifiers."""
        notifiers = list(self._notifiers.values())
        self._notifiers.clear()
        for notifier in notifiers:
            notifier.wake_all()
            if notifier.users == 0:
                self._unsubscribe_later(notifier)

    def close(self) -> None:
        """Wake every waiter; the connection's close ends the subscriptions."""
        for notifier in self._notifiers.values():
            notifier.wake_all()
            if notifier.linger is not None:
                notifier.linger.cancel()
        self._notifiers.clear()

    async def _acquire(self, topic: str, partition: int) -> Notifier:
        key = (topic, partition)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            notifier = self._notifiers.get(key)
            if notifier is None:
                notifier = await self._start(topic, partition)
                self._notifiers[key] = notifier
            elif notifier.end_offset == UNKNOWN_END_OFFSET:
                await self._learn_end_offset(notifier, topic, partition)
            notifier.users += 1
            if notifier.linger is not None:
                notifier.linger.cancel()
                notifier.linger = None
            return notifier

    async def _start(self, topic: str, partition: int) -> Notifier:
        """Subscribe first, then read the end offset, so no append falls in between: the
        SUB precedes the STREAM.INFO request on this connection, so the server has our
        interest before it answers (no flush is needed, see _learn_end_offset)."""
        holder: list[Notifier] = []

        async def on_stored(msg: Msg) -> None:
            sequence = (msg.headers or {}).get("Nats-Sequence")
            if holder and sequence is not None:
                holder[0].advance(int(sequence))

        subject = notify_subject(self._namespace, topic, partition)
        subscription = await self._js.subscribe(subject, on_stored)
        notifier = Notifier(subscription, UNKNOWN_END_OFFSET)
        holder.append(notifier)
        try:
            await self._learn_end_offset(notifier, topic, partition)
        except BaseException:
            await unsubscribe(subscription)
            raise
        return notifier

    async def _learn_end_offset(self, notifier: Notifier, topic: str, partition: int) -> None:
        """Read the stream's end offset into the notifier. Without a stream leader (an
        election after a node died) it stays unknown: waiters then wake on the next stored
        record or their timeout, and the next waiter tries again.

        Never nc.flush() here: a waiter is cancelled whenever its stream ends or is woken,
        and a flush cancelled (or timed out) before its PONG leaves a cancelled future in
        nats-py's PONG queue; the PONG then kills the client's read loop (InvalidStateError)
        and the connection stays "connected" with no reply to any request."""
        try:
            end_offset = await self._end_offset(topic, partition)
        except StorageUnavailable as exc:
            log.warning("end offset of %s/%s unknown for now: %s", topic, partition, exc)
            return
        notifier.advance(end_offset)

    def _release(self, key: PartitionKey, notifier: Notifier, future: asyncio.Future[bool]) -> None:
        notifier.waiters.pop(future, None)
        notifier.users -= 1
        if notifier.users > 0:
            return
        if self._notifiers.get(key) is not notifier:
            self._unsubscribe_later(notifier)  # replaced after a reconnect
        elif notifier.linger is None and not self._js.closed:
            notifier.linger = asyncio.get_running_loop().call_later(
                NOTIFIER_LINGER_S, self._drop, key, notifier
            )

    def _drop(self, key: PartitionKey, notifier: Notifier) -> None:
        if self._notifiers.get(key) is notifier and notifier.users == 0:
            del self._notifiers[key]
            self._unsubscribe_later(notifier)

    def _unsubscribe_later(self, notifier: Notifier) -> None:
        if notifier.linger is not None:
            notifier.linger.cancel()
            notifier.linger = None
        self._keep_until_done(asyncio.ensure_future(unsubscribe(notifier.subscription)))
