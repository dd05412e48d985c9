"""The jetstream backend: storage.backend.Backend over a NATS JetStream cluster.

Layout and record encoding are in `storage.jetstream.codec`: one stream per topic
partition, offset = stream sequence - 1. Key-value buckets (`storage.jetstream.kv`, the
KV protocol over the raw API so every write can carry a revision check or a TTL):

    <ns>_topics       key = the topic's stream stem; JSON {state, name, partitions, config}
                      with state creating -> ready -> deleting, changed by compare-and-set
    <ns>_groups       o.<base64url group> = all the group's committed offsets (one value,
                      so a commit is one transaction); m.<base64url group> = its metadata
    <ns>_idempotency  sha256(key) = 8-byte expiry (ms) + result, with a Nats-TTL
    <ns>_members      consumer-group membership, written by the gateway through
                      `key_value("members")`
    <ns>_schemas      key = the topic's stream stem; JSON {topic, compatibility,
                      last_version, versions: [{version, registered_at_ms, schema}]}, all
                      of a topic's schema history in one value, changed by compare-and-set
                      (so a registration checked against version n lands only on n). Each
                      gateway keeps the newest version per topic in memory for produce and
                      forgets it when a watch on the bucket sees the key change.

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
  outcome; it raises StorageUnavailable. An append with a produce tag (an
  Idempotency-Key's) carries it as its last message's Nats-Msg-Id
  (storage.jetstream.dedupe), so the stream stores it once within its duplicate window
  (the idempotency window, default 24 h, at most the topic's retention), whichever
  gateway retries it; the retry gets the first append's offsets. Streams are created with
  that window; streams made by older versions keep JetStream's 2-minute default.
- Reads use batch direct get, which any replica may answer; a replica that lags returns
  a shorter read (never a wrong one), and the leader is asked when a replica has nothing.
  Appends, offset_for_timestamp and partition_info ask the leader.

Gateways share nothing but the cluster: topic metadata is read from KV (get_topic and
list_topics always; the data path caches it until a stream turns out to be missing or a
stream-deleted advisory arrives). wait_for_records parks futures on the notifiers of
`storage.jetstream.notify` (one subscription per partition, no polling); a reconnect, a
deleted stream or close() wakes every waiter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from nats.aio.msg import Msg

from storage.codec import encode_records, take_batches
from storage.errors import (
    AppendTooLarge,
    DiskFull,
    GroupNotFound,
    OffsetOutOfRange,
    PartitionNotFound,
    ProduceTagConflict,
    SchemaVersionConflict,
    SchemaVersionNotFound,
    StorageError,
    StorageUnavailable,
    TopicExists,
    TopicNotFound,
)
from storage.jetstream.api import (
    ERR_BATCH_DUPLICATE_MSG_ID,
    ERR_BATCH_TOO_LARGE,
    ERR_MSG_ID_IN_PROCESS,
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    ERR_WRONG_LAST_SEQUENCE,
    MAX_ATOMIC_BATCH,
    ApiError,
    JetStreamApi,
    NoStream,
    pub_ack,
    public_error,
)
from storage.jetstream.codec import (
    decode_offsets,
    decode_record,
    encode_offsets,
    format_time_ms,
    group_from_key,
    group_key,
    idempotency_key,
    parse_time_ms,
    record_headers,
    record_size,
    record_subject,
    stream_config,
    stream_name,
    stream_stem,
    validate_namespace,
)
from storage.jetstream.dedupe import find_tagged, is_request, tag_headers
from storage.jetstream.kv import KeyValue, KvBucket, KvEntry
from storage.jetstream.notify import Notifiers
from storage.names import validate_topic_name
from storage.partition import now_ms
from storage.types import (
    AppendResult,
    IdempotencyWindow,
    NewRecord,
    PartitionInfo,
    ProduceTag,
    Record,
    SchemaVersion,
    TopicConfig,
    TopicInfo,
    TopicPartition,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# ADR-50: at most 50 batches in flight per stream (all clients); leave room for others.
BATCHES_IN_FLIGHT_PER_PARTITION = 8
MAX_READ_BATCH = 1000
# What a stored message costs beyond key and value in a direct get's max_bytes.
MESSAGE_OVERHEAD_BYTES = 512
DEFAULT_REQUEST_TIMEOUT_S = 5.0
MAX_CAS_ATTEMPTS = 32
# A tagged append that meets its tag's first copy still being stored waits for it.
MAX_IN_PROCESS_WAITS = 200
IN_PROCESS_WAIT_S = 0.05
CREATE_CONCURRENCY = 16
MEMBERS_BUCKET = "members"
SCHEMAS_BUCKET = "schemas"

STATE_READY = "ready"
STATE_CREATING = "creating"
STATE_DELETING = "deleting"


class JetStreamBackend:
    """storage.backend.Backend over JetStream. Create with `await JetStreamBackend.open(...)`."""

    def __init__(
        self,
        js: JetStreamApi,
        replicas: int,
        namespace: str,
        idempotency: IdempotencyWindow | None = None,
    ) -> None:
        self._js = js
        self.replicas = replicas
        self.namespace = namespace
        self.idempotency = idempotency or IdempotencyWindow()
        self.max_append_records = MAX_ATOMIC_BATCH
        self._topic_kv = KvBucket(js, f"{namespace}_topics")
        self._group_kv = KvBucket(js, f"{namespace}_groups")
        self._idempotency_kv = KvBucket(js, f"{namespace}_idempotency")
        self._schema_kv = KvBucket(js, f"{namespace}_{SCHEMAS_BUCKET}")
        # topic -> its newest schema version (None: none), dropped when the key changes;
        # `_schema_changes` counts changes, so a read that raced one is not cached
        self._latest_schemas: dict[str, SchemaVersion | None] = {}
        self._schema_changes = 0
        self._topics: dict[str, TopicInfo] = {}
        self._batch_slots: dict[str, asyncio.Semaphore] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._notifiers = Notifiers(js, namespace, self._end_offset, self._keep_until_done)

    @classmethod
    async def open(
        cls,
        servers: list[str],
        replicas: int = 1,
        *,
        namespace: str = "logway",
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        connect_timeout_s: float = 5.0,
        idempotency: IdempotencyWindow | None = None,
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

        def on_reconnected() -> None:
            if holder:
                holder[0]._on_reconnected()

        js = await JetStreamApi.connect(
            servers,
            request_timeout_s=request_timeout_s,
            connect_timeout_s=connect_timeout_s,
            on_reconnected=on_reconnected,
        )
        backend = cls(js, replicas, namespace, idempotency)
        holder.append(backend)
        try:
            await backend._start()
        except BaseException:
            await backend.close()
            raise
        return backend

    async def _start(self) -> None:
        await self._js.start()
        await self._js.subscribe("$JS.EVENT.ADVISORY.STREAM.DELETED.*", self._on_stream_deleted)
        await self._account_info()
        # <ns>_members is the gateway's group membership (KeyValue): made here, at startup,
        # because a new R3 stream may not answer within a request timeout while it elects.
        members = KvBucket(self._js, f"{self.namespace}_{MEMBERS_BUCKET}")
        for bucket in (
            self._topic_kv,
            self._group_kv,
            self._idempotency_kv,
            self._schema_kv,
            members,
        ):
            await bucket.create_if_missing(self.replicas)
        await self._js.subscribe_new(
            f"$KV.{self._schema_kv.name}.>", f"KV_{self._schema_kv.name}", self._on_schema_change
        )

    async def close(self) -> None:
        """Wake every waiter and close the connection. Appends are never buffered here."""
        if self._js.closed:
            return
        self._notifiers.close()
        await self._js.close()

    async def check_writable(self) -> None:
        """Connected, and JetStream answers (which needs a meta leader) with storage left."""
        self._js.check_open()
        if not self._js.is_connected:
            raise StorageUnavailable("not connected to NATS")
        info = await self._account_info()
        limits = info.get("limits", {})
        max_storage = limits.get("max_storage", -1)
        if max_storage > 0 and info.get("storage", 0) >= max_storage:
            raise DiskFull("the JetStream account's storage limit is reached")

    async def _account_info(self) -> dict[str, Any]:
        """$JS.API.INFO: it needs the meta leader, so it is also a cluster health check."""
        try:
            return await self._js.call("INFO")
        except ApiError as exc:
            raise public_error(exc) from exc

    # -- topics -------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, config: TopicConfig) -> bool:
        """Claim the name in KV ("creating"), create the partitions' streams, mark "ready".

        The claim is a compare-and-set, so gateways creating the same topic at once agree
        on one outcome. Streams left by a delete that died half-way are removed before
        new ones are made, so a re-created topic starts at offset 0.
        """
        validate_topic_name(name)
        info = TopicInfo(name, partitions, config)
        self._js.check_open()
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self._topic_kv.last(self._topic_key(name))
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
                revision = await self._topic_kv.put(
                    self._topic_key(name),
                    claim,
                    last=entry.revision if entry else 0,
                )
            except ApiError as exc:
                if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                    continue
                raise public_error(exc) from exc
            if state == STATE_DELETING and existing is not None:
                await self._delete_streams(name, existing.partitions)
            await self._schema_kv.purge(self._topic_key(name))  # a half-done delete's schemas
            await self._create_streams(info)
            try:
                await self._topic_kv.put(
                    self._topic_key(name),
                    _encode_topic(info, STATE_READY),
                    last=revision,
                )
            except ApiError as exc:
                if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                    continue  # another gateway finished it first: the next pass sees "ready"
                raise public_error(exc) from exc
            self._topics[name] = info
            return True
        raise StorageUnavailable(f"topic {name!r} kept changing while being created")

    async def _create_streams(self, info: TopicInfo) -> None:
        slots = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def create(partition: int) -> None:
            config = stream_config(
                self.namespace,
                info.name,
                partition,
                info.config,
                self.replicas,
                self.idempotency.window_ms,
            )
            async with slots:
                try:
                    await self._js.call(f"STREAM.CREATE.{config['name']}", config)
                except ApiError as exc:
                    raise public_error(exc) from exc

        await asyncio.gather(*(create(p) for p in range(info.partitions)))

    async def _delete_streams(self, name: str, partitions: int) -> None:
        slots = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def delete(partition: int) -> None:
            async with slots:
                try:
                    await self._js.call(
                        f"STREAM.DELETE.{stream_name(self.namespace, name, partition)}"
                    )
                except ApiError as exc:
                    if exc.err_code != ERR_STREAM_NOT_FOUND:
                        raise public_error(exc) from exc

        await asyncio.gather(*(delete(p) for p in range(partitions)))

    async def delete_topic(self, name: str) -> None:
        """Mark "deleting" (compare-and-set), delete the streams, then the KV entry."""
        validate_topic_name(name)
        self._js.check_open()
        entry = await self._topic_kv.get(self._topic_key(name))
        state, info = _decode_topic(entry.value) if entry else (None, None)
        if entry is None or info is None or state != STATE_READY:
            raise TopicNotFound(name)
        try:
            revision = await self._topic_kv.put(
                self._topic_key(name),
                _encode_topic(info, STATE_DELETING),
                last=entry.revision,
            )
        except ApiError as exc:
            if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                raise TopicNotFound(name) from exc  # deleted or re-created under us
            raise public_error(exc) from exc
        self._forget_topic(name)
        await self._delete_streams(name, info.partitions)
        await self._forget_committed_offsets(name)
        await self._schema_kv.purge(self._topic_key(name))
        with contextlib.suppress(ApiError):  # a creator may already have taken the name over
            await self._topic_kv.delete(self._topic_key(name), last=revision)

    async def list_topics(self) -> list[TopicInfo]:
        self._js.check_open()
        keys = await self._topic_kv.keys()
        entries = await asyncio.gather(*(self._topic_kv.get(k) for k in keys))
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
        self._js.check_open()
        entry = await self._topic_kv.get(self._topic_key(name))
        state, info = _decode_topic(entry.value) if entry else (None, None)
        if info is None or state != STATE_READY:
            self._topics.pop(name, None)
            raise TopicNotFound(name)
        self._topics[name] = info
        return info

    async def _stream(self, topic: str, partition: int) -> str:
        self._js.check_open()
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
        self._notifiers.wake_topics(lambda topic: topic == name)

    async def partition_info(self, topic: str, partition: int) -> PartitionInfo:
        stream = await self._stream(topic, partition)
        state = await self._stream_state(topic, partition, stream)
        log_start_offset, end_offset = _offsets(state)
        return PartitionInfo(partition, log_start_offset, end_offset, int(state.get("bytes", 0)))

    async def _stream_state(self, topic: str, partition: int, stream: str) -> dict[str, Any]:
        try:
            info = await self._js.call(f"STREAM.INFO.{stream}")
        except ApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise await self._missing_stream(topic, partition) from exc
            raise public_error(exc) from exc
        state: dict[str, Any] = info["state"]
        return state

    # -- records ------------------------------------------------------------------------

    async def append(
        self,
        topic: str,
        partition: int,
        records: Sequence[NewRecord],
        tag: ProduceTag | None = None,
    ) -> AppendResult:
        """One message, or one atomic batch; returns after JetStream acknowledged it. With
        a tag the stream refuses a second copy (storage.jetstream.dedupe), and the first
        one's offsets are returned."""
        if not records:
            raise ValueError("append needs at least one record")
        if len(records) > self.max_append_records:
            raise AppendTooLarge(len(records), self.max_append_records)
        stream = await self._stream(topic, partition)
        for _ in range(MAX_IN_PROCESS_WAITS):
            try:
                return await self._append_once(topic, partition, stream, records, tag)
            except ApiError as exc:  # the same tag's first copy is being stored: ask again
                if exc.err_code != ERR_MSG_ID_IN_PROCESS:
                    raise public_error(exc) from exc
            await asyncio.sleep(IN_PROCESS_WAIT_S)
        raise StorageUnavailable(f"an append with the same Idempotency-Key to {stream} is stuck")

    async def _append_once(
        self,
        topic: str,
        partition: int,
        stream: str,
        records: Sequence[NewRecord],
        tag: ProduceTag | None,
    ) -> AppendResult:
        subject = record_subject(self.namespace, topic, partition)
        # A caller cancelled half-way through a batch would leave the server holding an
        # open batch (and one of its 50 per stream) for 10 s: the publish always finishes.
        publish = asyncio.ensure_future(self._publish(stream, subject, records, tag))
        self._keep_until_done(publish)
        try:
            ack = await asyncio.shield(publish)
        except NoStream:
            raise await self._missing_stream(topic, partition) from None
        except StorageUnavailable as exc:
            # A stream deleted under an open batch never answers the commit.
            if not await self._topic_exists(topic, partition):
                raise await self._missing_stream(topic, partition) from exc
            raise
        except ApiError as exc:
            if exc.err_code == ERR_BATCH_TOO_LARGE:
                raise AppendTooLarge(len(records), self.max_append_records) from exc
            if exc.err_code == ERR_MSG_ID_IN_PROCESS and tag is not None:
                raise
            if exc.err_code != ERR_BATCH_DUPLICATE_MSG_ID or tag is None:
                raise public_error(exc) from exc
            return await self._first_append(topic, partition, stream, tag, len(records), None)
        if tag is not None and ack.get("duplicate"):
            return await self._first_append(
                topic, partition, stream, tag, len(records), int(ack["seq"])
            )
        last_sequence = int(ack["seq"])
        timestamp_ms = await self._message_time(stream, last_sequence)
        return AppendResult(last_sequence - len(records), len(records), timestamp_ms)

    async def _first_append(
        self,
        topic: str,
        partition: int,
        stream: str,
        tag: ProduceTag,
        count: int,
        last_sequence: int | None,
    ) -> AppendResult:
        """The append the stream refused as a duplicate of `tag`: its last message is at
        `last_sequence` (a single message's duplicate ack says where) or found by its id."""
        if last_sequence is not None:
            try:
                reply = await self._js.call(f"STREAM.MSG.GET.{stream}", {"seq": last_sequence})
            except ApiError as exc:
                raise public_error(exc) from exc
            message = reply["message"]
            headers = dict(_parse_header_block(base64.b64decode(message.get("hdrs") or b"")))
            timestamp_ms = parse_time_ms(message["time"])
        else:
            state = await self._stream_state(topic, partition, stream)
            since_ms = now_ms() - self.idempotency.window_ms
            found = await find_tagged(self._js, stream, state, tag, since_ms)
            if found is None:
                raise StorageUnavailable(
                    f"{stream} refused a duplicate append whose first copy was not found"
                )
            headers = found.headers or {}
            last_sequence = _sequence(found)
            timestamp_ms = parse_time_ms(headers["Nats-Time-Stamp"])
        if not is_request(headers, tag):
            raise ProduceTagConflict(f"{topic}/{partition}")
        return AppendResult(last_sequence - count, count, timestamp_ms)

    async def tagged_appends(self, topic: str, tag: ProduceTag) -> dict[int, AppendResult]:
        """Nothing known without reading every stream back (Backend.tagged_appends)."""
        return {}

    def start_append(
        self,
        topic: str,
        partition: int,
        records: Sequence[NewRecord],
        tag: ProduceTag | None = None,
    ) -> asyncio.Future[AppendResult]:
        """`append` as a task of its own: a caller that stops awaiting the future (a
        cancelled request) does not stop the append."""
        append = asyncio.ensure_future(self.append(topic, partition, records, tag))
        self._keep_until_done(append)
        return asyncio.shield(append)

    async def _publish(
        self, stream: str, subject: str, records: Sequence[NewRecord], tag: ProduceTag | None
    ) -> dict[str, Any]:
        messages = [(record.value, record_headers(record)) for record in records]
        if tag is not None:
            messages[-1][1].update(tag_headers(tag))
        if len(records) == 1:
            value, headers = messages[0]
            return pub_ack(await self._js.request(subject, value, headers))
        slots = self._batch_slots.setdefault(
            stream, asyncio.Semaphore(BATCHES_IN_FLIGHT_PER_PARTITION)
        )
        async with slots:
            return await self._js.publish_batch(subject, messages)

    async def _message_time(self, stream: str, sequence: int) -> int:
        """The stream's time of a stored message, asked of the leader (which has it).

        The records are durable by now, so failing the append would invite a duplicating
        retry: if the leader cannot answer (it just changed), the local clock stands in."""
        try:
            reply = await self._js.call(f"STREAM.MSG.GET.{stream}", {"seq": sequence})
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
        try:
            messages = await self._js.direct_get(stream, request)
        except NoStream:
            raise await self._missing_stream(topic, partition) from None
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

    async def read_batches(self, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
        """JetStream keeps records one by one: read them and encode them as stored batches."""
        records = await self.read(topic, partition, offset, MAX_READ_BATCH, max_bytes)
        return take_batches(encode_records(records), max_bytes)

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
            reply = await self._js.call(f"STREAM.MSG.GET.{stream}", {"seq": offset + 1})
        except ApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                return []  # removed by retention between the two requests: the next read says so
            raise public_error(exc) from exc
        return [_api_message_to_record(reply["message"])]

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The leader's first message at or after the time (JetStream's start_time get)."""
        stream = await self._stream(topic, partition)
        try:
            reply = await self._js.call(
                f"STREAM.MSG.GET.{stream}", {"start_time": format_time_ms(max(0, timestamp_ms))}
            )
        except ApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                raise await self._missing_stream(topic, partition) from exc
            if exc.err_code != ERR_NO_MESSAGE:
                raise public_error(exc) from exc
            return _offsets(await self._stream_state(topic, partition, stream))[1]
        return int(reply["message"]["seq"]) - 1

    async def wait_for_records(
        self, topic: str, positions: Mapping[int, int], timeout_s: float | None
    ) -> bool:
        """Park one future on the partitions' notifiers (RePublish subscriptions, shared)."""
        if self._js.closed:
            return True
        try:
            for p in positions:
                await self._stream(topic, p)
        except TopicNotFound:
            return True
        return await self._notifiers.wait(topic, positions, timeout_s)

    async def _end_offset(self, topic: str, partition: int) -> int:
        stream = stream_name(self.namespace, topic, partition)
        return _offsets(await self._stream_state(topic, partition, stream))[1]

    def _on_reconnected(self) -> None:
        """Notifications sent while disconnected are lost, so every known end offset is
        stale: wake all waiters and let the next ones start fresh notifiers."""
        log.warning("reconnected to NATS; waking all waiters")
        self._notifiers.reset()
        self._forget_schemas()

    def _keep_until_done(self, future: asyncio.Future[Any]) -> None:
        """Hold a reference to work nobody awaits any more, and collect its outcome."""
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        future.add_done_callback(_collect)

    async def _on_stream_deleted(self, msg: Msg) -> None:
        """Another gateway deleted a topic: forget it and wake whoever waits on it."""
        stream = msg.subject.rsplit(".", 1)[-1]
        prefix = f"{self.namespace.upper()}_"
        if not stream.startswith(prefix):
            return
        stem = stream[len(prefix) :].rsplit("_", 1)[0]
        for topic in [t for t in self._topics if stream_stem(self.namespace, t) == stem]:
            self._topics.pop(topic, None)
        self._notifiers.wake_topics(lambda topic: stream_stem(self.namespace, topic) == stem)

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
            entry = await self._group_kv.last(key)
            current = decode_offsets(entry.value) if entry and not entry.deleted else {}
            current.update({(tp.topic, tp.partition): offset for tp, offset in offsets.items()})
            try:
                await self._group_kv.put(
                    key,
                    encode_offsets(current),
                    last=entry.revision if entry else 0,
                )
                return
            except ApiError as exc:
                if exc.err_code not in ERR_WRONG_LAST_SEQUENCE:
                    raise public_error(exc) from exc
        raise StorageUnavailable(f"commits to group {group!r} kept conflicting")

    async def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        self._js.check_open()
        entry = await self._group_kv.get(group_key("o", group))
        if entry is None:
            return {}
        offsets = decode_offsets(entry.value)
        return {TopicPartition(t, p): offsets[(t, p)] for t, p in sorted(offsets)}

    async def list_groups(self) -> list[str]:
        self._js.check_open()
        keys = await self._group_kv.keys()
        entries = await asyncio.gather(*(self._group_kv.get(k) for k in keys))
        return sorted(
            {
                group_from_key(key)
                for key, entry in zip(keys, entries, strict=True)
                if entry is not None and (not key.startswith("o.") or decode_offsets(entry.value))
            }
        )

    async def _forget_committed_offsets(self, topic: str) -> None:
        """A deleted topic's committed offsets go too, in every group (as in Kafka)."""
        keys = [k for k in await self._group_kv.keys() if k.startswith("o.")]
        await asyncio.gather(*(self._drop_topic_offsets(key, topic) for key in keys))

    async def _drop_topic_offsets(self, key: str, topic: str) -> None:
        for _ in range(MAX_CAS_ATTEMPTS):
            entry = await self._group_kv.get(key)
            if entry is None:
                return
            offsets = decode_offsets(entry.value)
            remaining = {tp: offset for tp, offset in offsets.items() if tp[0] != topic}
            if len(remaining) == len(offsets):
                return
            try:
                if remaining:
                    value = encode_offsets(remaining)
                    await self._group_kv.put(key, value, last=entry.revision)
                else:
                    await self._group_kv.delete(key, last=entry.revision)
                return
            except ApiError as exc:
                if exc.err_code not in ERR_WRONG_LAST_SEQUENCE:
                    raise public_error(exc) from exc
        raise StorageUnavailable(f"offsets under {key} kept changing while a topic was deleted")

    async def delete_group(self, group: str) -> None:
        self._js.check_open()
        keys = [group_key("o", group), group_key("m", group)]
        entries = await asyncio.gather(*(self._group_kv.get(k) for k in keys))
        if all(entry is None for entry in entries):
            raise GroupNotFound(group)
        for key in keys:
            await self._group_kv.purge(key)

    async def load_group_metadata(self, group: str) -> bytes | None:
        self._js.check_open()
        entry = await self._group_kv.get(group_key("m", group))
        return entry.value if entry else None

    async def save_group_metadata(self, group: str, metadata: bytes) -> None:
        self._js.check_open()
        try:
            await self._group_kv.put(group_key("m", group), metadata)
        except ApiError as exc:
            raise public_error(exc) from exc

    # -- produce idempotency ------------------------------------------------------------

    async def load_idempotent_result(self, key: str) -> bytes | None:
        self._js.check_open()
        entry = await self._idempotency_kv.get(idempotency_key(key))
        return _unexpired_result(entry)

    async def save_idempotent_result(self, key: str, result: bytes, ttl_ms: int) -> None:
        """Save (or replace) a result. The value carries its exact expiry; the message's
        Nats-TTL (whole seconds, rounded up) lets JetStream remove it afterwards."""
        self._js.check_open()
        value = struct.pack(">q", now_ms() + ttl_ms) + result
        try:
            await self._idempotency_kv.put(
                idempotency_key(key),
                value,
                ttl_s=max(1, -(-ttl_ms // 1000)),
            )
        except ApiError as exc:
            raise public_error(exc) from exc

    # -- topic schemas ------------------------------------------------------------------

    async def schema_versions(self, topic: str) -> list[SchemaVersion]:
        await self.get_topic(topic)
        history, _ = await self._schema_history(topic)
        return _schema_versions(history)

    async def latest_schema(self, topic: str) -> SchemaVersion | None:
        if topic in self._latest_schemas:
            return self._latest_schemas[topic]
        changes = self._schema_changes
        history, _ = await self._schema_history(topic)
        versions = _schema_versions(history)
        latest = versions[-1] if versions else None
        if changes == self._schema_changes:
            self._latest_schemas[topic] = latest
        return latest

    async def add_schema_version(self, topic: str, schema: bytes, latest: int) -> SchemaVersion:
        registered_at_ms = now_ms()

        def change(history: dict[str, Any]) -> SchemaVersion:
            versions = history["versions"]
            newest = versions[-1]["version"] if versions else 0
            if newest != latest:
                raise SchemaVersionConflict(topic, latest, newest)
            added = SchemaVersion(
                max(newest, history["last_version"]) + 1, schema, registered_at_ms
            )
            versions.append(
                {
                    "version": added.version,
                    "registered_at_ms": registered_at_ms,
                    "schema": schema.decode(),
                }
            )
            history["last_version"] = added.version
            return added

        return await self._change_schemas(topic, change)

    async def delete_schema_version(self, topic: str, version: int) -> None:
        def change(history: dict[str, Any]) -> None:
            kept = [v["version"] for v in history["versions"]]
            if version not in kept:
                raise SchemaVersionNotFound(topic, version)
            if version != kept[-1]:
                raise SchemaVersionConflict(topic, version, kept[-1])
            history["versions"].pop()

        await self._change_schemas(topic, change)

    async def schema_compatibility(self, topic: str) -> str | None:
        await self.get_topic(topic)
        history, _ = await self._schema_history(topic)
        compatibility: str | None = history["compatibility"]
        return compatibility

    async def set_schema_compatibility(self, topic: str, compatibility: str | None) -> None:
        def change(history: dict[str, Any]) -> None:
            history["compatibility"] = compatibility

        await self._change_schemas(topic, change)

    async def _schema_history(self, topic: str) -> tuple[dict[str, Any], KvEntry | None]:
        self._js.check_open()
        entry = await self._schema_kv.get(self._topic_key(topic))
        if entry is None:
            return {"topic": topic, "compatibility": None, "last_version": 0, "versions": []}, None
        history: dict[str, Any] = json.loads(entry.value)
        return history, entry

    async def _change_schemas(self, topic: str, change: Callable[[dict[str, Any]], _T]) -> _T:
        """Apply `change` to the topic's schema history by compare-and-set, retried when
        another gateway wrote it first."""
        for _ in range(MAX_CAS_ATTEMPTS):
            await self.get_topic(topic)
            history, entry = await self._schema_history(topic)
            result = change(history)
            try:
                await self._schema_kv.put(
                    self._topic_key(topic),
                    json.dumps(history, separators=(",", ":")).encode(),
                    last=entry.revision if entry else 0,
                )
            except ApiError as exc:
                if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                    continue
                raise public_error(exc) from exc
            self._forget_schemas()
            return result
        raise StorageUnavailable(f"the schemas of topic {topic!r} kept changing")

    async def _on_schema_change(self, msg: Msg) -> None:
        self._forget_schemas()

    def _forget_schemas(self) -> None:
        self._schema_changes += 1
        self._latest_schemas.clear()

    async def key_value(self, name: str) -> KeyValue:
        """A KV bucket `<namespace>_<name>` of the caller's own (created if missing)."""
        self._js.check_open()
        bucket = KvBucket(self._js, f"{self.namespace}_{name}")
        await bucket.create_if_missing(self.replicas)
        return KeyValue(self._js, bucket)


# -- helpers ------------------------------------------------------------------------------


def _schema_versions(history: Mapping[str, Any]) -> list[SchemaVersion]:
    return [
        SchemaVersion(v["version"], v["schema"].encode(), v["registered_at_ms"])
        for v in history["versions"]
    ]


def _unexpired_result(entry: KvEntry | None) -> bytes | None:
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
