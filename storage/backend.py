"""The interface the gateway uses. `embedded` (local files) and `jetstream` implement it.

Everything here is async and safe to call concurrently from one event loop. Errors are
the ones in `storage.errors`. Offsets are dense per partition and start at 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

from storage.types import (
    AppendResult,
    NewRecord,
    PartitionInfo,
    ProduceTag,
    Record,
    SchemaVersion,
    TopicConfig,
    TopicInfo,
    TopicPartition,
)


class Backend(Protocol):
    @property
    def max_append_records(self) -> int | None:
        """The most records one `append` takes (an atomic batch limit of the store); None
        when appends have no such limit. Larger appends raise AppendTooLarge."""

    async def close(self) -> None:
        """Flush and fsync what is pending, wake every waiter, release files and connections."""

    async def check_writable(self) -> None:
        """Raise a StorageError unless appends can currently succeed (for /readyz)."""

    # -- topics -------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, config: TopicConfig) -> bool:
        """Create a topic; True if created, False if it exists with exactly these settings.

        Raises TopicExists (carrying the existing TopicInfo) if it exists with others.
        """

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its data; waiters on it wake and then see TopicNotFound."""

    async def list_topics(self) -> list[TopicInfo]: ...

    async def get_topic(self, name: str) -> TopicInfo:
        """Raises TopicNotFound."""

    async def partition_info(self, topic: str, partition: int) -> PartitionInfo:
        """Raises TopicNotFound or PartitionNotFound."""

    # -- records ------------------------------------------------------------------------

    async def append(
        self,
        topic: str,
        partition: int,
        records: Sequence[NewRecord],
        tag: ProduceTag | None = None,
    ) -> AppendResult:
        """Append atomically (all records or none) and return once durable per the policy.

        With a produce tag (a request's Idempotency-Key and fingerprint), the tag is stored
        with the records, atomically; if the partition already holds an append with the
        tag's key (within the backend's idempotency window, also one made before a crash
        or by another gateway), nothing is written and that append's result is returned,
        or ProduceTagConflict raised when it was made for another request.
        """

    def start_append(
        self,
        topic: str,
        partition: int,
        records: Sequence[NewRecord],
        tag: ProduceTag | None = None,
    ) -> asyncio.Future[AppendResult]:
        """Start an `append` now and return its future, so a caller can start several
        before awaiting any (produce to many partitions).

        The append goes ahead whatever happens to the caller: cancelling the future (a
        cancelled request) only stops waiting for it. May raise at once what `append`
        would raise before writing anything.
        """

    async def tagged_appends(self, topic: str, tag: ProduceTag) -> dict[int, AppendResult]:
        """Partition -> the result of its append with the tag's key, for every partition of
        `topic` that is known to hold one; raises ProduceTagConflict when any holds the
        key for another request, so a reused key is refused before anything is written.

        The embedded log answers from memory, for every partition. JetStream answers {}:
        finding a key there means reading each stream back through the duplicate window,
        too much for every first attempt; its streams still refuse the copies on append.
        """

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int, max_bytes: int
    ) -> list[Record]:
        """Records from `offset` on, at most `max_records`, and stopping before `max_bytes`
        of values and keys are exceeded (but always at least one record if any exists).

        An offset below log_start_offset or above end_offset raises OffsetOutOfRange;
        offset == end_offset returns [].
        """

    async def read_batches(self, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
        """Whole stored batches (storage.codec's format, checksums checked) from the one that
        holds `offset`, as many as fit in `max_bytes` but always one if any exists.

        For readers that forward batches rather than records (the Kafka listener converts
        each batch once, with no Record per record). The first batch may begin below
        `offset`, as a Kafka fetch may. The same range errors as `read`; offset ==
        end_offset returns b"".
        """

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp_ms: int) -> int:
        """The first offset whose timestamp is >= timestamp_ms, or end_offset if none."""

    async def wait_for_records(
        self, topic: str, positions: Mapping[int, int], timeout_s: float | None
    ) -> bool:
        """Wait until any partition p in `positions` has end_offset > positions[p].

        Returns True as soon as one has (immediately if one already does), False on
        timeout. Costs no task and no polling while idle: it parks one future on the
        partitions' notifiers. Also returns (True) when the topic is deleted or the
        backend closes, so the caller's next read raises.
        """

    # -- consumer groups ----------------------------------------------------------------

    async def commit_offsets(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Store committed offsets (the next offset to read) in one transaction."""

    async def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        """Committed offsets of a group ({} for a group that never committed)."""

    async def list_groups(self) -> list[str]:
        """Groups that have committed offsets or stored metadata."""

    async def delete_group(self, group: str) -> None:
        """Forget a group's offsets and metadata. Raises GroupNotFound."""

    async def load_group_metadata(self, group: str) -> bytes | None:
        """Opaque coordinator state saved by save_group_metadata (e.g. the last generation)."""

    async def save_group_metadata(self, group: str, metadata: bytes) -> None: ...

    # -- produce idempotency ------------------------------------------------------------

    async def load_idempotent_result(self, key: str) -> bytes | None:
        """The stored response for an Idempotency-Key, or None (expired keys are None)."""

    async def save_idempotent_result(self, key: str, result: bytes, ttl_ms: int) -> None: ...

    # -- topic schemas (the gateway's documents, opaque here) ----------------------------

    async def schema_versions(self, topic: str) -> list[SchemaVersion]:
        """Every kept version of the topic's schema, oldest first. Raises TopicNotFound."""

    async def latest_schema(self, topic: str) -> SchemaVersion | None:
        """The newest kept version; None when there is none or the topic does not exist.

        Called on every produce request: served from memory, kept current with what other
        gateways register where the backend is shared.
        """

    async def add_schema_version(self, topic: str, schema: bytes, latest: int) -> SchemaVersion:
        """Keep `schema` as the next version if the newest kept version is still `latest`
        (0: none), so a compatibility check made against `latest` still holds.

        The new number is one above every number the topic ever gave, deleted ones
        included, so a version number names one schema for the topic's lifetime. Raises
        TopicNotFound, or SchemaVersionConflict when `latest` is no longer the newest.
        """

    async def delete_schema_version(self, topic: str, version: int) -> None:
        """Delete `version`, which must be the newest kept one (SchemaVersionConflict
        otherwise; SchemaVersionNotFound when the topic keeps no such version)."""

    async def schema_compatibility(self, topic: str) -> str | None:
        """The topic's compatibility setting as last set (None: never set). Raises
        TopicNotFound."""

    async def set_schema_compatibility(self, topic: str, compatibility: str | None) -> None:
        """Store the setting (None forgets it). Raises TopicNotFound."""


__all__ = [
    "AppendResult",
    "Backend",
    "NewRecord",
    "PartitionInfo",
    "ProduceTag",
    "Record",
    "SchemaVersion",
    "TopicConfig",
    "TopicInfo",
    "TopicPartition",
]
