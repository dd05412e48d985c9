"""Fetch: whole batches from each partition's fetch offset, long-polling up to max_wait_ms
until min_bytes are there.

Batches come from `Backend.read_batches` and are converted through the broker's
`BatchCache` (once per stored batch, whoever reads it). As a Kafka broker does, a
partition's answer starts with the batch that holds the fetch offset (the client skips
the records before it), stays within partition_max_bytes and the request's max_bytes, but
always carries one whole batch when it is the first data of the answer, so a batch larger
than the limits cannot stall a consumer. No fetch sessions (KIP-227): the answer's session
id is 0, which tells clients to send full requests; there are no transactions, so the last
stable offset is the high watermark.
"""

from __future__ import annotations

import asyncio
import time

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode, error_code_of
from storage import errors


def _partition(index: int, error: ErrorCode) -> Body:
    return {"partition_index": index, "error_code": error, "high_watermark": -1, "records": b""}


async def _read(
    broker: Broker, topic: str, wanted: Body, budget: int, first: bool
) -> tuple[Body, int]:
    """One partition's answer and the bytes of records in it."""
    index = wanted["partition"]
    offset = wanted["fetch_offset"]
    backend = broker.ctx.backend
    try:
        info = await backend.partition_info(topic, index)
        answer: Body = {
            "partition_index": index,
            "error_code": ErrorCode.NONE,
            "high_watermark": info.end_offset,
            "last_stable_offset": info.end_offset,
            "log_start_offset": info.log_start_offset,
            "records": b"",
        }
        if not info.log_start_offset <= offset <= info.end_offset:
            answer["error_code"] = ErrorCode.OFFSET_OUT_OF_RANGE
            return answer, 0
        limit = min(wanted["partition_max_bytes"], budget)
        if offset == info.end_offset or (limit <= 0 and not first):
            return answer, 0
        stored = await backend.read_batches(topic, index, offset, max(limit, 1))
    except errors.StorageError as exc:
        return _partition(index, error_code_of(exc)), 0
    batches = broker.batches.kafka_batches(topic, index, stored)
    size = 0
    kept = 0
    for batch in batches:
        if size + len(batch) > limit and (kept or not first):
            break
        size += len(batch)
        kept += 1
    answer["records"] = batches[:kept] if kept else b""
    return answer, size


async def _read_all(broker: Broker, session: Session, request: Request) -> tuple[list[Body], int]:
    body = request.body
    budget = body["max_bytes"]
    total = 0
    responses = []
    for topic in body["topics"]:
        name = topic["topic"]
        partitions = []
        allowed = broker.allows(session, "consume", "topic", name)
        for wanted in topic["partitions"]:
            if not allowed:
                partitions.append(
                    _partition(wanted["partition"], ErrorCode.TOPIC_AUTHORIZATION_FAILED)
                )
                continue
            answer, size = await _read(broker, name, wanted, budget - total, first=total == 0)
            partitions.append(answer)
            total += size
        responses.append({"topic": name, "partitions": partitions})
    return responses, total


async def _wait(broker: Broker, responses: list[Body], timeout_s: float) -> None:
    """Until any fetched partition grows past its high watermark, or the timeout."""
    backend = broker.ctx.backend
    waits = [
        asyncio.ensure_future(
            backend.wait_for_records(
                topic["topic"],
                {p["partition_index"]: p["high_watermark"] for p in topic["partitions"]},
                timeout_s,
            )
        )
        for topic in responses
        if topic["partitions"]
    ]
    if not waits:
        await asyncio.sleep(timeout_s)
        return
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    if body["session_id"] != 0 or body["session_epoch"] > 0:
        return refuse(request, ErrorCode.FETCH_SESSION_ID_NOT_FOUND, None)
    deadline = time.monotonic() + max(0, body["max_wait_ms"]) / 1000
    while True:
        responses, total = await _read_all(broker, session, request)
        remaining_s = deadline - time.monotonic()
        has_error = any(p["error_code"] for topic in responses for p in topic["partitions"])
        if total >= body["min_bytes"] or has_error or remaining_s <= 0:
            return {"error_code": ErrorCode.NONE, "session_id": 0, "responses": responses}
        await _wait(broker, responses, remaining_s)


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {
        "error_code": error,
        "responses": [
            {
                "topic": topic["topic"],
                "partitions": [_partition(p["partition"], error) for p in topic["partitions"]],
            }
            for topic in request.body.get("topics", [])
        ],
    }


API = Api(ApiKey.FETCH, "Fetch", 4, 12, handle, refuse)
