"""Errors of consumer-group operations, under one root, each with its HTTP status and code.

    GroupError
    ├── InvalidGroupName     400  empty, longer than 249 characters, or not printable
    ├── InvalidMemberId      400  same rule as group names
    ├── InvalidOffsets       400  no offsets, a negative one, or one beyond the end offset
    ├── UnknownGroup         404  no members, no committed offsets and no metadata
    ├── UnknownMember        404  never joined, left, expired after its session timeout,
    │                             or the gateway restarted since it joined: join again
    ├── FencedGeneration     409  the commit names a generation that is no longer current
    ├── NotPartitionOwner    409  the member does not own every partition it commits
    ├── GroupNotEmpty        409  a group with members cannot be deleted
    └── GroupProtocolConflict 409 the group has members of another protocol (Kafka): a
                                  group has members of one protocol at a time

`status` is the HTTP status the API answers with and `code` the stable suffix of the
problem+json `type`, so the HTTP layer maps every one of them in a single place.
Storage errors (TopicNotFound, StorageUnavailable, ...) pass through unchanged.
"""

from __future__ import annotations

from typing import ClassVar

from storage.types import TopicPartition


class GroupError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "group-error"


class InvalidGroupName(GroupError):
    code = "invalid-group-name"

    def __init__(self, group: str) -> None:
        super().__init__(f"invalid group name {group!r}: use 1-249 printable characters")
        self.group = group


class InvalidMemberId(GroupError):
    code = "invalid-member-id"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"invalid member id {member_id!r}: use 1-249 printable characters")
        self.member_id = member_id


class InvalidOffsets(GroupError):
    code = "invalid-offsets"


class UnknownGroup(GroupError):
    status = 404
    code = "unknown-group"

    def __init__(self, group: str) -> None:
        super().__init__(f"consumer group {group!r} does not exist")
        self.group = group


class UnknownMember(GroupError):
    status = 404
    code = "unknown-member"

    def __init__(self, group: str, member_id: str, why: str = "is not a member") -> None:
        super().__init__(f"{member_id!r} {why} of consumer group {group!r}; join again")
        self.group = group
        self.member_id = member_id
        self.why = why


class FencedGeneration(GroupError):
    status = 409
    code = "fenced-generation"

    def __init__(self, group: str, generation: int, current_generation: int) -> None:
        super().__init__(
            f"generation {generation} of consumer group {group!r} is fenced:"
            f" the current generation is {current_generation}"
        )
        self.group = group
        self.generation = generation
        self.current_generation = current_generation


class NotPartitionOwner(GroupError):
    status = 409
    code = "not-partition-owner"

    def __init__(self, group: str, member_id: str, partitions: tuple[TopicPartition, ...]) -> None:
        names = ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions)
        super().__init__(f"member {member_id!r} of group {group!r} does not own {names}")
        self.group = group
        self.member_id = member_id
        self.partitions = partitions


class GroupNotEmpty(GroupError):
    status = 409
    code = "group-not-empty"

    def __init__(self, group: str, members: int) -> None:
        super().__init__(f"consumer group {group!r} still has {members} member(s)")
        self.group = group
        self.members = members


class GroupProtocolConflict(GroupError):
    status = 409
    code = "group-protocol-conflict"

    def __init__(self, group: str, protocol: str, members: int) -> None:
        super().__init__(
            f"consumer group {group!r} has {members} {protocol} member(s): a group has members"
            f" of one protocol at a time (its committed offsets are shared); join once they"
            f" have left, or use another group"
        )
        self.group = group
        self.protocol = protocol
        self.members = members
