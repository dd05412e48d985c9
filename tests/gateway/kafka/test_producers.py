"""Idempotent producer bookkeeping: Kafka's sequence rules, duplicates and gaps."""

from __future__ import annotations

import asyncio

from gateway.kafka.errors import ErrorCode
from gateway.kafka.producers import MAX_SEQUENCE, ProducerStates
from storage.types import AppendResult


async def test_sequences_epochs_and_duplicates() -> None:
    states = ProducerStates()
    loop = asyncio.get_running_loop()
    first: asyncio.Future[AppendResult] = loop.create_future()
    assert states.check(9, "t", 0, 0, 0, 4).error is ErrorCode.NONE
    states.record(9, "t", 0, 0, 0, 4, first)
    # the same batch again is a duplicate answered by the first append
    assert states.check(9, "t", 0, 0, 0, 4).duplicate_of is first
    # a gap, a replay that does not match a cached batch, an old epoch
    assert states.check(9, "t", 0, 0, 6, 7).error is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert states.check(9, "t", 0, 0, 0, 3).error is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert states.check(9, "t", 0, 0, 5, 9) == (ErrorCode.NONE, None)
    states.record(9, "t", 0, 1, 0, 0, loop.create_future())
    assert states.check(9, "t", 0, 0, 1, 1).error is ErrorCode.INVALID_PRODUCER_EPOCH
    # a new epoch must start at 0; other partitions and producers are independent
    assert states.check(9, "t", 0, 2, 3, 3).error is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert states.check(9, "t", 0, 2, 0, 3).error is ErrorCode.NONE
    assert states.check(9, "t", 1, 0, 77, 80).error is ErrorCode.NONE  # unknown: accepted
    assert states.check(10, "t", 0, 0, 50, 51).error is ErrorCode.NONE


async def test_only_five_batches_are_remembered_and_sequences_wrap() -> None:
    states = ProducerStates()
    loop = asyncio.get_running_loop()
    start = MAX_SEQUENCE - 2
    states.record(1, "t", 0, 0, start, start, loop.create_future())
    for i in range(1, 6):
        first = (start + i) & MAX_SEQUENCE
        assert states.check(1, "t", 0, 0, first, first).error is ErrorCode.NONE
        states.record(1, "t", 0, 0, first, first, loop.create_future())
    assert states.check(1, "t", 0, 0, start, start).error is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert states.check(1, "t", 0, 0, 3, 3).error is ErrorCode.NONE  # 2 was last: wrapped


async def test_a_failed_append_is_forgotten_and_entries_are_bounded() -> None:
    states = ProducerStates(max_entries=2)
    loop = asyncio.get_running_loop()
    states.record(1, "t", 0, 0, 0, 0, loop.create_future())
    states.record(1, "t", 0, 0, 1, 1, loop.create_future())
    states.forget(1, "t", 0, 1)
    assert states.check(1, "t", 0, 0, 1, 1) == (ErrorCode.NONE, None)
    states.record(2, "t", 0, 0, 0, 0, loop.create_future())
    states.record(3, "t", 0, 0, 0, 0, loop.create_future())
    assert len(states) == 2
    states.forget_topic("t")
    assert len(states) == 0
    ids = {states.new_producer_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert min(ids) > 0
    assert max(ids) < 2**63
