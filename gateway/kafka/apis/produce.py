"""Produce: each partition's record batch checked, decoded and appended as one stored batch.

Every batch of the request is checked and its append started before any is awaited (as
HTTP produce does), so partitions share the log's group commit; the answer is `Later`, so
a client's next produce request (librdkafka keeps up to five in flight) is read and
queued while this one's fsync runs, and they share it too. The answer comes once
each append is durable under the server's fsync policy, whatever `acks` says (there are
no followers to wait for); acks=0 gets no answer at all, as Kafka does. Idempotent
producers' batches go through `gateway.kafka.producers` first: a retried batch is answered
with its first write's offsets, a gap in sequence numbers is refused. A topic with a schema
(gateway.schemas) checks Kafka records as it checks HTTP ones and stamps them with the
version; a batch with a record that does not match is INVALID_RECORD, its message the
first violation (pointers are /records/<index in the batch>/value...), nothing written.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.http.problems import Problem
from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Later, Request, Session
from gateway.kafka.errors import ErrorCode, error_code_of
from gateway.kafka.records import InvalidBatch, ProducedBatch, decode_produced
from gateway.schemas.registry import Compiled, enforce
from storage import errors
from storage.types import AppendResult, NewRecord, TopicInfo


@dataclass(slots=True)
class _Outcome:
    """One partition's part of the answer: an error, or an append to wait for."""

    topic: str
    partition: int
    error: ErrorCode = ErrorCode.NONE
    message: str | None = None
    append: asyncio.Future[AppendResult] | None = None
    batch: ProducedBatch | None = None
    duplicate: bool = False  # answered with the first write's offsets


def _too_large(records: list[NewRecord], max_record_bytes: int) -> bool:
    return any(
        len(r.value) + len(r.key or b"") + sum(len(n) + len(v) for n, v in r.headers)
        > max_record_bytes
        for r in records
    )


def _start(
    broker: Broker,
    session: Session,
    info: TopicInfo,
    schema: Compiled | None,
    partition: int,
    data: object,
) -> _Outcome:
    """Check one partition's batch and start its append (no await: the order of a
    producer's batches is the order their appends are queued in)."""
    outcome = _Outcome(info.name, partition)
    if not 0 <= partition < info.partitions:
        outcome.error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        return outcome
    if data is None:
        outcome.error, outcome.message = ErrorCode.INVALID_RECORD, "no record batch"
        return outcome
    settings = broker.ctx.settings
    try:
        batch = decode_produced(data, settings.max_body_bytes)  # type: ignore[arg-type]
    except InvalidBatch as exc:
        outcome.error, outcome.message = exc.error_code, str(exc)
        return outcome
    if _too_large(batch.records, settings.max_record_bytes):
        outcome.error = ErrorCode.MESSAGE_TOO_LARGE
        outcome.message = f"a record is larger than {settings.max_record_bytes} bytes"
        return outcome
    records = batch.records
    if schema is not None:
        try:
            records = enforce(schema, info.name, records, "/records/")
        except Problem as problem:
            outcome.error, outcome.message = ErrorCode.INVALID_RECORD, problem.detail
            return outcome
    outcome.batch = batch
    producers = broker.producers
    idempotent = batch.producer_id >= 0
    sequence = (
        batch.producer_id,
        info.name,
        partition,
        batch.producer_epoch,
        batch.base_sequence,
        batch.last_sequence,
    )
    principal = session.principal
    if (
        idempotent
        and principal is not None
        and not producers.claim(batch.producer_id, principal.identity)
    ):
        outcome.error = ErrorCode.INVALID_PRODUCER_ID_MAPPING
        outcome.message = "this producer id belongs to another principal"
        return outcome
    if idempotent:
        verdict = producers.check(*sequence)
        if verdict.error:
            outcome.error = verdict.error
            return outcome
        if verdict.duplicate_of is not None:
            outcome.append, outcome.duplicate = verdict.duplicate_of, True
            return outcome
    try:
        outcome.append = broker.ctx.backend.start_append(info.name, partition, records)
    except errors.StorageError as exc:
        outcome.error, outcome.message = error_code_of(exc), str(exc)
        return outcome
    if idempotent:
        producers.record(*sequence, outcome.append)
    return outcome


async def _finish(broker: Broker, outcome: _Outcome) -> Body:
    answer: Body = {"index": outcome.partition, "base_offset": -1}
    if outcome.append is not None:
        try:
            result = await asyncio.shield(outcome.append)
        except errors.StorageError as exc:
            outcome.error, outcome.message = error_code_of(exc), str(exc)
            batch = outcome.batch
            if batch is not None and batch.producer_id >= 0:
                broker.producers.forget(
                    batch.producer_id, outcome.topic, outcome.partition, batch.base_sequence
                )
        else:
            answer["base_offset"] = result.base_offset
            answer["log_append_time_ms"] = result.timestamp_ms
            if outcome.batch is not None and not outcome.duplicate:
                broker.ctx.metrics.produced(outcome.topic, outcome.batch.records)
            try:
                info = await broker.ctx.backend.partition_info(outcome.topic, outcome.partition)
                answer["log_start_offset"] = info.log_start_offset
            except errors.StorageError:
                pass  # deleted meanwhile: the offsets stand
    answer["error_code"] = outcome.error
    answer["error_message"] = outcome.message
    return answer


async def handle(broker: Broker, session: Session, request: Request) -> Body | Later | None:
    body = request.body
    acks = body["acks"]
    refused: ErrorCode | None = None
    message = None
    if acks not in (0, 1, -1):
        refused, message = ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be 0, 1 or -1, not {acks}"
    elif body["transactional_id"] is not None:
        refused = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        message = "transactions are not supported yet"
    if refused is not None:
        return refuse(request, refused, message)
    outcomes: list[tuple[str, list[_Outcome]]] = []
    for topic in body["topic_data"]:
        name = topic["name"]
        parts = topic["partition_data"]
        error = ErrorCode.NONE
        info: TopicInfo | None = None
        schema: Compiled | None = None
        if not broker.allows(session, "produce", "topic", name):
            error = ErrorCode.TOPIC_AUTHORIZATION_FAILED
        else:
            try:
                info = await broker.ctx.backend.get_topic(name)
                schema = await broker.ctx.schemas.active(broker.ctx.backend, name)
            except errors.StorageError as exc:
                error, info = error_code_of(exc), None
        if info is None:
            outcomes.append((name, [_Outcome(name, p["index"], error) for p in parts]))
        else:
            outcomes.append(
                (
                    name,
                    [
                        _start(broker, session, info, schema, p["index"], p["records"])
                        for p in parts
                    ],
                )
            )
    return Later(_answer(broker, outcomes, acks))


async def _answer(
    broker: Broker, outcomes: list[tuple[str, list[_Outcome]]], acks: int
) -> Body | None:
    responses = [
        {"name": name, "partition_responses": [await _finish(broker, o) for o in partitions]}
        for name, partitions in outcomes
    ]
    if acks == 0:
        return None
    return {"responses": responses}


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {
        "responses": [
            {
                "name": topic["name"],
                "partition_responses": [
                    {
                        "index": p["index"],
                        "error_code": error,
                        "base_offset": -1,
                        "error_message": message,
                    }
                    for p in topic["partition_data"]
                ],
            }
            for topic in request.body.get("topic_data", [])
        ]
    }


API = Api(ApiKey.PRODUCE, "Produce", 3, 11, handle, refuse)
