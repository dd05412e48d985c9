"""The jetstream backend: storage.backend.Backend over a NATS JetStream cluster.

Layout and record encoding are in `storage.jetstream_codec`: one stream per topic
partition, offset = stream sequence - 1. Key-value buckets (the KV protocol, used over
the raw API so every write can carry a revision check or a TTL):

    <ns>_topics       key = the topic's stream stem; JSON {state, name, partitions, config}
                      with state creating -> ready -> deleting, changed by compare-and-set
    <ns>_groups       o.<base64url group> = all the group's committed offsets (one value,
                      so a commit is one transaction); m.<base64url group> = its metadata
    <ns>_idempotency  sha256(key) = 8-byte expiry (ms) + result, with a Nats-TTL
    <ns>_members      consumer-group membership, written by gateway/membership.py through
                      `key_value("members")`

Guarantees:

- An append is acknowledged only after JetStream acknowledged it; with R3 that is after a
  quorum of the stream's replicas stored it. JetStream does not fsync each message by
  default (`sync_interval`, 2 min): durability under R3 comes from replication, and
  servers that must survive losing power on all replicas need `sync_interval: always`.
- An append of several records is one ADR-50 atomic batch (nats-server 2.12+, streams
  with allow_atomic): stored all together with consecutive sequences, or not at all. The
  server caps a batch at 1000 messages, so larger appends raise AppendTooLarge before
  anything is written. This holds across any number of gateways: no lock is involved.
  A publish finishes even if its caller is cancelled, so no batch is left half-sent.
- A publish whose acknowledgement is lost (timeout, connection drop) has an unknown
  outcome; it raises StorageUnavailable and a client retry may write the records twice.
- Reads use batch direct get, which any replica may answer; a replica that lags returns
  a shorter read (never a wrong one), and the leader is asked when a replica has nothing.
  Appends, offset_for_timestamp and partition_info ask the leader.

Gateways share nothing but the cluster: topic metadata is read from KV (get_topic and
list_topics always; the data path caches it until a stream turns out to be missing or a
stream-deleted advisory arrives). wait_for_records parks futures on one subscription per
partition to the stream's RePublish subject (headers only, sent after the store), so no
task polls; a reconnect, a deleted stream or close() wakes every waiter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy
from nats.nuid import NUID

from storage.errors import (
    AppendTooLarge,
    DiskFull,
    GroupNotFound,
    OffsetOutOfRange,
    PartitionNotFound,
    StorageClosed,
    StorageError,
    StorageUnavailable,
    StorageWriteError,
    TopicExists,
    TopicNotFound,
)
from storage.jetstream_codec import (
    batch_headers,
    decode_offsets,
    decode_record,
    encode_offsets,
    format_time_ms,
    group_from_key,
    group_key,
    idempotency_key,
    notify_subject,
    parse_time_ms,
    record_headers,
    record_size,
    record_subject,
    stream_config,
    stream_name,
    stream_stem,
    validate_namespace,
)
from storage.names import validate_topic_name
from storage.partition import now_ms
from storage.types import (
    AppendResult,
    NewRecord,
    PartitionInfo,
    Record,
    TopicConfig,
    TopicInfo,
    TopicPartition,
)

log = logging.getLogger(__name__)

# ADR-50: the server refuses atomic batches of more than 1000 messages.
MAX_ATOMIC_BATCH = 1000
# ADR-50: at most 50 batches in flight per stream (all clients); leave room for others.
BATCHES_IN_FLIGHT_PER_PARTITION = 8
MAX_READ_BATCH = 1000
# What a stored message costs beyond key and value in a direct get's max_bytes.
MESSAGE_OVERHEAD_BYTES = 512
DEFAULT_REQUEST_TIMEOUT_S = 5.0
INITIAL_CONNECT_ATTEMPTS = 2  # per server
# A connection that stops answering PINGs (a half-open socket, or a nats-py read loop that
# died while the client still says "connected") is replaced after about three intervals,
# not after nats-py's default of six minutes.
PING_INTERVAL_S = 5
MAX_OUTSTANDING_PINGS = 2
UNKNOWN_END_OFFSET = -1
# Keep a partition's notification subscription this long after its last waiter left.
NOTIFIER_LINGER_S = 30.0
MAX_CAS_ATTEMPTS = 32
CREATE_CONCURRENCY = 16
MEMBERS_BUCKET = "members"

# JetStream API error codes (server/errors.json).
ERR_STREAM_NOT_FOUND = 10059
ERR_NO_MESSAGE = 10037
ERR_WRONG_LAST_SEQUENCE = (10071, 10164)
ERR_INSUFFICIENT_RESOURCES = 10023
ERR_STORAGE_RESOURCES_EXCEEDED = 10047
ERR_BATCH_TOO_LARGE = 10199

KV_OPERATION = "KV-Operation"
STATE_READY = "ready"
STATE_CREATING = "creating"
STATE_DELETING = "deleting"


class _ApiError(StorageError):
    """A JetStream API error reply; converted to a public StorageError where it is caught."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {err_code} ({code}): {description}")
        self.code = code
        self.err_code = err_code
        self.description = description


class _NoStream(StorageError):
    """The partition's stream does not answer: deleted, or not created yet."""


def _public_error(exc: _ApiError) -> StorageError:
    if exc.err_code in (ERR_INSUFFICIENT_RESOURCES, ERR_STORAGE_RESOURCES_EXCEEDED):
        return DiskFull(exc.description)
    if exc.code >= 500 or exc.code == 408:
        return StorageUnavailable(str(exc))
    return StorageWriteError(str(exc))


@dataclass
class _KvEntry:
    value: bytes
    revision: int
    deleted: bool = False  # a delete marker: no value, but its revision guards a re-create


@dataclass
class _Notifier:
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


class JetStreamBackend:
    """storage.backend.Backend over JetStream. Create with `await JetStreamBackend.open(...)`."""

    def __init__(self, nc: Client, replicas: int, namespace: str, timeout_s: float) -> None:
        self._nc = nc
        self.replicas = replicas
        self.namespace = namespace
        self.max_append_records = MAX_ATOMIC_BATCH
        self._timeout_s = timeout_s
        self._topics_bucket = f"{namespace}_topics"
        self._groups_bucket = f"{namespace}_groups"
        self._idempotency_bucket = f"{namespace}_idempotency"
        self._topics: dict[str, TopicInfo] = {}
        self._batch_slots: dict[str, asyncio.Semaphore] = {}
        self._notifiers: dict[tuple[str, int], _Notifier] = {}
        self._notifier_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._inbox_prefix = nc.new_inbox()
        self._inbox_queues: dict[str, asyncio.Queue[Msg]] = {}
        self._inbox_tokens = itertools.count()
        self._nuid = NUID()
        self._background: set[asyncio.Future[Any]] = set()
        self._closed = False

    @classmethod
    async def open(
        cls,
        servers: list[str],
        replicas: int = 1,
        *,
        namespace: str = "logway",
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        connect_timeout_s: float = 5.0,
    ) -> JetStreamBackend:
        """Connect, check JetStream answers and create the KV buckets if missing.

        `replicas` (1, 3 or 5, at most the cluster size) applies to streams and buckets this
        backend creates. `namespace` prefixes every stream, subject and bucket, so several
        logway deployments (or tests) can share one cluster.
        """
        if replicas not in (1, 3, 5):
            raise ValueError("replicas must be 1, 3 or 5")
        validate_namespace(namespace)
        holder: list[JetStreamBackend] = []

        async def on_reconnected() -> None:
            if holder:
                holder[0]._on_reconnected()

        async def on_error(exc: Exception) -> None:
            log.warning("NATS connection error: %r", exc)

        try:
            nc = await nats.connect(
                servers,
                name="logway",
                connect_timeout=connect_timeout_s,
                allow_reconnect=True,
                max_reconnect_attempts=INITIAL_CONNECT_ATTEMPTS,
                reconnect_time_wait=0.25,
                ping_interval=PING_INTERVAL_S,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                reconnected_cb=on_reconnected,
                error_cb=on_error,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"cannot connect to NATS at {servers}: {exc!r}") from exc
        # Give up on a first connect that fails, but once connected, reconnect forever.
        nc.options["max_reconnect_attempts"] = -1
        backend = cls(nc, replicas, namespace, request_timeout_s)
        holder.append(backend)
        try:
            await backend._start()
        except BaseException:
            await backend.close()
            raise
        return backend

    async def _start(self) -> None:
        await self._nc.subscribe(self._inbox_prefix + ".*", cb=self._on_inbox)
        await self._nc.subscribe(
            "$JS.EVENT.ADVISORY.STREAM.DELETED.*",
            cb=self._on_stream_deleted,
        )
        await self._account_info()
        # <ns>_members is the gateway's group membership (KeyValue): made here, at startup,
        # because a new R3 stream may not answer within a request timeout while it elects.
        members = f"{self.namespace}_{MEMBERS_BUCKET}"
        for bucket in (self._topics_bucket, self._groups_bucket, self._idempotency_bucket, members):
            await self._ensure_bucket(bucket)

    async def close(self) -> None:
        """Wake every waiter and close the connection. Appends are never buffered here."""
        if self._closed:
            return
        self._closed = True
        for notifier in self._notifiers.values():
            notifier.wake_all()
            if notifier.linger is not None:
                notifier.linger.cancel()
        self._notifiers.clear()
        with contextlib.suppress(nats.errors.Error):
            await self._nc.close()

    async def check_writable(self) -> None:
        """Connected, and JetStream answers (which needs a meta leader) with storage left."""
        self._check_open()
        if not self._nc.is_connected:
            raise StorageUnavailable("not connected to NATS")
        info = await self._account_info()
        limits = info.get("limits", {})
        max_storage = limits.get("max_storage", -1)
        if max_storage > 0 and info.get("storage", 0) >= max_storage:
            raise DiskFull("the JetStream account's storage limit is reached")

    async def _account_info(self) -> dict[str, Any]:
        """$JS.API.INFO: it needs the meta leader, so it is also a cluster health check."""
        try:
            return await self._api("INFO")
        except _ApiError as exc:
            raise _public_error(exc) from exc

    # -- topics -------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, config: TopicConfig) -> bool:
        """Claim the name in KV ("creating"), create the partitions' streams, mark "ready".

        The claim is a compare-and-set, so gateways creating the same topic at once agree
        on one outcome. Streams left by a delete that died half-way are removed before
        new ones are made, so a re-created topic starts at offset 0.
        """
        validate_topic_name(name)
        info = TopicInfo(name, partitions, config)
        self._check_open()
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self._kv_last(self._topics_bucket, self._topic_key(name))
            live = entry is not None and not entry.deleted
            state, existing = _decode_topic(entry.value) if entry and live else (None, None)
            if existing is not None and state in (STATE_READY, STATE_CREATING):
                if existing != info:
                    raise TopicExists(existing)
                if state == STATE_READY:
                    self._topics[name] = existing
                    return False
            claim = _encode_topic(info, STATE_CREATING)
            try:
                revision = await self._kv_put(
                    self._topics_bucket,
                    self._topic_key(name),
                    claim,
                    last=entry.revision if entry else 0,
                )
            except _ApiError as exc:
                if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                    continue
                raise _public_error(exc) from exc
            if state == STATE_DELETING and existing is not None:
                await self._delete_streams(name, existing.partitions)
            await self._create_streams(info)
            try:
                await self._kv_put(
                    self._topics_bucket,
                    self._topic_key(name),
                    _encode_topic(info, STATE_READY),
                    last=revision,
                )
            except _ApiError as exc:
                if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                    continue  # another gateway finished it first: the next pass sees "ready"
                raise _public_error(exc) from exc
            self._topics[name] = info
            return True
        raise StorageUnavailable(f"topic {name!r} kept changing while being created")

    async def _create_streams(self, info: TopicInfo) -> None:
        slots = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def create(partition: int) -> None:
            config = stream_config(self.namespace, info.name, partition, info.config, self.replicas)
            async with slots:
                try:
                    await self._api(f"STREAM.CREATE.{config['name']}", config)
                except _ApiError as exc:
                    raise _public_error(exc) from exc

        await asyncio.gather(*(create(p) for p in range(info.partitions)))

    async def _delete_streams(self, name: str, partitions: int) -> None:
        slots = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def delete(partition: int) -> None:
            async with slots:
                try:
                    await self._api(f"STREAM.DELETE.{stream_name(self.namespace, name, partition)}")
                except _ApiError as exc:
                    if exc.err_code != ERR_STREAM_NOT_FOUND:
                        raise _public_error(exc) from exc

        await asyncio.gather(*(delete(p) for p in range(partitions)))

    async def delete_topic(self, name: str) -> None:
        """Mark "deleting" (compare-and-set), delete the streams, then the KV entry."""
        validate_topic_name(name)
        self._check_open()
        entry = await self._kv_get(self._topics_bucket, self._topic_key(name))
        state, info = _decode_topic(entry.value) if entry else (None, None)
        if entry is None or info is None or state != STATE_READY:
            raise TopicNotFound(name)
        try:
            revision = await self._kv_put(
                self._topics_bucket,
                self._topic_key(name),
                _encode_topic(info, STATE_DELETING),
                last=entry.revision,
            )
        except _ApiError as exc:
            if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                raise TopicNotFound(name) from exc  # deleted or re-created under us
            raise _public_error(exc) from exc
        self._forget_topic(name)
        await self._delete_streams(name, info.partitions)
        await self._forget_committed_offsets(name)
        with contextlib.suppress(_ApiError):  # a creator may already have taken the name over
            await self._kv_delete(self._topics_bucket, self._topic_key(name), last=revision)

    async def list_topics(self) -> list[TopicInfo]:
        self._check_open()
        keys = await self._kv_keys(self._topics_bucket)
        entries = await asyncio.gather(*(self._kv_get(self._topics_bucket, k) for k in keys))
        topics = []
        for entry in entries:
            state, info = _decode_topic(entry.value) if entry else (None, None)
            if state == STATE_READY and info is not None:
                topics.append(info)
        return sorted(topics, key=lambda t: t.name)

    def _topic_key(self, name: str) -> str:
        """Topic names may hold empty subject tokens ("..a"); their stream stem never does."""
        return stream_stem(self.namespace, name)

    async def get_topic(self, name: str) -> TopicInfo:
        """Always read from KV, so every gateway sees topics the others created or deleted."""
        self._check_open()
        entry = await self._kv_get(self._topics_bucket, self._topic_key(name))
        state, info = _decode_topic(entry.value) if entry else (None, None)
        if info is None or state != STATE_READY:
            self._topics.pop(name, None)
            raise TopicNotFound(name)
        self._topics[name] = info
        return info

    async def _stream(self, topic: str, partition: int) -> str:
        self._check_open()
        cached = self._topics.get(topic)
        info = cached or await self.get_topic(topic)
        if not 0 <= partition < info.partitions and cached is not None:
            info = await self.get_topic(topic)  # the cache may predate a re-creation
        if not 0 <= partition < info.partitions:
            raise PartitionNotFound(topic, partition)
        return stream_name(self.namespace, topic, partition)

    async def _missing_stream(self, topic: str, partition: int) -> StorageError:
        """The error to raise when a partition's stream does not exist."""
        self._topics.pop(topic, None)
        try:
            info = await self.get_topic(topic)
        except TopicNotFound as exc:
            return exc
        if not 0 <= partition < info.partitions:
            return PartitionNotFound(topic, partition)
        return StorageUnavailable(f"the stream of {topic}/{partition} is missing or has no leader")

    async def _topic_exists(self, topic: str, partition: int) -> bool:
        """Whether KV still has the topic with this partition (True if it cannot say)."""
        try:
            info = await self.get_topic(topic)
        except TopicNotFound:
            return False
        except StorageError:
            return True
        return 0 <= partition < info.partitions

    def _forget_topic(self, name: str) -> None:
        self._topics.pop(name, None)
        for (topic, _), notifier in self._notifiers.items():
            if topic == name:
                notifier.wake_all()

    async def partition_info(self, topic: str, partition: int) -> PartitionInfo:
        stream = await self._stream(topic, partition)
        state = await self._stream_state(topic, partition, stream)
        log_start_offset, end_offset = _offsets(state)
        return PartitionInfo(partition, log_start_offset, end_offset, int(state.get("bytes", 0)))

    async def _stream_state(self, topic: str, partition: int, stream: str) -> dict[str, Any]:
        try:
            info = await self._api(f"STREAM.INFO.{stream}")
        except _ApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise await self._missing_stream(topic, partition) from exc
            raise _public_error(exc) from exc
        state: dict[str, Any] = info["state"]
        return state

    # -- records ------------------------------------------------------------------------

    async def append(
        self, topic: str, partition: int, records: Sequence[NewRecord]
    ) -> AppendResult:
        """One message, or one atomic batch; returns after JetStream acknowledged it."""
        if not records:
            raise ValueError("append needs at least one record")
        if len(records) > self.max_append_records:
            raise AppendTooLarge(len(records), self.max_append_records)
        stream = await self._stream(topic, partition)
        subject = record_subject(self.namespace, topic, partition)
        # A caller cancelled half-way through a batch would leave the server holding an
        # open batch (and one of its 50 per stream) for 10 s: the publish always finishes.
        publish = asyncio.ensure_future(self._publish(stream, subject, records))
        self._keep_until_done(publish)
        try:
            ack = await asyncio.shield(publish)
        except _NoStream:
            raise await self._missing_stream(topic, partition) from None
        except StorageUnavailable as exc:
            # A stream deleted under an open batch never answers the commit.
            if not await self._topic_exists(topic, partition):
                raise await self._missing_stream(topic, partition) from exc
            raise
        except _ApiError as exc:
            if exc.err_code == ERR_BATCH_TOO_LARGE:
                raise AppendTooLarge(len(records), self.max_append_records) from exc
            raise _public_error(exc) from exc
        last_sequence = int(ack["seq"])
        timestamp_ms = await self._message_time(stream, last_sequence)
        return AppendResult(last_sequence - len(records), len(records), timestamp_ms)

    async def _publish(
        self, stream: str, subject: str, records: Sequence[NewRecord]
    ) -> dict[str, Any]:
        if len(records) == 1:
            return await self._publish_one(subject, records[0])
        slots = self._batch_slots.setdefault(
            stream, asyncio.Semaphore(BATCHES_IN_FLIGHT_PER_PARTITION)
        )
        async with slots:
            return await self._publish_batch(subject, records)

    async def _publish_one(self, subject: str, record: NewRecord) -> dict[str, Any]:
        reply = await self._request(subject, record.value, record_headers(record))
        return _pub_ack(reply)

    async def _publish_batch(self, subject: str, records: Sequence[NewRecord]) -> dict[str, Any]:
        """ADR-50: the first message is a request (the server starts the batch or refuses),
        the middle ones are plain publishes, the last commits and gets the PubAck."""
        batch_id = self._nuid.next().decode()
        count = len(records)
        first = records[0]
        reply = await self._request(
            subject, first.value, record_headers(first) | batch_headers(batch_id, 0, count)
        )
        if reply.data:
            _pub_ack(reply)  # an error reply refuses the batch
        try:
            for index in range(1, count - 1):
                record = records[index]
                await self._nc.publish(
                    subject,
                    record.value,
                    headers=record_headers(record) | batch_headers(batch_id, index, count),
                )
        except nats.errors.MaxPayloadError as exc:
            raise StorageWriteError(f"a record exceeds the NATS max_payload: {exc}") from exc
        except nats.errors.Error as exc:
            raise StorageUnavailable(f"batch publish failed, nothing written: {exc!r}") from exc
        last = records[-1]
        reply = await self._request(
            subject,
            last.value,
            record_headers(last) | batch_headers(batch_id, count - 1, count),
        )
        return _pub_ack(reply)

    async def _message_time(self, stream: str, sequence: int) -> int:
        """The stream's time of a stored message, asked of the leader (which has it).

        The records are durable by now, so failing the append would invite a duplicating
        retry: if the leader cannot answer (it just changed), the local clock stands in."""
        try:
            reply = await self._api(f"STREAM.MSG.GET.{stream}", {"seq": sequence})
            return parse_time_ms(reply["message"]["time"])
        except StorageError as exc:
            log.warning("time of %s #%d unknown, using the local clock: %s", stream, sequence, exc)
            return now_ms()

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int, max_bytes: int
    ) -> list[Record]:
        """Batch direct get from offset + 1; the stream's state decides the edge cases."""
        stream = await self._stream(topic, partition)
        if max_records <= 0:
            await self._check_offset(topic, partition, stream, offset)
            return []
        batch = min(max_records, MAX_READ_BATCH)
        request = {
            "seq": offset + 1 if offset >= 0 else 1,
            "batch": batch,
            "max_bytes": max(1, max_bytes) + batch * MESSAGE_OVERHEAD_BYTES,
        }
        messages = await self._direct_get(topic, partition, stream, request)
        if not messages or offset < 0 or _sequence(messages[0]) != offset + 1:
            return await self._read_edge(topic, partition, stream, offset)
        records: list[Record] = []
        used_bytes = 0
        for msg in messages:
            record = _to_record(msg)
            size = record_size(record)
            if records and used_bytes + size > max_bytes:
                break
            records.append(record)
            used_bytes += size
            if len(records) == max_records:
                break
        return records

    async def _check_offset(self, topic: str, partition: int, stream: str, offset: int) -> int:
        """Raise OffsetOutOfRange unless log_start <= offset <= end; returns end_offset."""
        log_start_offset, end_offset = _offsets(await self._stream_state(topic, partition, stream))
        if not log_start_offset <= offset <= end_offset:
            raise OffsetOutOfRange(offset, log_start_offset, end_offset)
        return end_offset

    async def _read_edge(
        self, topic: str, partition: int, stream: str, offset: int
    ) -> list[Record]:
        """Nothing at offset from the replica asked: the end of the log, an offset out of
        range, or a replica that lags (then the leader returns the record)."""
        end_offset = await self._check_offset(topic, partition, stream, offset)
        if offset == end_offset:
            return []
        try:
            reply = await self._api(f"STREAM.MSG.GET.{stream}", {"seq": offset + 1})
        except _ApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                return []  # removed by retention between the two requests: the next read says so
            raise _public_error(exc) from exc
        return [_api_message_to_record(reply["message"])]

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The leader's first message at or after the time (JetStream's start_time get)."""
        stream = await self._stream(topic, partition)
        try:
            reply = await self._api(
                f"STREAM.MSG.GET.{stream}", {"start_time": format_time_ms(max(0, timestamp_ms))}
            )
        except _ApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise await self._missing_stream(topic, partition) from exc
            if exc.err_code != ERR_NO_MESSAGE:
                raise _public_error(exc) from exc
            return _offsets(await self._stream_state(topic, partition, stream))[1]
        return int(reply["message"]["seq"]) - 1

    async def wait_for_records(
        self, topic: str, positions: Mapping[int, int], timeout_s: float | None
    ) -> bool:
        """Park one future on the partitions' notifiers (RePublish subscriptions, shared)."""
        if self._closed:
            return True
        try:
            for p in positions:
                await self._stream(topic, p)
        except TopicNotFound:
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        acquired: list[tuple[tuple[str, int], _Notifier]] = []
        try:
            for p, position in positions.items():
                try:
                    notifier = await self._acquire_notifier(topic, p)
                except (TopicNotFound, PartitionNotFound):
                    return True
                acquired.append(((topic, p), notifier))
                if notifier.end_offset > position:
                    return True
                notifier.waiters[future] = position
            if self._closed:
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
                self._release_notifier(key, notifier, future)

    async def _acquire_notifier(self, topic: str, partition: int) -> _Notifier:
        key = (topic, partition)
        lock = self._notifier_locks.setdefault(key, asyncio.Lock())
        async with lock:
            notifier = self._notifiers.get(key)
            if notifier is None:
                notifier = await self._start_notifier(topic, partition)
                self._notifiers[key] = notifier
            elif notifier.end_offset == UNKNOWN_END_OFFSET:
                await self._learn_end_offset(notifier, topic, partition)
            notifier.users += 1
            if notifier.linger is not None:
                notifier.linger.cancel()
                notifier.linger = None
            return notifier

    async def _start_notifier(self, topic: str, partition: int) -> _Notifier:
        """Subscribe first, then read the end offset, so no append falls in between: the
        SUB precedes the STREAM.INFO request on this connection, so the server has our
        interest before it answers (no flush is needed, see _learn_end_offset)."""
        holder: list[_Notifier] = []

        async def on_stored(msg: Msg) -> None:
            sequence = (msg.headers or {}).get("Nats-Sequence")
            if holder and sequence is not None:
                holder[0].advance(int(sequence))

        subject = notify_subject(self.namespace, topic, partition)
        subscription = await self._nc.subscribe(subject, cb=on_stored)
        notifier = _Notifier(subscription, UNKNOWN_END_OFFSET)
        holder.append(notifier)
        try:
            await self._learn_end_offset(notifier, topic, partition)
        except BaseException:
            await _unsubscribe(subscription)
            raise
        return notifier

    async def _learn_end_offset(self, notifier: _Notifier, topic: str, partition: int) -> None:
        """Read the stream's end offset into the notifier. Without a stream leader (an
        election after a node died) it stays unknown: waiters then wake on the next stored
        record or their timeout, and the next waiter tries again.

        Never nc.flush() here: a waiter is cancelled whenever its stream ends or is woken,
        and a flush cancelled (or timed out) before its PONG leaves a cancelled future in
        nats-py's PONG queue; the PONG then kills the client's read loop (InvalidStateError)
        and the connection stays "connected" with no reply to any request."""
        try:
            stream = stream_name(self.namespace, topic, partition)
            _, end_offset = _offsets(await self._stream_state(topic, partition, stream))
        except StorageUnavailable as exc:
            log.warning("end offset of %s/%s unknown for now: %s", topic, partition, exc)
            return
        notifier.advance(end_offset)

    def _release_notifier(
        self, key: tuple[str, int], notifier: _Notifier, future: asyncio.Future[bool]
    ) -> None:
        notifier.waiters.pop(future, None)
        notifier.users -= 1
        if notifier.users > 0:
            return
        if self._notifiers.get(key) is not notifier:
            self._unsubscribe_later(notifier)  # replaced after a reconnect
        elif notifier.linger is None and not self._closed:
            notifier.linger = asyncio.get_running_loop().call_later(
                NOTIFIER_LINGER_S, self._drop_notifier, key, notifier
            )

    def _drop_notifier(self, key: tuple[str, int], notifier: _Notifier) -> None:
        if self._notifiers.get(key) is notifier and notifier.users == 0:
            del self._notifiers[key]
            self._unsubscribe_later(notifier)

    def _unsubscribe_later(self, notifier: _Notifier) -> None:
        if notifier.linger is not None:
            notifier.linger.cancel()
            notifier.linger = None
        self._keep_until_done(asyncio.ensure_future(_unsubscribe(notifier.subscription)))

    def _keep_until_done(self, future: asyncio.Future[Any]) -> None:
        """Hold a reference to work nobody awaits any more, and collect its outcome."""
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        future.add_done_callback(_collect)

    def _on_reconnected(self) -> None:
        """Notifications sent while disconnected are lost, so every known end offset is
        stale: wake all waiters and let the next ones start fresh notifiers."""
        log.warning("reconnected to NATS; waking all waiters")
        notifiers = list(self._notifiers.values())
        self._notifiers.clear()
        for notifier in notifiers:
            notifier.wake_all()
            if notifier.users == 0:
                self._unsubscribe_later(notifier)

    async def _on_stream_deleted(self, msg: Msg) -> None:
        """Another gateway deleted a topic: forget it and wake whoever waits on it."""
        stream = msg.subject.rsplit(".", 1)[-1]
        prefix = f"{self.namespace.upper()}_"
        if not stream.startswith(prefix):
            return
        stem = stream[len(prefix) :].rsplit("_", 1)[0]
        for topic in [t for t in self._topics if stream_stem(self.namespace, t) == stem]:
            self._topics.pop(topic, None)
        for (topic, _), notifier in list(self._notifiers.items()):
            if stream_stem(self.namespace, topic) == stem:
                notifier.wake_all()

    # -- consumer groups ----------------------------------------------------------------

    async def commit_offsets(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """All of a group's offsets are one KV value, updated by compare-and-set, so a
        commit of several partitions is one transaction."""
        if not offsets:
            return
        for tp, offset in offsets.items():
            if offset < 0 or tp.partition < 0:
                raise ValueError(f"negative offset or partition in {tp}: {offset}")
        key = group_key("o", group)
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self._kv_last(self._groups_bucket, key)
            current = decode_offsets(entry.value) if entry and not entry.deleted else {}
            current.update({(tp.topic, tp.partition): offset for tp, offset in offsets.items()})
            try:
                await self._kv_put(
                    self._groups_bucket,
                    key,
                    encode_offsets(current),
                    last=entry.revision if entry else 0,
                )
                return
            except _ApiError as exc:
                if exc.err_code not in ERR_WRONG_LAST_SEQUENCE:
                    raise _public_error(exc) from exc
        raise StorageUnavailable(f"commits to group {group!r} kept conflicting")

    async def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        self._check_open()
        entry = await self._kv_get(self._groups_bucket, group_key("o", group))
        if entry is None:
            return {}
        offsets = decode_offsets(entry.value)
        return {TopicPartition(t, p): offsets[(t, p)] for t, p in sorted(offsets)}

    async def list_groups(self) -> list[str]:
        self._check_open()
        keys = await self._kv_keys(self._groups_bucket)
        entries = await asyncio.gather(*(self._kv_get(self._groups_bucket, k) for k in keys))
        return sorted(
            {
                group_from_key(key)
                for key, entry in zip(keys, entries, strict=True)
                if entry is not None and (not key.startswith("o.") or decode_offsets(entry.value))
            }
        )

    async def _forget_committed_offsets(self, topic: str) -> None:
        """A deleted topic's committed offsets go too, in every group (as in Kafka)."""
        keys = [k for k in await self._kv_keys(self._groups_bucket) if k.startswith("o.")]
        await asyncio.gather(*(self._drop_topic_offsets(key, topic) for key in keys))

    async def _drop_topic_offsets(self, key: str, topic: str) -> None:
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self._kv_get(self._groups_bucket, key)
            if entry is None:
                return
            offsets = decode_offsets(entry.value)
            remaining = {tp: offset for tp, offset in offsets.items() if tp[0] != topic}
            if len(remaining) == len(offsets):
                return
            try:
                if remaining:
                    value = encode_offsets(remaining)
                    await self._kv_put(self._groups_bucket, key, value, last=entry.revision)
                else:
                    await self._kv_delete(self._groups_bucket, key, last=entry.revision)
                return
            except _ApiError as exc:
                if exc.err_code not in ERR_WRONG_LAST_SEQUENCE:
                    raise _public_error(exc) from exc
        raise StorageUnavailable(f"offsets under {key} kept changing while a topic was deleted")

    async def delete_group(self, group: str) -> None:
        self._check_open()
        keys = [group_key("o", group), group_key("m", group)]
        entries = await asyncio.gather(*(self._kv_get(self._groups_bucket, k) for k in keys))
        if all(entry is None for entry in entries):
            raise GroupNotFound(group)
        for key in keys:
            await self._kv_purge(self._groups_bucket, key)

    async def load_group_metadata(self, group: str) -> bytes | None:
        self._check_open()
        entry = await self._kv_get(self._groups_bucket, group_key("m", group))
        return entry.value if entry else None

    async def save_group_metadata(self, group: str, metadata: bytes) -> None:
        self._check_open()
        try:
            await self._kv_put(self._groups_bucket, group_key("m", group), metadata)
        except _ApiError as exc:
            raise _public_error(exc) from exc

    # -- produce idempotency ------------------------------------------------------------

    async def load_idempotent_result(self, key: str) -> bytes | None:
        self._check_open()
        entry = await self._kv_get(self._idempotency_bucket, idempotency_key(key))
        return _unexpired_result(entry)

    async def save_idempotent_result(self, key: str, result: bytes, ttl_ms: int) -> None:
        """Save (or replace) a result. The value carries its exact expiry; the message's
        Nats-TTL (whole seconds, rounded up) lets JetStream remove it afterwards."""
        self._check_open()
        value = struct.pack(">q", now_ms() + ttl_ms) + result
        try:
            await self._kv_put(
                self._idempotency_bucket,
                idempotency_key(key),
                value,
                ttl_s=max(1, -(-ttl_ms // 1000)),
            )
        except _ApiError as exc:
            raise _public_error(exc) from exc

    async def key_value(self, name: str) -> KeyValue:
        """A KV bucket `<namespace>_<name>` of the caller's own (created if missing)."""
        self._check_open()
        bucket = f"{self.namespace}_{name}"
        await self._ensure_bucket(bucket)
        return KeyValue(self, bucket)

    # -- JetStream plumbing -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the backend is closed")

    async def _request(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> Msg:
        """A core request with NATS failures mapped: no responders means no such stream."""
        self._check_open()
        try:
            return await self._nc.request(
                subject, payload, timeout=self._timeout_s, headers=headers
            )
        except nats.errors.NoRespondersError as exc:
            raise _NoStream(subject) from exc
        except nats.errors.MaxPayloadError as exc:
            raise StorageWriteError(f"a record exceeds the NATS max_payload: {exc}") from exc
        except nats.errors.TimeoutError as exc:
            raise StorageUnavailable(
                f"no reply from JetStream on {subject} (outcome unknown)"
            ) from exc
        except nats.errors.ConnectionClosedError as exc:
            raise StorageClosed("the NATS connection is closed") from exc
        except nats.errors.Error as exc:
            raise StorageUnavailable(f"NATS request on {subject} failed: {exc!r}") from exc

    async def _api(
        self, operation: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A JetStream API request; error replies raise _ApiError."""
        subject = f"$JS.API.{operation}"
        try:
            reply = await self._request(subject, orjson.dumps(payload) if payload else b"")
        except _NoStream as exc:
            raise StorageUnavailable("JetStream is not available (no responders)") from exc
        response: dict[str, Any] = orjson.loads(reply.data)
        error = response.get("error")
        if error:
            raise _ApiError(
                int(error.get("code", 500)),
                int(error.get("err_code", 0)),
                error.get("description", ""),
            )
        return response

    async def _on_inbox(self, msg: Msg) -> None:
        queue = self._inbox_queues.get(msg.subject.rsplit(".", 1)[-1])
        if queue is not None:
            queue.put_nowait(msg)

    async def _direct_get(
        self, topic: str, partition: int, stream: str, request: Mapping[str, Any]
    ) -> list[Msg]:
        """A batch direct get: messages stream to our shared inbox, ending in a status."""
        self._check_open()
        token = str(next(self._inbox_tokens))
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._inbox_queues[token] = queue
        messages: list[Msg] = []
        try:
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{stream}",
                orjson.dumps(request),
                reply=f"{self._inbox_prefix}.{token}",
            )
            async with asyncio.timeout(self._timeout_s):
                while True:
                    msg = await queue.get()
                    status = (msg.headers or {}).get("Status")
                    if status is None:
                        messages.append(msg)
                        continue
                    if status in ("204", "404"):
                        return messages
                    if status == "503":
                        raise await self._missing_stream(topic, partition)
                    raise StorageUnavailable(f"direct get on {stream} answered {status}")
        except TimeoutError as exc:
            raise StorageUnavailable(f"no reply to a direct get on {stream}") from exc
        except nats.errors.Error as exc:
            raise StorageUnavailable(f"direct get on {stream} failed: {exc!r}") from exc
        finally:
            del self._inbox_queues[token]

    # -- key-value buckets (the KV protocol over the raw API, for revisions and TTLs) ----

    async def _ensure_bucket(self, bucket: str) -> None:
        config = {
            "name": f"KV_{bucket}",
            "subjects": [f"$KV.{bucket}.>"],
            "retention": "limits",
            "discard": "new",
            "storage": "file",
            "num_replicas": self.replicas,
            "max_msgs_per_subject": 1,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msg_size": -1,
            "max_consumers": -1,
            "duplicate_window": 120 * 1_000_000_000,
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "allow_direct": False,
            "allow_msg_ttl": True,
        }
        try:
            await self._api(f"STREAM.INFO.KV_{bucket}")
        except _ApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise _public_error(exc) from exc
            try:
                await self._api(f"STREAM.CREATE.KV_{bucket}", config)
            except _ApiError as create_error:
                raise _public_error(create_error) from create_error

    async def _kv_get(self, bucket: str, key: str) -> _KvEntry | None:
        """The key's current value from the leader, or None if absent or deleted."""
        entry = await self._kv_last(bucket, key)
        return None if entry is None or entry.deleted else entry

    async def _kv_last(self, bucket: str, key: str) -> _KvEntry | None:
        """The key's last message (a delete marker included), or None if it has none."""
        try:
            reply = await self._api(
                f"STREAM.MSG.GET.KV_{bucket}", {"last_by_subj": f"$KV.{bucket}.{key}"}
            )
        except _ApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                return None
            raise _public_error(exc) from exc
        message = reply["message"]
        raw_headers = base64.b64decode(message.get("hdrs") or b"")
        deleted = f"{KV_OPERATION}:".encode() in raw_headers
        return _KvEntry(base64.b64decode(message.get("data") or b""), int(message["seq"]), deleted)

    async def _kv_put(
        self,
        bucket: str,
        key: str,
        value: bytes,
        *,
        last: int | None = None,
        ttl_s: int | None = None,
    ) -> int:
        """Write a key; with `last`, only if its current revision is `last` (0: absent)."""
        headers: dict[str, str] = {}
        if last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(last)
        if ttl_s is not None:
            headers["Nats-TTL"] = f"{ttl_s}s"
        try:
            reply = await self._request(f"$KV.{bucket}.{key}", value, headers or None)
        except _NoStream as exc:
            raise StorageUnavailable(f"KV bucket {bucket} is not available") from exc
        return int(_pub_ack(reply)["seq"])

    async def _kv_delete(self, bucket: str, key: str, *, last: int) -> None:
        headers = {KV_OPERATION: "DEL", "Nats-Expected-Last-Subject-Sequence": str(last)}
        try:
            reply = await self._request(f"$KV.{bucket}.{key}", b"", headers)
        except _NoStream as exc:
            raise StorageUnavailable(f"KV bucket {bucket} is not available") from exc
        _pub_ack(reply)

    async def _kv_purge(self, bucket: str, key: str) -> None:
        """Remove every message of a key, leaving no marker (so it drops out of listings)."""
        try:
            await self._api(f"STREAM.PURGE.KV_{bucket}", {"filter": f"$KV.{bucket}.{key}"})
        except _ApiError as exc:
            raise _public_error(exc) from exc

    async def _kv_keys(self, bucket: str) -> list[str]:
        """Keys with a message (deleted keys included: callers get() each)."""
        prefix = f"$KV.{bucket}."
        keys: list[str] = []
        offset = 0
        while True:
            try:
                info = await self._api(
                    f"STREAM.INFO.KV_{bucket}", {"subjects_filter": prefix + ">", "offset": offset}
                )
            except _ApiError as exc:
                raise _public_error(exc) from exc
            subjects: dict[str, int] = info["state"].get("subjects") or {}
            keys.extend(subject[len(prefix) :] for subject in subjects)
            total = int(info.get("total", 0))
            offset += len(subjects)
            if not subjects or offset >= total:
                return keys


class RevisionConflict(StorageError):
    """A KV write whose revision check failed: someone else wrote the key first."""

    retriable = True


@dataclass(frozen=True, slots=True)
class KvChange:
    """One change seen by a watch: `value` is None when the key was deleted or purged."""

    key: str
    value: bytes | None
    revision: int


class KeyValue:
    """One KV bucket for callers outside storage (the gateway's group membership): reads
    from the leader, writes with a revision check and an optional TTL, and a watch.

    Create with `await backend.key_value(name)`; the bucket is made if missing, with the
    backend's replicas, in its namespace.
    """

    def __init__(self, backend: JetStreamBackend, bucket: str) -> None:
        self._backend = backend
        self.bucket = bucket

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and its revision, or None when the key is absent or deleted."""
        entry = await self._backend._kv_get(self.bucket, key)
        return None if entry is None else (entry.value, entry.revision)

    async def read(self, key: str) -> tuple[bytes | None, int]:
        """The value (None: absent or deleted) and the key's last revision, a delete
        marker's included (0: never written), from one read: what a revision check needs."""
        entry = await self._backend._kv_last(self.bucket, key)
        if entry is None:
            return None, 0
        return (None if entry.deleted else entry.value), entry.revision

    async def put(
        self, key: str, value: bytes, *, last: int | None = None, ttl_s: int | None = None
    ) -> int:
        """Write and return the new revision; with `last`, only if the key is still at that
        revision (0: never written), else RevisionConflict. `ttl_s`: JetStream removes the
        value that long after this write unless it is written again."""
        try:
            return await self._backend._kv_put(self.bucket, key, value, last=last, ttl_s=ttl_s)
        except _ApiError as exc:
            if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                raise RevisionConflict(f"{self.bucket}/{key} changed (expected {last})") from exc
            raise _public_error(exc) from exc

    async def purge(self, key: str) -> None:
        await self._backend._kv_purge(self.bucket, key)

    async def keys(self, prefix: str) -> list[str]:
        return [k for k in await self._backend._kv_keys(self.bucket) if k.startswith(prefix)]

    async def watch(
        self, prefix: str, on_change: Callable[[KvChange], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Call `on_change` for every later change of a key under `prefix` (a KV token
        prefix ending in "."), in order; returns the function that stops the watch.

        An ordered push consumer: the server pushes each change (no polling), and after a
        reconnect the client resumes it where it left off.
        """
        self._backend._check_open()

        async def deliver(msg: Msg) -> None:
            operation = (msg.headers or {}).get(KV_OPERATION)
            key = msg.subject.removeprefix(f"$KV.{self.bucket}.")
            value = None if operation in ("DEL", "PURGE") else msg.data
            await on_change(KvChange(key, value, msg.metadata.sequence.stream))

        try:
            subscription = await self._backend._nc.jetstream().subscribe(
                f"$KV.{self.bucket}.{prefix}>",
                stream=f"KV_{self.bucket}",
                cb=deliver,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                idle_heartbeat=2.0,
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise StorageUnavailable(f"cannot watch {self.bucket}: {exc!r}") from exc

        async def stop() -> None:
            await _unsubscribe(subscription)

        return stop


# -- helpers ------------------------------------------------------------------------------


def _pub_ack(reply: Msg) -> dict[str, Any]:
    response: dict[str, Any] = orjson.loads(reply.data)
    error = response.get("error")
    if error:
        raise _ApiError(
            int(error.get("code", 500)), int(error.get("err_code", 0)), error.get("description", "")
        )
    return response


def _unexpired_result(entry: _KvEntry | None) -> bytes | None:
    """An idempotency entry is the 8-byte expiry (ms) followed by the stored result."""
    if entry is None or len(entry.value) < 8:
        return None
    (expires_ms,) = struct.unpack_from(">q", entry.value)
    return entry.value[8:] if expires_ms > now_ms() else None


def _offsets(state: Mapping[str, Any]) -> tuple[int, int]:
    """(log_start_offset, end_offset) of a stream state. A new stream has first_seq 0; a
    purged one has first_seq = last_seq + 1; otherwise the first stored message's offset."""
    first_seq = int(state.get("first_seq", 0))
    last_seq = int(state.get("last_seq", 0))
    return max(first_seq - 1, 0), last_seq


def _sequence(msg: Msg) -> int:
    return int((msg.headers or {})["Nats-Sequence"])


def _to_record(msg: Msg) -> Record:
    headers = msg.headers or {}
    return decode_record(
        int(headers["Nats-Sequence"]), parse_time_ms(headers["Nats-Time-Stamp"]), headers, msg.data
    )


def _api_message_to_record(message: Mapping[str, Any]) -> Record:
    """A STREAM.MSG.GET message (JSON with base64 data and raw header block)."""
    raw = base64.b64decode(message.get("hdrs") or b"")
    headers = dict(_parse_header_block(raw))
    data = base64.b64decode(message.get("data") or b"")
    return decode_record(int(message["seq"]), parse_time_ms(message["time"]), headers, data)


def _parse_header_block(raw: bytes) -> Iterable[tuple[str, str]]:
    """`NATS/1.0\\r\\nName: value\\r\\n...\\r\\n\\r\\n` -> (name, value) pairs."""
    for line in raw.decode("utf-8", errors="replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            yield name.strip(), value.strip()


def _encode_topic(info: TopicInfo, state: str) -> bytes:
    config = info.config
    return json.dumps(
        {
            "state": state,
            "name": info.name,
            "partitions": info.partitions,
            "retention.ms": config.retention_ms,
            "retention.bytes": config.retention_bytes,
            "segment.bytes": config.segment_bytes,
            "segment.ms": config.segment_ms,
        },
        separators=(",", ":"),
    ).encode()


def _decode_topic(value: bytes) -> tuple[str | None, TopicInfo | None]:
    try:
        doc = json.loads(value)
        config = TopicConfig(
            retention_ms=doc["retention.ms"],
            retention_bytes=doc["retention.bytes"],
            segment_bytes=doc["segment.bytes"],
            segment_ms=doc["segment.ms"],
        )
        return str(doc["state"]), TopicInfo(str(doc["name"]), int(doc["partitions"]), config)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable topic metadata %r: %s", value[:200], exc)
        return None, None


def _collect(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("background JetStream call failed: %r", future.exception())


async def _unsubscribe(subscription: Subscription) -> None:
    with contextlib.suppress(nats.errors.Error):
        await subscription.unsubscribe()
