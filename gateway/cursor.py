"""Stream cursors: the SSE `id:` that resumes a stream with no loss and no duplicates.

A cursor holds the *next* offset to send for every partition the stream reads. Layout:

    "1." base64url-without-padding( pairs… crc16 )
    pair  = varint(partition gap) varint(next offset)   partitions strictly ascending;
            the gap is the partition number for the first pair, else partition - previous - 1
    crc16 = low 16 bits of zlib.crc32(pairs), big-endian

so one partition at a small offset is ~8 characters, and a typo or a truncated header is
caught by the checksum instead of silently moving the stream. The leading "1." is the
version; a decoder refuses versions it does not know. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping

VERSION_PREFIX = "1."
MAX_CURSOR_CHARS = 16_384
MAX_PARTITION = 9_999  # TopicInfo allows up to 10,000 partitions
MAX_OFFSET = 2**63 - 1


class CursorError(ValueError):
    """The cursor is not one this gateway wrote (malformed, truncated, unknown version)."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pair(gap: int, offset: int) -> bytes:
    return _varint(gap) + _varint(offset)


def _finish(payload: bytes) -> str:
    crc = (zlib.crc32(payload) & 0xFFFF).to_bytes(2, "big")
    return VERSION_PREFIX + base64.urlsafe_b64encode(payload + crc).rstrip(b"=").decode("ascii")


def encode_cursor(positions: Mapping[int, int]) -> str:
    """Encode {partition: next offset}."""
    return CursorEncoder(positions).encode()


class CursorEncoder:
    """Incremental encoder for the hot path: one record advances one partition, so only that
    partition's pair is re-encoded before the pieces are joined."""

    __slots__ = ("_gaps", "_index", "_pieces")

    def __init__(self, positions: Mapping[int, int]) -> None:
        if not positions:
            raise ValueError("a cursor needs at least one partition")
        partitions = sorted(positions)
        self._index = {p: i for i, p in enumerate(partitions)}
        self._gaps = [p - (partitions[i - 1] + 1 if i else 0) for i, p in enumerate(partitions)]
        self._pieces = [_pair(self._gaps[i], positions[p]) for i, p in enumerate(partitions)]

    def advance(self, partition: int, next_offset: int) -> None:
        i = self._index[partition]
        self._pieces[i] = _pair(self._gaps[i], next_offset)

    def encode(self) -> str:
        return _finish(b"".join(self._pieces))


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise CursorError("truncated or oversized number")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and shift > 7:
                raise CursorError("non-canonical number")
            return value, pos


def decode_cursor(cursor: str) -> dict[int, int]:
    """Decode a cursor to {partition: next offset}, or raise CursorError."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise CursorError("cursor too long")
    if not cursor.startswith(VERSION_PREFIX):
        raise CursorError("unknown cursor version")
    body = cursor[len(VERSION_PREFIX) :]
    if not body.isascii() or "=" in body:
        raise CursorError("cursor is not base64url")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CursorError("cursor is not base64url") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
        raise CursorError("cursor is not canonical base64url")
    if len(raw) < 4:
        raise CursorError("cursor too short")
    payload, crc = raw[:-2], raw[-2:]
    if (zlib.crc32(payload) & 0xFFFF).to_bytes(2, "big") != crc:
        raise CursorError("cursor checksum mismatch")
    positions: dict[int, int] = {}
    pos, end, previous = 0, len(payload), -1
    while pos < end:
        gap, pos = _read_varint(payload, pos, end)
        offset, pos = _read_varint(payload, pos, end)
        partition = previous + 1 + gap
        if partition > MAX_PARTITION or offset > MAX_OFFSET:
            raise CursorError("partition or offset out of range")
        positions[partition] = offset
        previous = partition
    return positions
