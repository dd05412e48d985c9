"""Every error the storage layer raises, under one root.

    StorageError
    ├── InvalidTopicName        the name breaks Kafka's rule or could escape the data dir
    ├── TopicNotFound
    ├── TopicExists             carries the existing topic so callers can compare settings
    ├── PartitionNotFound
    ├── OffsetOutOfRange        carries log_start_offset and end_offset
    ├── AppendTooLarge          more records in one append than the backend writes atomically
    ├── GroupNotFound
    ├── SchemaVersionNotFound   the topic keeps no such version of its schema
    ├── SchemaVersionConflict   the newest schema version is not the one the caller expected
    ├── ProduceTagConflict      the partition holds the append's Idempotency-Key from another request
    ├── CorruptRecord           a checksum failed inside sealed data: a read error, never data
    ├── StorageWriteError       a write or fsync failed; the partition refuses writes until reopened
    │   └── DiskFull            ENOSPC / EDQUOT / EFBIG
    ├── StorageClosed
    ├── StorageUnavailable      the backend cannot be reached (a remote cluster without a leader)
    ├── UnsafeEntry             the data dir holds a symlink, or an entry of another user
    └── DataDirInUse            another process has the embedded log's data dir open

`retriable` says whether the same call may succeed later without any change by the caller.
"""

from __future__ import annotations

from storage.types import TopicInfo


class StorageError(Exception):
    retriable = False


class InvalidTopicName(StorageError):
    pass


class TopicNotFound(StorageError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} does not exist")
        self.topic = topic


class TopicExists(StorageError):
    def __init__(self, existing: TopicInfo) -> None:
        super().__init__(f"topic {existing.name!r} already exists")
        self.existing = existing


class PartitionNotFound(StorageError):
    def __init__(self, topic: str, partition: int) -> None:
        super().__init__(f"topic {topic!r} has no partition {partition}")
        self.topic = topic
        self.partition = partition


class OffsetOutOfRange(StorageError):
    def __init__(self, offset: int, log_start_offset: int, end_offset: int) -> None:
        super().__init__(f"offset {offset} is outside the log [{log_start_offset}, {end_offset}]")
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.end_offset = end_offset


class AppendTooLarge(StorageError):
    """Refused before writing anything (jetstream: an atomic batch holds at most 1000)."""

    def __init__(self, count: int, max_records: int) -> None:
        super().__init__(
            f"{count} records in one append; this backend writes at most {max_records} atomically"
        )
        self.count = count
        self.max_records = max_records


class GroupNotFound(StorageError):
    def __init__(self, group: str) -> None:
        super().__init__(f"consumer group {group!r} does not exist")
        self.group = group


class SchemaVersionNotFound(StorageError):
    def __init__(self, topic: str, version: int) -> None:
        super().__init__(f"topic {topic!r} keeps no version {version} of its schema")
        self.topic = topic
        self.version = version


class SchemaVersionConflict(StorageError):
    """A compare-and-set on the newest schema version lost: another registration or
    deletion came first. `latest` is the newest kept version now (0: none)."""

    def __init__(self, topic: str, expected: int, latest: int) -> None:
        super().__init__(
            f"the newest schema version of topic {topic!r} is {latest or 'none'},"
            f" not {expected or 'none'}"
        )
        self.topic = topic
        self.expected = expected
        self.latest = latest


class ProduceTagConflict(StorageError):
    """An append's produce tag names a key the partition already holds for another request."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where} holds this Idempotency-Key from a different request")


class CorruptRecord(StorageError):
    pass


class StorageWriteError(StorageError):
    """Sticky: once raised for a partition, its later appends fail the same way until reopen."""


class DiskFull(StorageWriteError):
    pass


class StorageClosed(StorageError):
    pass


class StorageUnavailable(StorageError):
    retriable = True


class UnsafeEntry(StorageError):
    """Refused before use: storage never follows a symlink nor touches another user's file."""


class DataDirInUse(StorageError):
    """Another process holds the data dir's lock: two writers would interleave their
    appends in the same segments and corrupt the log."""
