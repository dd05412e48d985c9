"""Topic and group names: Kafka's rule, and nothing that can leave the data directory."""

from __future__ import annotations

import re

from storage.errors import InvalidTopicName

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
MAX_GROUP_NAME_LENGTH = 249


def validate_topic_name(name: str) -> str:
    """Return `name` if it is a legal topic name, else raise InvalidTopicName.

    The character class has no `/`, `\\` or NUL, and `.`/`..` are refused, so a valid
    name is always a single path component inside the data directory.
    """
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidTopicName(
            f"invalid topic name {name!r}: use 1-249 of [A-Za-z0-9._-], not '.' or '..'"
        )
    return name


def is_valid_group_name(name: str) -> bool:
    """Groups live only in the catalog, so any non-empty printable name up to 249 chars is fine."""
    return 0 < len(name) <= MAX_GROUP_NAME_LENGTH and name.isprintable()
