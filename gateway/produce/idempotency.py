"""Idempotency-Key: a retried produce gets the first answer back and writes nothing twice.

Two records of a keyed request, written at different moments:

- the log: every append of the request carries its produce tag (the scoped key and a
  SHA-256 of topic, media type and body, the request's fingerprint), stored atomically
  with the records (storage.types.ProduceTag). A partition that holds the tag's key
  writes nothing and answers the first append's offsets, so a retry after a crash between
  the append and the answer, after a request that failed on one of its partitions, or
  through another gateway, completes the request and writes each record once
  (gateway.produce.write);
- the backend's answer table (the catalog, or a JetStream KV bucket): the first
  successful answer with its fingerprint, saved after the append. It answers retries
  without touching the log and tells a reused key from a retry (a 422), and a crash
  before it is saved only costs the retry a pass over the partitions, which rebuild the
  same answer from the tags.

Requests with the same key run one at a time in one process (a lock per key), which saves
work but is not needed for correctness: two gateways retrying at once both reach the
partitions, and each partition takes the tag once.

Keys are scoped by principal and topic (`scoped_key`): each principal has its own key space
on each topic, so one principal's key neither blocks another's produce nor tells it that the
key was used, and a client may reuse its keys across topics.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import NamedTuple

import orjson

from gateway.http.problems import Problem, validation_error
from storage.backend import Backend
from storage.types import ProduceTag

MAX_IDEMPOTENCY_KEY_CHARS = 255


def checked_idempotency_key(key: str | None) -> str | None:
    """The header's value if it is a valid key (None if absent); a 400 otherwise."""
    if key is not None and not (
        0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and key.isascii() and key.isprintable()
    ):
        raise validation_error("", "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def scoped_key(principal: str | None, topic: str, key: str) -> str:
    """The key as stored and locked: a digest of (principal, topic, key), unambiguous
    whatever characters the three hold (None: auth is off, one principal)."""
    return hashlib.sha256(orjson.dumps([principal, topic, key])).hexdigest()


def produce_tag(scoped: str, fingerprint: str) -> ProduceTag:
    """The tag a keyed request's appends carry: its scoped key and fingerprint (hex)."""
    return ProduceTag(bytes.fromhex(scoped), bytes.fromhex(fingerprint))


def request_digest(topic: str, media_type: str) -> hashlib._Hash:
    """The running fingerprint of a request; the caller feeds it the body as it arrives."""
    return hashlib.sha256(f"{topic}\n{media_type}\n".encode())


class Answer(NamedTuple):
    body: bytes
    status: int
    replayed: bool


class Written(NamedTuple):
    """A keyed request's answer body, and whether every partition it places records in
    already held its produce tag (nothing written: an answer rebuilt from the log)."""

    body: bytes
    replayed: bool


async def ensure_kept(backend: Backend, topic: str, first_offsets: Mapping[int, int]) -> None:
    """A 409 when retention deleted records of a keyed request's first attempt (partition
    -> its first offset there): its offsets name nothing any more, and writing the records
    again would deliver them twice, so the retry is told and nothing is written."""
    for partition, offset in first_offsets.items():
        start = (await backend.partition_info(topic, partition)).log_start_offset
        if offset >= start:
            continue
        detail = (
            f"this Idempotency-Key's request was written to partition {partition} from offset"
            f" {offset}; retention has deleted it (the partition now starts at {start})"
        )
        raise Problem(
            "idempotent-records-deleted",
            detail,
            partition=partition,
            offset=offset,
            log_start_offset=start,
        )


def _first_offsets(body: bytes) -> dict[int, int]:
    """Partition -> the lowest offset a stored produce answer names there."""
    first: dict[int, int] = {}
    for placed in orjson.loads(body)["offsets"]:
        partition, offset = placed["partition"], placed["offset"]
        first[partition] = min(offset, first.get(partition, offset))
    return first


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


async def once(
    backend: Backend,
    locks: KeyedLocks,
    topic: str,
    key: str,
    fingerprint: str,
    ttl_ms: int,
    write: Callable[[], Awaitable[Written]],
) -> Answer:
    """The stored answer for `key`, or `write()`'s (which writes with the key's produce
    tag, so it answers the first offsets if the log already holds the request), stored for
    `ttl_ms` (200 only). Either is refused (ensure_kept) once retention deleted records
    it names."""
    async with locks.hold(key):
        stored = await backend.load_idempotent_result(key)
        if stored is not None:
            first = orjson.loads(stored)
            if first["request"] != fingerprint:
                raise Problem(
                    "idempotency-key-reused",
                    "this Idempotency-Key was used for a different request",
                )
            body = first["body"].encode()
            await ensure_kept(backend, topic, _first_offsets(body))
            return Answer(body, first["status"], replayed=True)
        written = await write()
        result = {"request": fingerprint, "status": 200, "body": written.body.decode()}
        await backend.save_idempotent_result(key, orjson.dumps(result), ttl_ms)
    return Answer(written.body, 200, replayed=written.replayed)
