"""JetStream key-value buckets through the KV protocol over the raw API, so every write
can carry a revision check or a TTL: a bucket `b` is the stream KV_b with subjects
`$KV.b.<key>`, one message per key; a delete is a message with a `KV-Operation` header.

`KvBucket` is what the backend builds its metadata on (topics, group offsets,
idempotency results): API errors reach the caller as ApiError, which decides what a failed
revision check means. `KeyValue` is one bucket for callers outside storage (the gateway's
group membership), with public errors only (RevisionConflict) and a watch.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg

from storage.errors import StorageError, StorageUnavailable
from storage.jetstream.api import (
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    ERR_WRONG_LAST_SEQUENCE,
    ApiError,
    JetStreamApi,
    NoStream,
    pub_ack,
    public_error,
    unsubscribe,
)

KV_OPERATION = "KV-Operation"


@dataclass
class KvEntry:
    value: bytes
    revision: int
    deleted: bool = False  # a delete marker: no value, but its revision guards a re-create


class KvBucket:
    """One bucket, `name` without the stream's KV_ prefix."""

    def __init__(self, js: JetStreamApi, name: str) -> None:
        self._js = js
        self.name = name

    async def create_if_missing(self, replicas: int) -> None:
        config = {
            "name": f"KV_{self.name}",
            "subjects": [f"$KV.{self.name}.>"],
            "retention": "limits",
            "discard": "new",
            "storage": "file",
            "num_replicas": replicas,
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
            await self._js.call(f"STREAM.INFO.KV_{self.name}")
        except ApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise public_error(exc) from exc
            try:
                await self._js.call(f"STREAM.CREATE.KV_{self.name}", config)
            except ApiError as create_error:
                raise public_error(create_error) from create_error

    async def get(self, key: str) -> KvEntry | None:
        """The key's current value from the leader, or None if absent or deleted."""
        entry = await self.last(key)
        return None if entry is None or entry.deleted else entry

    async def last(self, key: str) -> KvEntry | None:
        """The key's last message (a delete marker included), or None if it has none."""
        try:
            reply = await self._js.call(
                f"STREAM.MSG.GET.KV_{self.name}", {"last_by_subj": f"$KV.{self.name}.{key}"}
            )
        except ApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                return None
            raise public_error(exc) from exc
        message = reply["message"]
        raw_headers = base64.b64decode(message.get("hdrs") or b"")
        deleted = f"{KV_OPERATION}:".encode() in raw_headers
        return KvEntry(base64.b64decode(message.get("data") or b""), int(message["seq"]), deleted)

    async def put(
        self, key: str, value: bytes, *, last: int | None = None, ttl_s: int | None = None
    ) -> int:
        """Write a key; with `last`, only if its current revision is `last` (0: absent)."""
        headers: dict[str, str] = {}
        if last is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(last)
        if ttl_s is not None:
            headers["Nats-TTL"] = f"{ttl_s}s"
        try:
            reply = await self._js.request(f"$KV.{self.name}.{key}", value, headers or None)
        except NoStream as exc:
            raise StorageUnavailable(f"KV bucket {self.name} is not available") from exc
        return int(pub_ack(reply)["seq"])

    async def delete(self, key: str, *, last: int) -> None:
        headers = {KV_OPERATION: "DEL", "Nats-Expected-Last-Subject-Sequence": str(last)}
        try:
            reply = await self._js.request(f"$KV.{self.name}.{key}", b"", headers)
        except NoStream as exc:
            raise StorageUnavailable(f"KV bucket {self.name} is not available") from exc
        pub_ack(reply)

    async def purge(self, key: str) -> None:
        """Remove every message of a key, leaving no marker (so it drops out of listings)."""
        try:
            await self._js.call(
                f"STREAM.PURGE.KV_{self.name}", {"filter": f"$KV.{self.name}.{key}"}
            )
        except ApiError as exc:
            raise public_error(exc) from exc

    async def keys(self) -> list[str]:
        """Keys with a message (deleted keys included: callers get() each)."""
        prefix = f"$KV.{self.name}."
        keys: list[str] = []
        offset = 0
        while True:
            try:
                info = await self._js.call(
                    f"STREAM.INFO.KV_{self.name}",
                    {"subjects_filter": prefix + ">", "offset": offset},
                )
            except ApiError as exc:
                raise public_error(exc) from exc
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

    def __init__(self, js: JetStreamApi, bucket: KvBucket) -> None:
        self._js = js
        self._bucket = bucket
        self.bucket = bucket.name

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and its revision, or None when the key is absent or deleted."""
        entry = await self._bucket.get(key)
        return None if entry is None else (entry.value, entry.revision)

    async def read(self, key: str) -> tuple[bytes | None, int]:
        """The value (None: absent or deleted) and the key's last revision, a delete
        marker's included (0: never written), from one read: what a revision check needs."""
        entry = await self._bucket.last(key)
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
            return await self._bucket.put(key, value, last=last, ttl_s=ttl_s)
        except ApiError as exc:
            if exc.err_code in ERR_WRONG_LAST_SEQUENCE:
                raise RevisionConflict(f"{self.bucket}/{key} changed (expected {last})") from exc
            raise public_error(exc) from exc

    async def purge(self, key: str) -> None:
        await self._bucket.purge(key)

    async def keys(self, prefix: str) -> list[str]:
        return [k for k in await self._bucket.keys() if k.startswith(prefix)]

    async def watch(
        self, prefix: str, on_change: Callable[[KvChange], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Call `on_change` for every later change of a key under `prefix` (a KV token
        prefix ending in "."), in order; returns the function that stops the watch.

        An ordered push consumer: the server pushes each change (no polling), and after a
        reconnect the client resumes it where it left off.
        """
        self._js.check_open()

        async def deliver(msg: Msg) -> None:
            operation = (msg.headers or {}).get(KV_OPERATION)
            key = msg.subject.removeprefix(f"$KV.{self.bucket}.")
            value = None if operation in ("DEL", "PURGE") else msg.data
            await on_change(KvChange(key, value, msg.metadata.sequence.stream))

        subscription = await self._js.subscribe_new(
            f"$KV.{self.bucket}.{prefix}>", f"KV_{self.bucket}", deliver
        )

        async def stop() -> None:
            await unsubscribe(subscription)

        return stop
