"""Stream cursors: the SSE `id:` that resumes a stream with no loss and no duplicates.

A cursor holds the *next* offset to send for every partition the stream reads. Layout:

    "1." base64url-without-padding( pairs… crc16 )
    "2." base64url-without-padding( varint(epoch) pairs… crc16 )
    pair  = varint(partition gap) varint(next offset)   partitions strictly ascending;
            the gap is the partition number for the first pair, else partition - previous - 1
    crc16 = low 16 bits of zlib.crc32(everything before it), big-endian

so one partition at a small offset is ~8 characters, and a typo or a truncated header is
caught by the checksum instead of silently moving the stream. The leading "1." or "2." is
the version; a decoder refuses versions it does not know. Version 2 is what a consumer
group's stream sends: the epoch names the incarnation of the group's committed offsets the
positions belong to (gateway/groups/service.py `commit_received`), so a cursor made before
a seek can be told from one made after it. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable, Mapping

VERSION_PREFIX = "1."
EPOCH_VERSION_PREFIX = "2."
_PREFIX = VERSION_PREFIX.encode("ascii")
_EPOCH_PREFIX = EPOCH_VERSION_PREFIX.encode("ascii")
MAX_CURSOR_CHARS = 16_384
MAX_PARTITION = 9_999  # TopicInfo allows up to 10,000 partitions
MAX_OFFSET = 2**63 - 1
MAX_EPOCH = 2**32 - 1


class CursorError(ValueError):
    """The cursor is not one this gateway wrote (malformed, truncated, unknown version)."""


_SMALL = [bytes((n,)) for n in range(0x80)]
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = []
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _finish(prefix: bytes, payload: bytes) -> bytes:
    crc = (zlib.crc32(payload) & 0xFFFF).to_bytes(2, "big")
    encoded = binascii.b2a_base64(payload + crc, newline=False).translate(_URLSAFE)
    return prefix + encoded.rstrip(b"=")


def encode_cursor(positions: Mapping[int, int], epoch: int | None = None) -> str:
    """Encode {partition: next offset}, with a group's offsets epoch (version 2) or without."""
    return CursorEncoder(positions, epoch).encode()


class CursorEncoder:
    """Incremental encoder for the hot path: one record advances one partition, so only that
    partition's pair is re-encoded before the pieces are joined."""

    __slots__ = ("_gaps", "_index", "_pieces", "_prefix")

    def __init__(self, positions: Mapping[int, int], epoch: int | None = None) -> None:
        if not positions:
            raise ValueError("a cursor needs at least one partition")
        if epoch is not None and not 0 <= epoch <= MAX_EPOCH:
            raise ValueError("an epoch is a 32-bit unsigned number")
        self._prefix = _PREFIX if epoch is None else _EPOCH_PREFIX
        partitions = sorted(positions)
        self._index = {p: i for i, p in enumerate(partitions)}
        self._gaps = [
            _varint(p - (partitions[i - 1] + 1 if i else 0)) for i, p in enumerate(partitions)
        ]
        self._pieces = [self._gaps[i] + _varint(positions[p]) for i, p in enumerate(partitions)]
        if epoch is not None:  # the head of the first piece: every join starts with it
            self._gaps[0] = _varint(epoch) + self._gaps[0]
            self._pieces[0] = _varint(epoch) + self._pieces[0]

    def advance(self, partition: int, next_offset: int) -> None:
        i = self._index[partition]
        self._pieces[i] = self._gaps[i] + _varint(next_offset)

    def encode(self) -> str:
        return _finish(self._prefix, b"".join(self._pieces)).decode("ascii")

    def state(self) -> bytes:
        """The positions (and epoch) as compact bytes (equal cursors, equal bytes): a cache key."""
        return self._prefix + b"".join(self._pieces)

    def encode_run(self, partition: int, next_offsets: Iterable[int]) -> list[bytes]:
        """Cursors (ASCII bytes) after each of a batch's records, advancing `partition` through
        `next_offsets`; the other partitions' bytes are joined once per batch, not per record."""
        i = self._index[partition]
        head = b"".join(self._pieces[:i]) + self._gaps[i]
        tail = b"".join(self._pieces[i + 1 :])
        cursors = []
        last = None
        for offset in next_offsets:
            last = _varint(offset)
            cursors.append(_finish(self._prefix, head + last + tail))
        if last is not None:
            self._pieces[i] = self._gaps[i] + last
        return cursors


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
    return decode_cursor_epoch(cursor)[1]


def decode_cursor_epoch(cursor: str) -> tuple[int | None, dict[int, int]]:
    """Decode a cursor to (its epoch, None for version 1; {partition: next offset}), or raise
    CursorError."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise CursorError("cursor too long")
    if cursor.startswith(VERSION_PREFIX):
        with_epoch = False
    elif cursor.startswith(EPOCH_VERSION_PREFIX):
        with_epoch = True
    else:
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
    epoch = None
    if with_epoch:
        epoch, pos = _read_varint(payload, pos, end)
        if epoch > MAX_EPOCH:
            raise CursorError("epoch out of range")
        if pos >= end:
            raise CursorError("a cursor needs at least one partition")
    while pos < end:
        gap, pos = _read_varint(payload, pos, end)
        offset, pos = _read_varint(payload, pos, end)
        partition = previous + 1 + gap
        if partition > MAX_PARTITION or offset > MAX_OFFSET:
            raise CursorError("partition or offset out of range")
        positions[partition] = offset
        previous = partition
    return epoch, positions
