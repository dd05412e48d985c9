"""A segment's sparse offset and time indexes: pure, in memory, searched by bisect.

An entry is added for the first batch of a segment and then for the first batch that
starts at least `interval_bytes` after the previous entry, so a lookup lands at most one
interval (plus one batch) before the wanted offset. The offset index maps a batch's base
offset to its file position; the time index holds, at the same batches, the batch
timestamp and base offset. Timestamps never decrease within a partition, so both lists
are sorted and bisect applies.

On disk (`.index`, `.timeindex`), entries are fixed-size little-endian pairs:

    offset entry:  base_offset(8) position(8)
    time entry:    timestamp_ms(8, signed) base_offset(8)

Index files are written when a segment is sealed; the active segment's index is rebuilt
by the recovery scan on open. `from_files` refuses anything inconsistent so the caller
rebuilds from the segment instead of trusting a damaged index.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from storage.codec import BatchHeader

DEFAULT_INTERVAL_BYTES = 4096
_OFFSET_ENTRY = struct.Struct("<QQ")
_TIME_ENTRY = struct.Struct("<qQ")
ENTRY_SIZE = 16


class SparseIndex:
    """Offset and time index of one segment."""

    __slots__ = ("_last_position", "interval_bytes", "offsets", "positions", "timestamps")

    def __init__(self, interval_bytes: int = DEFAULT_INTERVAL_BYTES) -> None:
        self.interval_bytes = interval_bytes
        self.offsets: list[int] = []
        self.positions: list[int] = []
        self.timestamps: list[int] = []
        self._last_position = -interval_bytes

    def __len__(self) -> int:
        return len(self.offsets)

    def maybe_add(self, base_offset: int, position: int, timestamp_ms: int) -> None:
        """Record the batch at `position` if it starts a new interval."""
        if position >= self.next_entry_position:
            self.add(base_offset, position, timestamp_ms)

    @property
    def next_entry_position(self) -> int:
        """The first position at which a batch gets an entry (0 while there is none), so a
        writer compares one number per batch instead of calling `maybe_add`."""
        return self._last_position + self.interval_bytes if self.offsets else 0

    def add(self, base_offset: int, position: int, timestamp_ms: int) -> None:
        """Record the batch at `position` (see `next_entry_position`)."""
        self.offsets.append(base_offset)
        self.positions.append(position)
        self.timestamps.append(timestamp_ms)
        self._last_position = position

    def truncate(self, position: int) -> None:
        """Forget entries at or after `position` (after a failed write was cut off)."""
        keep = bisect_left(self.positions, position)
        del self.offsets[keep:], self.positions[keep:], self.timestamps[keep:]
        self._last_position = self.positions[-1] if self.positions else -self.interval_bytes

    def lookup(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch starting at or before `offset`.

        (0, 0)-style start of the segment when nothing is indexed before it.
        """
        i = bisect_right(self.offsets, offset) - 1
        if i < 0:
            return (self.offsets[0] if self.offsets else 0), 0
        return self.offsets[i], self.positions[i]

    def lookup_time(self, timestamp_ms: int) -> tuple[int, int]:
        """(base offset, position) from which a forward scan finds the first batch with
        ts >= timestamp_ms: the last indexed batch older than that, as every batch before it
        is older too. Position 0 when there is none.
        """
        i = bisect_left(self.timestamps, timestamp_ms) - 1
        return (self.offsets[i], self.positions[i]) if i >= 0 else (0, 0)

    @property
    def last_position(self) -> int:
        return self.positions[-1] if self.positions else 0

    @classmethod
    def build(
        cls, batches: Iterable[BatchHeader], interval_bytes: int = DEFAULT_INTERVAL_BYTES
    ) -> SparseIndex:
        """Index a segment from its scanned batch headers."""
        index = cls(interval_bytes)
        for batch in batches:
            index.maybe_add(batch.base_offset, batch.position, batch.timestamp_ms)
        return index

    def encode(self) -> tuple[bytes, bytes]:
        """The `.index` and `.timeindex` file contents."""
        offset_bytes = b"".join(
            _OFFSET_ENTRY.pack(o, p) for o, p in zip(self.offsets, self.positions, strict=True)
        )
        time_bytes = b"".join(
            _TIME_ENTRY.pack(t, o) for t, o in zip(self.timestamps, self.offsets, strict=True)
        )
        return offset_bytes, time_bytes

    @classmethod
    def from_files(
        cls,
        offset_bytes: bytes,
        time_bytes: bytes,
        base_offset: int,
        segment_size: int,
        interval_bytes: int = DEFAULT_INTERVAL_BYTES,
    ) -> SparseIndex | None:
        """Load an index, or None if the bytes are not a consistent index of the segment."""
        if (
            len(offset_bytes) != len(time_bytes)
            or len(offset_bytes) % ENTRY_SIZE
            or (segment_size > 0 and not offset_bytes)
        ):
            return None
        index = cls(interval_bytes)
        pairs = list(_OFFSET_ENTRY.iter_unpack(offset_bytes))
        times = list(_TIME_ENTRY.iter_unpack(time_bytes))
        if pairs and pairs[0] != (base_offset, 0):
            return None
        previous = (base_offset - 1, -1, -(2**63))
        for (offset, position), (timestamp_ms, time_offset) in zip(pairs, times, strict=True):
            if (
                time_offset != offset
                or offset <= previous[0]
                or position <= previous[1]
                or timestamp_ms < previous[2]
                or position >= segment_size
            ):
                return None
            previous = (offset, position, timestamp_ms)
            index.offsets.append(offset)
            index.positions.append(position)
            index.timestamps.append(timestamp_ms)
        index._last_position = index.positions[-1] if index.positions else -interval_bytes
        return index
