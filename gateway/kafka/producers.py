"""Idempotent producers (KIP-98): producer ids, epochs and sequence numbers, kept in memory.

Per (producer id, topic, partition) the broker remembers the producer's epoch and its last
five batches (first and last sequence, and the append's outcome). A batch is then:

    older epoch than known                    INVALID_PRODUCER_EPOCH
    newer epoch                               accepted if it starts at sequence 0, else
                                              OUT_OF_ORDER_SEQUENCE_NUMBER
    same epoch, same range as a cached batch  a duplicate: answered with that batch's
                                              offsets, nothing written again
    same epoch, next sequence                 accepted (sequences wrap at 2^31 - 1 to 0)
    same epoch, anything else                 OUT_OF_ORDER_SEQUENCE_NUMBER
    unknown producer on this partition        accepted, whatever its sequence (as Kafka
                                              since KIP-360: state may have expired)

With auth on, a producer id belongs to the principal it was handed to (or, after a
restart, the first that uses it): another principal's batches with that id are refused
(INVALID_PRODUCER_ID_MAPPING), so nobody can fence or confuse someone else's producer.

The state is this process's: after a gateway restart every producer is unknown again, so
a batch in flight at the crash that was written but never acknowledged may be written a
second time when the client retries it (at least once, never lost). Pure apart from the
clock and random bits of new producer ids; entries past `max_entries` are forgotten,
least recently used first.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.kafka.errors import ErrorCode
from storage.types import AppendResult

MAX_SEQUENCE = 0x7FFF_FFFF
CACHED_BATCHES = 5  # what a producer may have in flight per partition (max.in.flight)
MAX_EPOCH = 0x7FFF


class _Batch(NamedTuple):
    first_sequence: int
    last_sequence: int
    outcome: asyncio.Future[AppendResult]


@dataclass(slots=True)
class _Producer:
    epoch: int
    batches: deque[_Batch] = field(default_factory=lambda: deque(maxlen=CACHED_BATCHES))


class Verdict(NamedTuple):
    error: ErrorCode
    duplicate_of: asyncio.Future[AppendResult] | None = None


ACCEPT = Verdict(ErrorCode.NONE)
_Key = tuple[int, str, int]


class ProducerStates:
    """Every idempotent producer this listener has seen, per partition."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[_Key, _Producer] = OrderedDict()
        self._owners: OrderedDict[int, str] = OrderedDict()
        self._last_id = 0

    def __len__(self) -> int:
        return len(self._entries)

    def new_producer_id(self, owner: str | None = None) -> int:
        """A producer id unique across restarts and (very probably) across gateways: the
        clock in ms above 20 random bits, and above the last id handed out. `owner` is the
        principal's identity when auth is on."""
        candidate = (time.time_ns() // 1_000_000) << 20 | random.getrandbits(20)
        self._last_id = max(candidate, self._last_id + 1)
        if owner is not None:
            self.claim(self._last_id, owner)
        return self._last_id

    def claim(self, producer_id: int, owner: str) -> bool:
        """Whether `owner` may use `producer_id`: it is theirs, or nobody's yet (then it
        becomes theirs)."""
        known = self._owners.get(producer_id)
        if known is None:
            self._owners[producer_id] = owner
            while len(self._owners) > self.max_entries:
                self._owners.popitem(last=False)
            return True
        self._owners.move_to_end(producer_id)
        return known == owner

    def check(
        self, producer_id: int, topic: str, partition: int, epoch: int, first: int, last: int
    ) -> Verdict:
        """What to do with a batch of sequences first..last (see the module docstring)."""
        entry = self._entries.get((producer_id, topic, partition))
        if entry is None:
            return ACCEPT
        if epoch < entry.epoch:
            return Verdict(ErrorCode.INVALID_PRODUCER_EPOCH)
        if epoch > entry.epoch:
            return ACCEPT if first == 0 else Verdict(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        for batch in entry.batches:
            if batch.first_sequence == first and batch.last_sequence == last:
                return Verdict(ErrorCode.NONE, batch.outcome)
        if not entry.batches or first == (entry.batches[-1].last_sequence + 1) & MAX_SEQUENCE:
            return ACCEPT
        return Verdict(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)

    def record(
        self,
        producer_id: int,
        topic: str,
        partition: int,
        epoch: int,
        first: int,
        last: int,
        outcome: asyncio.Future[AppendResult],
    ) -> None:
        """Remember an accepted batch (its append started; `outcome` resolves with it)."""
        key = (producer_id, topic, partition)
        entry = self._entries.get(key)
        if entry is None or epoch != entry.epoch:
            entry = self._entries[key] = _Producer(epoch)
        self._entries.move_to_end(key)
        entry.batches.append(_Batch(first, last, outcome))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, producer_id: int, topic: str, partition: int, first: int) -> None:
        """Drop a batch whose append failed, so the producer's retry is accepted."""
        entry = self._entries.get((producer_id, topic, partition))
        if entry is not None and entry.batches and entry.batches[-1].first_sequence == first:
            entry.batches.pop()

    def forget_topic(self, topic: str) -> None:
        """A deleted topic's partitions start again at offset 0: forget their producers."""
        for key in [k for k in self._entries if k[1] == topic]:
            del self._entries[key]
