"""JSON pointers (RFC 6901), the way every schema problem names a place."""

from __future__ import annotations

from collections.abc import Iterable


def escape(token: str) -> str:
    """One reference token: `~` and `/` escaped."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(tokens: Iterable[str | int]) -> str:
    """The pointer of a path such as jsonschema_rs's `instance_path` (["items", 3, "id"])."""
    return "".join(f"/{escape(str(token))}" for token in tokens)
