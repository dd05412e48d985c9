"""Writing a validated produce request: placement, one append per partition, the answer.

Every record is parsed, validated and placed before the first append, so bad input never
changes the log; the appends of all partitions are queued before any is awaited, and a
request that was cancelled (the client went away) still finishes what it queued.
"""

from __future__ import annotations

import asyncio

import orjson

from gateway.context import Context
from gateway.http.problems import Problem
from gateway.produce.parse import ProduceBatch
from storage import errors
from storage.types import AppendResult, NewRecord, TopicConfig, TopicInfo

_NO_OFFSETS = b'{"offsets":[]}'


async def _ensure_topic(ctx: Context, topic: str) -> TopicInfo:
    """Auto-create (default partitions and config) only once the request proved valid."""
    try:
        if await ctx.backend.create_topic(topic, ctx.settings.default_partitions, TopicConfig()):
            ctx.chunks.forget_topic(topic)
    except errors.TopicExists as exc:  # created meanwhile with other settings: use it
        return exc.existing
    return await ctx.backend.get_topic(topic)


def _place(
    ctx: Context, topic: str, partitions: int, batch: ProduceBatch
) -> tuple[dict[int, list[NewRecord]], list[int]]:
    """Partition -> its records in request order, and each record's partition."""
    groups: dict[int, list[NewRecord]] = {}
    placed: list[int] = []
    named = batch.partitions
    place = ctx.partitioner.partition
    for i, record in enumerate(batch.records):
        partition = named[i] if named is not None else None
        if partition is None:
            partition = place(topic, partitions, record.key)
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
    ctx: Context, topic: str, partitions: int, records: list[NewRecord]
) -> tuple[dict[int, list[NewRecord]], int]:
    """Round-robin placement of keyless records in bulk: record i goes to partition
    (first + i) % partitions; returns the groups and `first`."""
    first = ctx.partitioner.round_robin(topic, partitions, len(records))
    if partitions == 1:
        return {0: records}, 0
    groups = {(first + j) % partitions: records[j::partitions] for j in range(partitions)}
    return {p: batch for p, batch in groups.items() if batch}, first


async def _append_all(
    ctx: Context, topic: str, groups: dict[int, list[NewRecord]]
) -> dict[int, AppendResult]:
    """One append per partition, all queued before any is awaited, so a cancelled request
    (the client went away) cannot stop a batch it queued; never cut short."""
    queued: list[asyncio.Future[AppendResult] | BaseException] = []
    for p, batch in groups.items():
        try:
            queued.append(ctx.backend.start_append(topic, p, batch))
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
    ctx: Context, topic: str, info: TopicInfo | None, batch: ProduceBatch
) -> bytes:
    """Append the batch (creating the topic first when `info` is None) and return the
    answer's JSON body: each record's partition, offset and timestamp, in request order."""
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
    records = batch.records
    if not records:
        return _NO_OFFSETS
    partitions = info.partitions
    offsets: list[dict[str, int]]
    if batch.partitions is None and not batch.keyed:
        groups, first = _spread(ctx, topic, partitions, records)
        results = await _append_all(ctx, topic, groups)
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
        groups, placed = _place(ctx, topic, partitions, batch)
        results = await _append_all(ctx, topic, groups)
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
    return orjson.dumps({"offsets": offsets})
