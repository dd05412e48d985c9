"""The blocking API: the async classes, run on a private event loop in a daemon thread.

`LogwayClient` owns the loop and an `AsyncLogwayClient` living on it; each blocking call
submits the async method to that loop and waits for it. `Producer` and `Consumer` wrap
`AsyncProducer` and `AsyncConsumer` the same way, so the logic exists once. Safe to call
from any number of threads; never from a coroutine running on the client's own loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

from logway_client._closing import ClosesOnExit
from logway_client.client import DEFAULT_TIMEOUT_S, AsyncLogwayClient, SeekTarget
from logway_client.consumer import AsyncConsumer
from logway_client.producer import AsyncProducer
from logway_client.types import (
    Assignment,
    GroupDescription,
    GroupSummary,
    NewRecord,
    PullResult,
    Record,
    RecordMetadata,
    SchemaVersion,
    TopicInfo,
    TopicSummary,
)

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread, until `stop()`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="logway-client", daemon=True
        )
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking logway call from the client's own event loop")
        return self.submit(coro).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _construct(factory: Callable[[], T]) -> T:
    """Build an object on the loop (httpx and asyncio objects bind to the running loop)."""
    return factory()


class LogwayClient(ClosesOnExit):
    """The blocking twin of AsyncLogwayClient (same arguments, same methods)."""

    def __init__(
        self,
        base_url: str,
        *,
        http2: bool = True,
        http1: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
        stream_read_timeout_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
        verify: Any = True,
    ) -> None:
        self._loop = _LoopThread()
        self.aio: AsyncLogwayClient = self._loop.run(
            _construct(
                lambda: AsyncLogwayClient(
                    base_url,
                    http2=http2,
                    http1=http1,
                    timeout=timeout,
                    stream_read_timeout_s=stream_read_timeout_s,
                    headers=headers,
                    verify=verify,
                )
            )
        )

    def close(self) -> None:
        """Close the connections and stop the loop thread (a second call does nothing)."""
        if self._loop.loop.is_closed():
            return
        self._loop.run(self.aio.aclose())
        self._loop.stop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the async API on this client's loop and wait for its result."""
        return self._loop.run(coro)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return self._loop.submit(coro)

    def create_topic(
        self, topic: str, partitions: int | None = None, config: Mapping[str, int] | None = None
    ) -> TopicInfo:
        return self.run(self.aio.create_topic(topic, partitions, config))

    def describe_topic(self, topic: str) -> TopicInfo:
        return self.run(self.aio.describe_topic(topic))

    def list_topics(self) -> list[TopicSummary]:
        return self.run(self.aio.list_topics())

    def delete_topic(self, topic: str) -> None:
        self.run(self.aio.delete_topic(topic))

    def register_schema(
        self, topic: str, schema: Any, *, key_schema: Any = None, headers_schema: Any = None
    ) -> SchemaVersion:
        return self.run(
            self.aio.register_schema(
                topic, schema, key_schema=key_schema, headers_schema=headers_schema
            )
        )

    def schema(self, topic: str, version: int | str = "latest") -> SchemaVersion:
        return self.run(self.aio.schema(topic, version))

    def schema_versions(self, topic: str) -> list[SchemaVersion]:
        return self.run(self.aio.schema_versions(topic))

    def delete_schema_version(self, topic: str, version: int | str = "latest") -> None:
        self.run(self.aio.delete_schema_version(topic, version))

    def schema_compatibility(self, topic: str) -> str:
        return self.run(self.aio.schema_compatibility(topic))

    def set_schema_compatibility(self, topic: str, compatibility: str) -> str:
        return self.run(self.aio.set_schema_compatibility(topic, compatibility))

    def produce(
        self,
        topic: str,
        records: Sequence[NewRecord | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[RecordMetadata]:
        return self.run(self.aio.produce(topic, records, idempotency_key=idempotency_key))

    def pull(
        self,
        topic: str,
        partition: int,
        offset: int | None = None,
        *,
        max_records: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int = 0,
    ) -> PullResult:
        return self.run(
            self.aio.pull(
                topic,
                partition,
                offset,
                max_records=max_records,
                max_bytes=max_bytes,
                wait_ms=wait_ms,
            )
        )

    def list_groups(self) -> list[GroupSummary]:
        return self.run(self.aio.list_groups())

    def describe_group(self, group: str) -> GroupDescription:
        return self.run(self.aio.describe_group(group))

    def seek_group(self, group: str, topic: str, to: SeekTarget) -> dict[int, int]:
        return self.run(self.aio.seek_group(group, topic, to))

    def delete_group(self, group: str) -> None:
        self.run(self.aio.delete_group(group))

    def commit_offsets(
        self, group: str, member_id: str, generation: int, topic: str, offsets: Mapping[int, int]
    ) -> None:
        self.run(self.aio.commit_offsets(group, member_id, generation, topic, offsets))


class Producer(ClosesOnExit):
    """The blocking twin of AsyncProducer: `send()` returns a concurrent.futures.Future."""

    def __init__(self, client: LogwayClient, **options: Any) -> None:
        self._client = client
        self.aio: AsyncProducer = client.run(
            _construct(lambda: AsyncProducer(client.aio, **options))
        )

    def send(
        self,
        topic: str,
        value: Any = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        partition: int | None = None,
    ) -> concurrent.futures.Future[RecordMetadata]:
        """Queue a record (records queue in call order) without waiting for its answer."""
        record = NewRecord(value, key, headers or {}, partition)

        async def acknowledged() -> RecordMetadata:
            return await self.aio.send_record(topic, record)

        return self._client.submit(acknowledged())

    def flush(self) -> None:
        self._client.run(self.aio.flush())

    def close(self) -> None:
        self._client.run(self.aio.close())


class Consumer(ClosesOnExit):
    """The blocking twin of AsyncConsumer: `for record in consumer`."""

    def __init__(
        self,
        client: LogwayClient,
        topic: str,
        *,
        start: Literal["earliest", "latest"] | int | None = None,
        partitions: Iterable[int] | None = None,
        cursor: str | None = None,
        group: str | None = None,
        commit: Literal["auto", "manual"] = "auto",
        on_assignment: Callable[[Assignment], Awaitable[None] | None] | None = None,
        on_expired: Callable[[], Awaitable[None] | None] | None = None,
        **options: Any,
    ) -> None:
        """The callbacks run on the client's loop thread; keep them short."""
        self._client = client
        self.aio: AsyncConsumer = AsyncConsumer(
            client.aio,
            topic,
            start=start,
            partitions=partitions,
            cursor=cursor,
            group=group,
            commit=commit,
            on_assignment=on_assignment,
            on_expired=on_expired,
            **options,
        )

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        try:
            return self._client.run(self.aio.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    @property
    def cursor(self) -> str | None:
        return self.aio.cursor

    @property
    def assignment(self) -> Assignment | None:
        return self.aio.assignment

    def commit(
        self, records: Iterable[Record] | None = None, *, offsets: Mapping[int, int] | None = None
    ) -> None:
        self._client.run(self.aio.commit(records, offsets=offsets))

    def close(self, *, processed_last: bool = False) -> None:
        """See AsyncConsumer.close."""
        self._client.run(self.aio.close(processed_last=processed_last))

    def close_on_exit(self, clean: bool) -> None:
        """Leaving `with` without an exception: the record in hand was processed."""
        self.close(processed_last=clean)
