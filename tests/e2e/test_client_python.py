"""The Python client (clients/python, `logway_client`) against real `logway serve` processes.

Restarts move a gateway to another port, so the tests that restart one put a `Relay` in
front of it: a TCP relay on a port of its own that forwards to whichever gateway is current
and can swallow the answer to a request after the gateway sent it (the request was applied,
the client never hears so), which is how a retry of an applied produce is provoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from logway_client import (
    PROBLEM_TYPES,
    Assignment,
    AsyncConsumer,
    AsyncLogwayClient,
    AsyncProducer,
    Consumer,
    FencedGeneration,
    Forbidden,
    InvalidTopicName,
    LogwayClient,
    LogwayError,
    NewRecord,
    OffsetOutOfRange,
    Producer,
    Record,
    RecordTooLarge,
    TopicExists,
    Unauthorized,
    UnknownGroup,
    UnknownMember,
    UnknownPartition,
    UnknownTopic,
    ValidationError,
)
from logway_client.client import raise_for_problem
from logway_client.errors import error_from_problem

from gateway.http.problems import CATALOG
from tests.e2e.conftest import Gateway, GatewayFactory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GUARD_S = 30.0  # only a guard against hanging; no test asserts a duration


@pytest.fixture
def server() -> str:
    """The client is tested on the default HTTP server only (the protocol tests cover both)."""
    return "granian"


class Relay:
    """A TCP relay on 127.0.0.1: a stable address in front of gateways that come and go."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.swallow_answers = 0  # swallow the answer on this many next connections
        self.swallowed = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the gateway is down: the client sees the connection close
            return
        swallow = self.swallow_answers > 0
        self.swallow_answers -= swallow

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if swallow:  # the gateway answered, so it applied the request: drop the answer
                    self.swallowed += 1
                    return
                writer.write(data)
                await writer.drain()

        pipes = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()


def _port(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


@pytest.fixture
async def relay(gateway: Gateway) -> AsyncIterator[Relay]:
    relay = Relay(_port(gateway))
    await relay.start()
    yield relay
    await relay.close()


async def _all_records(client: AsyncLogwayClient, topic: str) -> list[Record]:
    """Every record of every partition, by pulls (independent of the consumer under test)."""
    records: list[Record] = []
    for partition in (await client.describe_topic(topic)).partitions:
        offset = partition.log_start_offset
        while offset < partition.end_offset:
            result = await client.pull(topic, partition.partition, offset, max_records=1000)
            records += result.records
            offset = result.next_offset
    return records


async def _restart(
    start_gateway: GatewayFactory, old: Gateway, relay: Relay, *, kill: bool
) -> Gateway:
    """Stop `old` (kill -9 or SIGTERM), start a gateway on its data, point the relay at it."""
    await asyncio.to_thread(old.kill if kill else old.terminate)
    new = await asyncio.to_thread(start_gateway, "--auto-create-topics", data_dir=old.data_dir)
    relay.target_port = _port(new)
    return new


# -- produce and pull -----------------------------------------------------------------------


async def test_produce_pull_round_trip_keys_headers_json_and_bytes(gateway: Gateway) -> None:
    values: list[Any] = [
        {"order": 1, "items": [{"sku": "A-1", "qty": 2}], "note": "ünïcødé ✓"},
        [1, 2.5, None, True, "x"],
        "a string",
        0,
        None,
        b"\x00\xff raw bytes \xfe\n",
        b"",
    ]
    sent = [
        NewRecord(value, key=f"customer-{i % 3}", headers={"trace": f"t{i}", "n": str(i)})
        for i, value in enumerate(values)
    ]
    sent.append(NewRecord({"pinned": True}, headers={}, partition=2))
    sent.append(NewRecord(b"keyless bytes"))
    async with AsyncLogwayClient(gateway.url) as client:
        created = await client.create_topic("orders", 3, {"retention.ms": -1})
        assert created.name == "orders"
        assert len(created.partitions) == 3
        assert created.config["retention.ms"] == -1
        again = await client.create_topic("orders", 3, {"retention.ms": -1})
        assert again == created  # the same settings: 200 with the topic
        assert "orders" in {t.name for t in await client.list_topics()}

        metadata = await client.produce("orders", sent)
        assert len(metadata) == len(sent)
        assert metadata[-2].partition == 2
        by_key: dict[str, set[int]] = {}
        for record, meta in zip(sent, metadata, strict=True):
            if record.key is not None:
                by_key.setdefault(record.key, set()).add(meta.partition)
        assert all(len(partitions) == 1 for partitions in by_key.values())

        for record, meta in zip(sent, metadata, strict=True):
            pulled = await client.pull("orders", meta.partition, meta.offset, max_records=1)
            (got,) = pulled.records
            assert (got.topic, got.partition, got.offset) == ("orders", meta.partition, meta.offset)
            assert got.timestamp == meta.timestamp
            assert got.key == record.key
            assert dict(got.headers) == dict(record.headers)
            if isinstance(record.value, bytes):
                assert got.value_bytes == record.value
                assert got.value is None
            else:
                assert got.value == record.value
                assert got.value_bytes is None

        described = await client.describe_topic("orders")
        assert sum(p.end_offset for p in described.partitions) == len(sent)
        await client.delete_topic("orders")
        assert "orders" not in {t.name for t in await client.list_topics()}


async def test_producer_batches_by_count_and_bytes_and_keeps_order(gateway: Gateway) -> None:
    async with AsyncLogwayClient(gateway.url) as client:
        await client.create_topic("batched", 1)
        async with AsyncProducer(client, linger_ms=60_000, max_batch_records=10) as producer:
            futures = [producer.send("batched", {"i": i}, key="k") for i in range(95)]
            await producer.flush()  # the last 5 would linger for a minute without it
            metadata = [f.result() for f in futures]
            assert producer.attempts == 10  # 9 full batches of 10, then the flushed 5
        assert [m.offset for m in metadata] == list(range(95))

        record_bytes = len(NewRecord("x" * 1000).encode()) + 1  # with its comma
        async with AsyncProducer(
            client, linger_ms=60_000, max_batch_bytes=3 * record_bytes + 10
        ) as producer:
            futures = [producer.send("batched", "x" * 1000) for _ in range(12)]
            await producer.flush()
            await asyncio.gather(*futures)
            assert producer.attempts == 4  # 3 records fit a batch, a 4th would not

        values = [r.value for r in await _all_records(client, "batched")]
        assert values == [{"i": i} for i in range(95)] + ["x" * 1000] * 12


async def test_producer_retries_with_one_idempotency_key_and_writes_nothing_twice(
    gateway: Gateway, start_gateway: GatewayFactory, relay: Relay
) -> None:
    async with AsyncLogwayClient(gateway.url) as admin:
        await admin.create_topic("payments", 2)

    async with (
        AsyncLogwayClient(relay.url) as client,
        AsyncProducer(client, linger_ms=0, retry_backoff_ms=20, max_backoff_ms=200) as producer,
    ):
        # 1. the gateway writes the batch, the answer is lost: the retry gets the first result
        relay.swallow_answers = 1
        first = [producer.send("payments", {"n": i}, key=str(i)) for i in range(20)]
        first_meta = await asyncio.gather(*first)
        assert relay.swallowed == 1
        assert producer.attempts >= 2

        # 2. the gateway is killed; a batch sent meanwhile is retried until one is back
        attempts_before = producer.attempts
        await asyncio.to_thread(gateway.kill)
        second = [producer.send("payments", {"n": i}, key=str(i)) for i in range(20, 40)]
        new = await _restart(start_gateway, gateway, relay, kill=True)
        second_meta = await asyncio.gather(*second)
        assert producer.attempts - attempts_before >= 2

    async with AsyncLogwayClient(new.url) as client:
        stored = await _all_records(client, "payments")
    assert sorted(r.value["n"] for r in stored) == list(range(40)), "lost or duplicated"
    placed = {(m.partition, m.offset) for m in first_meta + second_meta}
    assert placed == {(r.partition, r.offset) for r in stored}


# -- consume --------------------------------------------------------------------------------


async def test_consumer_resumes_across_gateway_kill_without_loss_or_duplicates(
    gateway: Gateway, start_gateway: GatewayFactory, relay: Relay
) -> None:
    async with AsyncLogwayClient(gateway.url) as admin:
        await admin.create_topic("clicks", 3)
        await admin.produce("clicks", [NewRecord({"i": i}, key=str(i)) for i in range(60)])

    seen: list[Record] = []
    async with (
        AsyncLogwayClient(relay.url) as client,
        AsyncConsumer(
            client,
            "clicks",
            start="earliest",
            reconnect_delay_ms=50,
            max_reconnect_delay_ms=300,
        ) as consumer,
    ):
        async with asyncio.timeout(GUARD_S):
            while len(seen) < 25:
                seen.append(await anext(consumer))
            cursor_before = consumer.cursor

            new = await _restart(start_gateway, gateway, relay, kill=True)
            async with AsyncLogwayClient(new.url) as admin:
                await admin.produce("clicks", [NewRecord({"i": i}) for i in range(60, 100)])

            while len(seen) < 100:
                seen.append(await anext(consumer))
        assert consumer.reconnects >= 1
        assert consumer.cursor != cursor_before

    keys = [(r.partition, r.offset) for r in seen]
    assert len(keys) == len(set(keys)), "a record was delivered twice"
    assert sorted(r.value["i"] for r in seen) == list(range(100)), "a record was lost"
    for partition in range(3):
        offsets = [o for p, o in keys if p == partition]
        assert offsets == sorted(offsets)


async def test_consumer_partitions_start_and_saved_cursor(gateway: Gateway) -> None:
    async with AsyncLogwayClient(gateway.url) as client:
        await client.create_topic("views", 3)
        await client.produce("views", [NewRecord(i, partition=i % 3) for i in range(30)])

        async with AsyncConsumer(client, "views", start="earliest", partitions=[1]) as consumer:
            async with asyncio.timeout(GUARD_S):
                first = [await anext(consumer) for _ in range(4)]
            cursor = consumer.cursor
        assert [(r.partition, r.offset) for r in first] == [(1, o) for o in range(4)]

        await client.produce("views", [NewRecord(i, partition=1) for i in range(30, 33)])
        async with AsyncConsumer(client, "views", partitions=[1], cursor=cursor) as consumer:
            async with asyncio.timeout(GUARD_S):
                rest = [await anext(consumer) for _ in range(9)]
        assert [r.offset for r in rest] == list(range(4, 13))
        assert [r.value for r in rest] == [*range(13, 30, 3), 30, 31, 32]


# -- consumer groups ------------------------------------------------------------------------


async def test_group_admin_seek_describe_list_commit_delete(gateway: Gateway) -> None:
    async with AsyncLogwayClient(gateway.url) as client:
        await client.create_topic("ledger", 2)
        await client.produce("ledger", [NewRecord(i, partition=i % 2) for i in range(10)])
        with pytest.raises(UnknownGroup):
            await client.describe_group("billing")

        assert await client.seek_group("billing", "ledger", "earliest") == {0: 0, 1: 0}
        described = await client.describe_group("billing")
        assert described.members == ()
        assert [(p.partition, p.committed_offset, p.lag) for p in described.partitions] == [
            (0, 0, 5),
            (1, 0, 5),
        ]
        assert "billing" in {g.group for g in await client.list_groups()}
        assert await client.seek_group("billing", "ledger", "latest") == {0: 5, 1: 5}
        assert all(p.lag == 0 for p in (await client.describe_group("billing")).partitions)

        with pytest.raises(UnknownMember) as not_a_member:
            await client.commit_offsets("billing", "nobody", 1, "ledger", {0: 1})
        assert not_a_member.value.extensions["member_id"] == "nobody"

        await client.delete_group("billing")
        with pytest.raises(UnknownGroup):
            await client.describe_group("billing")


class _Member:
    """A group consumer read by a background task, so assignments arrive while it waits;
    each record and assignment notifies `progress`."""

    def __init__(
        self,
        client: AsyncLogwayClient,
        group: str,
        progress: asyncio.Condition,
        commit: str = "manual",
    ) -> None:
        self.progress = progress
        self.assignments: list[Assignment] = []
        self.consumer = AsyncConsumer(
            client,
            "work",
            group=group,
            start="earliest",
            commit="auto" if commit == "auto" else "manual",
            on_assignment=self._assigned,
        )
        self.records: list[Record] = []
        self._task = asyncio.create_task(self._read())

    async def _assigned(self, assignment: Assignment) -> None:
        self.assignments.append(assignment)
        async with self.progress:
            self.progress.notify_all()

    async def _read(self) -> None:
        async for record in self.consumer:
            self.records.append(record)
            async with self.progress:
                self.progress.notify_all()

    async def close(self) -> None:
        await self.consumer.close()
        await self._task


async def _until(progress: asyncio.Condition, condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition()` (a guard, not a timing assertion)."""
    try:
        async with asyncio.timeout(GUARD_S), progress:
            await progress.wait_for(condition)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


def _settled(*members: _Member, partitions: int) -> bool:
    """Every member knows the same generation and together they own each partition once."""
    assignments = [m.consumer.assignment for m in members]
    if any(a is None for a in assignments):
        return False
    generations = {a.generation for a in assignments if a is not None}
    owned = sorted(p for a in assignments if a is not None for p in a.partitions)
    return len(generations) == 1 and owned == list(range(partitions))


async def test_group_members_share_partitions_commit_and_get_uncommitted_records_again(
    gateway: Gateway,
) -> None:
    async with AsyncLogwayClient(gateway.url) as client:
        await client.create_topic("work", 4)
        progress = asyncio.Condition()
        a = _Member(client, "crew", progress)
        await _until(progress, lambda: _settled(a, partitions=4), "one member owns everything")
        b = _Member(client, "crew", progress)
        await _until(progress, lambda: _settled(a, b, partitions=4), "two members share it")
        assert a.consumer.assignment is not None
        assert b.consumer.assignment is not None
        shared_generation = a.consumer.assignment.generation
        assert len(a.assignments) == 2  # the callback saw each generation
        assert len(b.assignments) == 1
        assert a.assignments[-1] == a.consumer.assignment

        await client.produce("work", [NewRecord(i, partition=i % 4) for i in range(40)])
        await _until(progress, lambda: len(a.records) + len(b.records) == 40, "40 records came")
        for member in (a, b):
            assert member.consumer.assignment is not None
            assert {r.partition for r in member.records} <= set(
                member.consumer.assignment.partitions
            )
        await a.consumer.commit()  # everything it handed out
        await b.consumer.commit(b.records)  # after each partition's last record
        described = await client.describe_group("crew")
        assert len(described.members) == 2
        assert [(p.partition, p.committed_offset, p.lag) for p in described.partitions] == [
            (p, 10, 0) for p in range(4)
        ]

        member_id, owned = b.consumer.assignment.member_id, b.consumer.assignment.partitions
        with pytest.raises(FencedGeneration):  # a commit of an older generation is refused
            await client.commit_offsets(
                "crew", member_id, shared_generation - 1, "work", {owned[0]: 1}
            )

        # b reads 8 more records, commits none, and leaves: a gets b's partitions from b's
        # last commit, so exactly b's 4 uncommitted records come again (at least once)
        await client.produce("work", [NewRecord(i, partition=i % 4) for i in range(40, 48)])
        await _until(progress, lambda: len(a.records) + len(b.records) == 48, "8 more came")
        b_uncommitted = sorted(r.value for r in b.records[-4:])
        a_before = len(a.records)
        await b.close()
        await _until(progress, lambda: _settled(a, partitions=4), "a owns everything again")
        await _until(progress, lambda: len(a.records) == a_before + 4, "b's records came again")
        assert sorted(r.value for r in a.records[a_before:]) == b_uncommitted
        await a.close()


async def test_group_auto_commit_resumes_a_new_member_after_the_last_commit(
    gateway: Gateway,
) -> None:
    async with AsyncLogwayClient(gateway.url) as client:
        await client.create_topic("work", 2)
        await client.produce("work", [NewRecord(i, partition=i % 2) for i in range(10)])
        progress = asyncio.Condition()
        first = _Member(client, "auto", progress, commit="auto")
        await _until(progress, lambda: len(first.records) == 10, "the first member read all")

        async def committed() -> int:
            described = await client.describe_group("auto")
            return sum(p.committed_offset or 0 for p in described.partitions)

        async with asyncio.timeout(GUARD_S):
            # the gateway's state, with nothing to wait on: poll it (the consumer commits
            # what was processed every second; the 10th once the reader asked for more)
            while await committed() < 10:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        await first.close()

        await client.produce("work", [NewRecord(i, partition=i % 2) for i in range(10, 14)])
        second = _Member(client, "auto", progress, commit="auto")
        await _until(progress, lambda: len(second.records) == 4, "the new member read 4")
        assert sorted(r.value for r in second.records) == [10, 11, 12, 13]
        await second.close()


async def _committed_offset(client: AsyncLogwayClient, group: str) -> int | None:
    (partition,) = (await client.describe_group(group)).partitions
    return partition.committed_offset


async def test_a_group_consumer_commits_what_the_application_processed_by_default(
    gateway: Gateway,
) -> None:
    """A record counts as processed once the application asks for the next one, or leaves
    the `async with` block without an exception; the one in hand is never committed."""
    async with AsyncLogwayClient(gateway.url) as client:
        await client.create_topic("work", 1)
        await client.produce("work", [NewRecord(i) for i in range(10)])
        never = 3_600_000.0  # only close() commits here

        async def fail_at_offset_4() -> None:
            async with AsyncConsumer(
                client, "work", group="g", start="earliest", auto_commit_interval_ms=never
            ) as consumer:
                async for record in consumer:
                    if record.offset == 4:
                        raise RuntimeError("processing failed")

        with pytest.raises(RuntimeError, match="processing failed"):
            await fail_at_offset_4()
        assert await _committed_offset(client, "g") == 4, "0-3 processed, 4 was in hand"

        async with AsyncConsumer(
            client, "work", group="g", start="earliest", auto_commit_interval_ms=never
        ) as consumer:
            assert (await anext(consumer)).offset == 4  # delivered again: at least once
        assert await _committed_offset(client, "g") == 5, "a clean exit processed it"

        async with AsyncConsumer(
            client, "work", group="g", start="earliest", auto_commit_interval_ms=50
        ) as consumer:
            assert [(await anext(consumer)).offset for _ in range(3)] == [5, 6, 7]
            async with asyncio.timeout(GUARD_S):  # periodic commits while it reads on
                while await _committed_offset(client, "g") != 7:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            await consumer.close()  # no exit from the block yet: 7 is still in hand
        assert await _committed_offset(client, "g") == 7

        with (
            LogwayClient(gateway.url) as sync_client,
            Consumer(sync_client, "work", group="g", start="earliest") as blocking,
        ):
            assert next(blocking).offset == 7
        assert await _committed_offset(client, "g") == 8


async def test_group_member_rejoins_after_a_gateway_restart_and_loses_nothing(
    gateway: Gateway, start_gateway: GatewayFactory, relay: Relay
) -> None:
    async with AsyncLogwayClient(gateway.url) as admin:
        await admin.create_topic("work", 2)
        await admin.produce("work", [NewRecord(i, partition=i % 2) for i in range(30)])

    seen: list[Record] = []
    async with (
        AsyncLogwayClient(relay.url) as client,
        AsyncConsumer(
            client,
            "work",
            group="survivors",
            commit="auto",
            start="earliest",
            reconnect_delay_ms=50,
            max_reconnect_delay_ms=300,
        ) as consumer,
    ):
        async with asyncio.timeout(GUARD_S):
            while len(seen) < 10:
                seen.append(await anext(consumer))
            assert consumer.assignment is not None
            before = consumer.assignment.member_id

            # SIGTERM: the gateway ends the stream; what was processed and committed stays
            new = await _restart(start_gateway, gateway, relay, kill=False)
            async with AsyncLogwayClient(new.url) as admin:
                await admin.produce("work", [NewRecord(i, partition=i % 2) for i in range(30, 50)])
            while len({r.value for r in seen}) < 50:
                seen.append(await anext(consumer))
        assert consumer.assignment is not None
        assert consumer.assignment.member_id != before  # a new member of the same group
    assert sorted({r.value for r in seen}) == list(range(50)), "a record was lost"
    # at least once: records of the old member may come again, the new member's never twice
    values = [r.value for r in seen]
    assert all(v < 30 for v in values if values.count(v) > 1)


# -- errors ---------------------------------------------------------------------------------


def test_every_problem_type_of_the_gateway_has_a_client_class() -> None:
    missing = set(CATALOG) - set(PROBLEM_TYPES)
    assert not missing, f"add classes to logway_client.errors for {sorted(missing)}"
    for slug, problem in CATALOG.items():
        error = error_from_problem(problem.status, {"type": problem.uri, "detail": "d"})
        assert type(error) is PROBLEM_TYPES[slug]


def test_unknown_problem_types_map_to_the_root() -> None:
    error = error_from_problem(
        418, {"type": "https://example.com/teapot", "title": "Teapot", "detail": "no", "x": 1}
    )
    assert type(error) is LogwayError
    assert (error.status, error.title, error.detail) == (418, "Teapot", "no")
    assert error.extensions == {"x": 1}
    assert not error.retriable
    page = httpx.Response(502, text="<html>bad gateway</html>")  # a proxy's page, no problem
    with pytest.raises(LogwayError) as proxied:
        raise_for_problem(page, page.content)
    assert type(proxied.value) is LogwayError
    assert (proxied.value.status, proxied.value.title) == (502, "Bad Gateway")
    assert proxied.value.detail == "<html>bad gateway</html>"
    assert proxied.value.retriable  # a producer retries a proxy's 5xx


async def test_typed_errors_from_a_real_gateway(gateway: Gateway) -> None:
    async with AsyncLogwayClient(gateway.url) as client:
        with pytest.raises(UnknownTopic) as unknown:
            await client.pull("nope", 0)
        assert unknown.value.status == 404
        assert unknown.value.topic == "nope"
        assert unknown.value.title
        assert "nope" in unknown.value.detail
        with pytest.raises(UnknownTopic):
            await client.describe_topic("nope")

        with pytest.raises(InvalidTopicName):
            await client.create_topic("bad name!", 1)
        with pytest.raises(ValidationError) as invalid:
            await client.create_topic("t", 0)
        assert invalid.value.status == 422
        assert invalid.value.extensions["errors"][0]["pointer"] == "/partitions"

        await client.create_topic("t", 2)
        with pytest.raises(TopicExists):
            await client.create_topic("t", 5)
        with pytest.raises(UnknownPartition):
            await client.pull("t", 7)
        await client.produce("t", [NewRecord("a", partition=0)])
        with pytest.raises(OffsetOutOfRange) as out_of_range:
            await client.pull("t", 0, 5)
        assert (out_of_range.value.log_start_offset, out_of_range.value.end_offset) == (0, 1)
        with pytest.raises(RecordTooLarge):
            await client.produce("t", [NewRecord(b"x" * (2 * 1024 * 1024))])
        async with AsyncProducer(client, linger_ms=0) as producer:
            with pytest.raises(RecordTooLarge):  # a 4xx fails the batch at once, no retry
                await producer.send("t", b"x" * (2 * 1024 * 1024))
            assert producer.attempts == 1
        assert sum(p.end_offset for p in (await client.describe_topic("t")).partitions) == 1

        async with AsyncConsumer(client, "nope", start="earliest") as consumer:
            with pytest.raises(UnknownTopic):
                await anext(consumer)


async def test_auth_headers_reach_requests_and_streams(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[keys.writer]\nsha256 = "{digest("writer-key")}"\npermissions = ["admin:topic:*"]\n'
        f'[keys.reader]\nsha256 = "{digest("reader-key")}"\npermissions = ["consume:topic:*"]\n'
    )
    config = tmp_path / "logway.toml"
    config.write_text(f'auth_api_keys_file = "{keys}"\n')
    gateway = start_gateway("--config", str(config))

    async with AsyncLogwayClient(gateway.url) as anonymous:
        with pytest.raises(Unauthorized) as unauthorized:
            await anonymous.list_topics()
        assert unauthorized.value.status == 401
    writer_headers = {"Authorization": "Bearer writer-key"}
    async with AsyncLogwayClient(gateway.url, headers=writer_headers) as writer:
        await writer.create_topic("private", 1)
        await writer.produce("private", [NewRecord("secret")])
    async with AsyncLogwayClient(gateway.url, headers={"X-API-Key": "reader-key"}) as reader:
        with pytest.raises(Forbidden):
            await reader.produce("private", [NewRecord("not allowed")])
        async with AsyncConsumer(reader, "private", start="earliest") as consumer:
            async with asyncio.timeout(GUARD_S):
                assert (await anext(consumer)).value == "secret"


async def test_an_expired_token_is_refreshed_by_on_expired_and_the_stream_resumes(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    secret = "x" * 64
    config = tmp_path / "logway.toml"
    config.write_text(f'jwt_hs256_secret = "{secret}"\n')
    gateway = start_gateway("--config", str(config))

    def token(lifetime_s: int) -> str:
        claims = {
            "sub": "app",
            "exp": int(time.time()) + lifetime_s,
            "permissions": ["admin:topic:*"],
        }
        return jwt.encode(claims, secret, algorithm="HS256")

    expired = asyncio.Event()
    async with AsyncLogwayClient(
        gateway.url, headers={"Authorization": f"Bearer {token(2)}"}
    ) as client:

        def refresh() -> None:
            client.http.headers["Authorization"] = f"Bearer {token(600)}"
            expired.set()

        await client.create_topic("tokens", 1)
        await client.produce("tokens", [NewRecord(i) for i in range(5)])
        async with AsyncConsumer(
            client, "tokens", start="earliest", on_expired=refresh, reconnect_delay_ms=50
        ) as consumer:
            async with asyncio.timeout(GUARD_S):
                values = [(await anext(consumer)).value for _ in range(5)]
                waiting = asyncio.create_task(anext(consumer))
                await expired.wait()  # the stream outlived its token
                await client.produce("tokens", [NewRecord(i) for i in range(5, 10)])
                values.append((await waiting).value)
                values += [(await anext(consumer)).value for _ in range(4)]
            assert consumer.reconnects == 1
    assert values == list(range(10))


# -- the blocking API -----------------------------------------------------------------------


def test_sync_client_producer_and_consumer(gateway: Gateway) -> None:
    with LogwayClient(gateway.url) as client:
        client.create_topic("sync", 2)
        (meta,) = client.produce("sync", [{"value": {"hello": "world"}, "key": "k"}])
        assert client.pull("sync", meta.partition, meta.offset).records[0].value == {
            "hello": "world"
        }
        with Producer(client, linger_ms=1) as producer:
            futures = [producer.send("sync", i, headers={"h": str(i)}) for i in range(10)]
            producer.flush()
            assert all(f.result().topic == "sync" for f in futures)
        with Consumer(client, "sync", start="earliest") as consumer:
            records = [next(consumer) for _ in range(11)]
        assert sorted(str(r.value) for r in records) == sorted(
            [str({"hello": "world"}), *map(str, range(10))]
        )
        assert consumer.cursor
        with pytest.raises(UnknownTopic):
            client.describe_topic("missing")
        assert {t.name for t in client.list_topics()} == {"sync"}


async def test_heartbeats_keep_an_idle_stream_open_and_retry_is_read(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway("--heartbeat-s", "0.1")
    async with AsyncLogwayClient(gateway.url, stream_read_timeout_s=1.0) as client:
        await client.create_topic("quiet", 1)
        async with AsyncConsumer(client, "quiet", start="earliest") as consumer:
            waiting = asyncio.create_task(anext(consumer))
            await asyncio.sleep(2.0)  # idle for twice the read timeout: only heartbeats arrive
            await client.produce("quiet", [NewRecord("finally")])
            async with asyncio.timeout(GUARD_S):
                record = await waiting
            assert record.value == "finally"
            assert consumer.reconnects == 0, "the idle stream was cut and reopened"
            assert consumer.server_retry_ms == 2000  # the gateway's `retry:` (its default)

            waiting = asyncio.create_task(anext(consumer))
            await asyncio.sleep(0.2)  # let it block on the idle stream
            await consumer.close()
            async with asyncio.timeout(GUARD_S):
                with pytest.raises(StopAsyncIteration):
                    await waiting


async def test_http2_over_tls(start_gateway: GatewayFactory, tls_cert: tuple[Path, Path]) -> None:
    gateway = start_gateway(tls=tls_cert)
    async with AsyncLogwayClient(gateway.url, verify=gateway.verify()) as client:
        await client.create_topic("secure", 1)
        async with AsyncConsumer(client, "secure", start="earliest") as consumer:
            await client.produce("secure", [NewRecord({"n": n}) for n in range(3)])
            async with asyncio.timeout(GUARD_S):
                values = [(await anext(consumer)).value for _ in range(3)]
        assert values == [{"n": n} for n in range(3)]
        assert (await client.http.get("/healthz")).http_version == "HTTP/2"
