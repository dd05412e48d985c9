"""Which produce requests a partition holds: its tagged batches of the last window.

A produce request with an Idempotency-Key writes its produce tag (storage.types.ProduceTag)
into each batch it appends, under the batch's checksum (storage.codec). The partition keeps
the tags of the batches it wrote in the idempotency window in a `TagIndex`, filled by
`scan_tags` when the partition opens and by each tagged append it writes, so that a retry
of the request, after a crash between the append and the answer or after one partition of
the request failed, gets the first append's result instead of writing the records again.

The window is a time (batches older than `window_ms` are not looked at) and a count (at
most `max_keys` tags per partition, the oldest forgotten first): a retry later than either
writes again, as a request with a new key would.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

from storage import codec
from storage.errors import CorruptRecord
from storage.segment import Segment
from storage.types import AppendResult, IdempotencyWindow

log = logging.getLogger(__name__)

_SCAN_CHUNK_BYTES = 256 * 1024


class TaggedAppend(NamedTuple):
    """A tagged batch in the log: the request digest it was written for and its result."""

    request: bytes
    result: AppendResult


class TagIndex:
    """Key digest -> the tagged append of the last window (see the module docstring)."""

    def __init__(self, window: IdempotencyWindow) -> None:
        self.window = window
        self._appends: OrderedDict[bytes, TaggedAppend] = OrderedDict()

    def __len__(self) -> int:
        return len(self._appends)

    def get(self, key: bytes, now_ms: int) -> TaggedAppend | None:
        """The append made with `key`, unless it is older than the window."""
        found = self._appends.get(key)
        if found is None:
            return None
        if found.result.timestamp_ms < now_ms - self.window.window_ms:
            del self._appends[key]
            return None
        return found

    def add(self, key: bytes, append: TaggedAppend) -> None:
        """Remember an append (the newest last), forgetting the oldest beyond max_keys."""
        self._appends[key] = append
        self._appends.move_to_end(key)
        while len(self._appends) > self.window.max_keys:
            self._appends.popitem(last=False)


def scan_tags(
    segments: Sequence[Segment], limits: Sequence[int], since_ms: int, index: TagIndex
) -> None:
    """Worker thread: add to `index` the tags of the batches written at or after `since_ms`,
    reading each segment below its limit (its recovered, published size).

    Walks batch headers only (storage.codec.tagged_batches; the records of batches larger
    than a chunk are skipped, not read); a segment whose headers stop making sense is
    logged and left, since recovery already cut the active segment at its last valid batch.
    """
    for segment, limit in zip(segments, limits, strict=True):
        if segment.published_max_timestamp_ms < since_ms:
            continue
        position = 0
        while position < limit:
            buf = os.pread(segment.fd, min(_SCAN_CHUNK_BYTES, limit - position), position)
            try:
                found, walked = codec.tagged_batches(buf, since_ms)
            except CorruptRecord as exc:
                log.warning(
                    "produce tags of %s not read past %d: %s", segment.log_path, position, exc
                )
                break
            for tag, result in found:
                index.add(tag.key, TaggedAppend(tag.request, result))
            if walked == 0:
                break
            position += walked
