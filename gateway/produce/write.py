"""Writing a validated produce request: placement, one append per partition, the answer.

Every record is parsed, validated and placed before the first append, so bad input never
changes the log; the appends of all partitions are queued before any is awaited, and a
request that was cancelled (the client went away) still finishes what it queued.

A request that spans several partitions is several appends, each atomic; no backend here
commits appends to different partitions as one. With an Idempotency-Key the request's
produce tag travels with every append, and placement depends only on the request and its
key (keyless records start their round-robin at a partition derived from the key, not at
the topic's counter), so a retry places every record exactly where the first attempt did:
partitions that already hold the tag write nothing and give their first result, the
others are written, and the answer is the one the first attempt would have given. Before
any append, the partitions holding the key are looked up over the whole topic: a key
reused for another request (422) or whose first records retention deleted (409) writes
nothing, and an answer rebuilt wholly from the tags is marked replayed. Without a key, a
storage failure on one partition can leave the others written.
"""

from __future__ import annotations

import asyncio

import orjson

from gateway.context import Context
from gateway.faults import fault_point
from gateway.http.problems import Problem
from gateway.produce.idempotency import Written, ensure_kept
from gateway.produce.parse import ProduceBatch
from storage import errors
from storage.types import AppendResult, NewRecord, ProduceTag, TopicConfig, TopicInfo

_NO_OFFSETS = b'{"offsets":[]}'


async def _ensure_topic(ctx: Context, topic: str) -> TopicInfo:
    """Auto-create (default partitions and config) only once the request proved valid."""
    try:
        if await ctx.backend.create_topic(topic, ctx.settings.default_partitions, TopicConfig()):
            ctx.chunks.forget_topic(topic)
    except errors.TopicExists as exc:  # created meanwhile with other settings: use it
        return exc.existing
    return await ctx.backend.get_topic(topic)


def _first_keyless(
    ctx: Context, topic: str, partitions: int, count: int, tag: ProduceTag | None
) -> int:
    """Where the round-robin of a request's keyless records starts: the topic's counter,
    or with an Idempotency-Key a partition derived from the key, the same on every retry."""
    if tag is None:
        return ctx.partitioner.round_robin(topic, partitions, count)
    return int.from_bytes(tag.key[:8], "big") % partitions


def _place(
    ctx: Context, topic: str, partitions: int, batch: ProduceBatch, tag: ProduceTag | None
) -> tuple[dict[int, list[NewRecord]], list[int]]:
    """Partition -> its records in request order, and each record's partition."""
    groups: dict[int, list[NewRecord]] = {}
    placed: list[int] = []
    named = batch.partitions
    partitioner = ctx.partitioner
    keyless = 0
    first = None if tag is None else _first_keyless(ctx, topic, partitions, 0, tag)
    for i, record in enumerate(batch.records):
        partition = named[i] if named is not None else None
        if partition is None:
            if record.key is not None:
                partition = partitioner.partition_for_key(record.key, partitions)
            elif first is None:
                partition = partitioner.round_robin(topic, partitions, 1)
            else:
                partition = (first + keyless) % partitions
                keyless += 1
        elif partition >= partitions:
            raise Problem(
                "unknown-partition",
                f"/records/{i}/partition: topic {topic!r} has partitions 0..{partitions - 1}",
                topic=topic,
                partition=partition,
            )
        placed.append(partition)
        records = groups.get(partition)
        if records is None:
            groups[partition] = [record]
        else:
            records.append(record)
    return groups, placed


def _spread(
    ctx: Context,
    topic: str,
    partitions: int,
    records: list[NewRecord],
    tag: ProduceTag | None,
) -> tuple[dict[int, list[NewRecord]], int]:
    """Round-robin placement of keyless records in bulk: record i goes to partition
    (first + i) % partitions; returns the groups and `first`."""
    first = _first_keyless(ctx, topic, partitions, len(records), tag)
    if partitions == 1:
        return {0: records}, 0
    groups = {(first + j) % partitions: records[j::partitions] for j in range(partitions)}
    return {p: batch for p, batch in groups.items() if batch}, first


async def _append_all(
    ctx: Context, topic: str, groups: dict[int, list[NewRecord]], tag: ProduceTag | None
) -> dict[int, AppendResult]:
    """One append per partition, all queued before any is awaited, so a cancelled request
    (the client went away) cannot stop a batch it queued; never cut short. Raises the
    first failure once every append has ended (the module docstring says what a retry
    with the same tag then does)."""
    queued: list[asyncio.Future[AppendResult] | BaseException] = []
    for p, batch in groups.items():
        try:
            queued.append(ctx.backend.start_append(topic, p, batch, tag))
        except Exception as exc:  # raised at once (unknown partition): collect it like the rest
            queued.append(exc)
    outcomes: list[AppendResult | BaseException] = []
    for item in queued:
        if isinstance(item, BaseException):
            outcomes.append(item)
            continue
        try:
            outcomes.append(await item)
        except Exception as exc:
            outcomes.append(exc)
    results: dict[int, AppendResult] = {}
    for partition, outcome in zip(groups, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            raise outcome
        results[partition] = outcome
    return results


async def write_batch(
    ctx: Context,
    topic: str,
    info: TopicInfo | None,
    batch: ProduceBatch,
    tag: ProduceTag | None = None,
) -> Written:
    """Append the batch (creating the topic first when `info` is None) and return the
    answer's JSON body: each record's partition, offset and timestamp, in request order.
    `tag` (an Idempotency-Key's) goes with every append (the module docstring says why)."""
    # Read again now that the body is in: a topic deleted or re-created meanwhile is seen,
    # and nothing below yields before every batch is queued.
    if info is not None:
        try:
            info = await ctx.backend.get_topic(topic)
        except errors.TopicNotFound:
            if not ctx.settings.auto_create_topics:
                raise
            info = None
    if info is None:
        info = await _ensure_topic(ctx, topic)
    held: dict[int, AppendResult] = {}
    if tag is not None:  # answered from memory (Backend.tagged_appends): no yield here
        held = await ctx.backend.tagged_appends(topic, tag)  # a reused key: 422
        await ensure_kept(ctx.backend, topic, {p: r.base_offset for p, r in held.items()})
    records = batch.records
    if not records:
        return Written(_NO_OFFSETS, False)
    partitions = info.partitions
    offsets: list[dict[str, int]]
    if batch.partitions is None and not batch.keyed:
        groups, first = _spread(ctx, topic, partitions, records, tag)
        results = await _append_all(ctx, topic, groups, tag)
        fault_point("after-append")
        offsets = [{}] * len(records)
        for j in range(min(partitions, len(records))):  # record i sits in slot i % partitions
            partition = (first + j) % partitions
            result = results[partition]
            base, timestamp = result.base_offset, result.timestamp_ms
            offsets[j::partitions] = [
                {"partition": partition, "offset": base + n, "timestamp": timestamp}
                for n in range(len(groups[partition]))
            ]
    else:
        groups, placed = _place(ctx, topic, partitions, batch, tag)
        results = await _append_all(ctx, topic, groups, tag)
        fault_point("after-append")
        next_offset = {p: result.base_offset for p, result in results.items()}
        offsets = []
        for partition in placed:
            offset = next_offset[partition]
            next_offset[partition] = offset + 1
            offsets.append(
                {
                    "partition": partition,
                    "offset": offset,
                    "timestamp": results[partition].timestamp_ms,
                }
            )
    ctx.metrics.produced(topic, records)
    return Written(orjson.dumps({"offsets": offsets}), bool(held) and results.keys() <= held.keys())
