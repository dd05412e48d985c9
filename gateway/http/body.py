"""Request bodies and content types: read within a size limit, refuse the wrong media type.

Every route that reads a body goes through here, so an oversized body is refused before it
is read (by its Content-Length) or as soon as it passes the limit (413, body-too-large).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from gateway.http.problems import Problem


def as_int(value: Any) -> int | None:
    """A JSON integer, including JSON Schema's integral numbers like `2.0`; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return None


def media_type(content_type: str) -> str:
    """A Content-Type header without parameters, lower-cased ("" when absent)."""
    return content_type.split(";", 1)[0].strip().lower()


def require_json(request: Request) -> None:
    kind = media_type(request.headers.get("content-type", ""))
    if kind != "application/json":
        raise Problem(
            "unsupported-media-type",
            f"send the body as application/json, not {kind or 'no Content-Type'}",
        )


def _body_too_large(limit: int) -> Problem:
    return Problem(
        "body-too-large", f"the request body may be at most {limit} bytes", max_body_bytes=limit
    )


def check_content_length(declared: str | None, limit: int) -> None:
    """Refuse a declared oversized body before reading a byte of it."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(limit)


async def limited_stream(
    receive: Receive, declared_length: str | None, limit: int
) -> AsyncIterator[bytes]:
    """The body as it arrives, raising body-too-large as soon as it passes `limit` bytes
    (ClientDisconnect if the client goes away first)."""
    check_content_length(declared_length, limit)
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise _body_too_large(limit)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def read_body(receive: Receive, declared_length: str | None, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (413 beyond).

    The same checks as `limited_stream`, without a generator of its own (produce's hot path).
    """
    check_content_length(declared_length, limit)
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise _body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
