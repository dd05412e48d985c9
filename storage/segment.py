"""One segment: a `.log` file of batches with its `.index` and `.timeindex`.

Blocking file I/O lives here and is only ever called off the event loop (the engine's
writer thread for appends, its pool for reads and zero-filling). Fields fall in three groups:

- writer state (`size`, `next_offset`, `first_timestamp_ms`, `max_timestamp_ms`, `index`)
  changes only in the writer thread, while the partition's I/O lock is held;
- published state (`readable_size`, `published_max_timestamp_ms`) changes only on the
  event loop once a write has returned, and is all a reader looks at, so a reader never
  sees a half-written batch (nor the zeros after the data);
- the file's length (`file_size`, `sealed`, `closed`) changes only under `_length_lock`.

Zero-filled files: an fdatasync after an append that grows the file also journals the new
size and blocks (measured on ext4: p99 0.57-2.28 ms against 0.22 ms when the append
overwrites bytes the file already has, and fallocate alone does not help: unwritten
extents are converted, and journaled, on first write). So the active segment is kept
zero-filled ahead of its data by `fill_zeros`, from a pool thread, and the next segment's
file is prepared before it is needed (`PreparedFile`). Zeros are only ever written at or
beyond `file_size`, and the writer writes beyond `file_size` only under the same lock, so
zeros never land on data. Only zeros follow the data, where codec.scan stops. A sealed
segment is trimmed to its data. After a crash, recovery keeps a tail of zeros as it is and
cuts anything else after the last whole batch; a sealed segment found with a tail of zeros
(a crash before its trim) is trimmed when it is opened.

Every operation that changes a file goes through `storage.files.Files` (its modes, its
refusal of symlinks, and the power-loss tests' recording file system); reads use the
descriptors it opened.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from storage import codec
from storage.errors import CorruptRecord
from storage.files import Files
from storage.index import SparseIndex
from storage.types import Record

log = logging.getLogger(__name__)

OFFSET_DIGITS = 20
LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
PREPARED_SUFFIX = ".prepared"
# Zeros are written this much at a time under the length lock, so a writer that outruns
# them waits for at most one piece.
_ZERO_PIECE = bytes(256 * 1024)
_READ_CHUNK_BYTES = 256 * 1024
_MAX_CHUNK_BYTES = 16 * 1024 * 1024


def segment_name(base_offset: int) -> str:
    return f"{base_offset:0{OFFSET_DIGITS}d}"


def parse_segment_name(file_name: str) -> int | None:
    """The base offset of a `<20 digits>.log` file name, else None."""
    stem, dot, suffix = file_name.partition(".")
    if dot and "." + suffix == LOG_SUFFIX and len(stem) == OFFSET_DIGITS and stem.isdigit():
        return int(stem)
    return None


FsyncObserver = Callable[[float], None]
"""Told the duration in seconds of every fsync an append waits for, from the thread that
ran it (metrics). Must be thread-safe and quick; storage knows nothing more of it."""


def data_sync(files: Files, on_fsync: FsyncObserver | None) -> Callable[[int], None]:
    """`files.fdatasync`, timed for `on_fsync` when there is one."""
    if on_fsync is None:
        return files.fdatasync

    def timed_sync(fd: int) -> None:
        started = time.perf_counter()
        files.fdatasync(fd)
        on_fsync(time.perf_counter() - started)

    return timed_sync


class Batch(NamedTuple):
    """An encoded batch on its way to a segment: its bytes and what the index needs."""

    data: bytes
    base_offset: int
    record_count: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class RecoveryCut:
    """What recovery removed from the end of an active segment."""

    path: Path
    offset: int  # first offset that was cut (the next offset after recovery)
    position: int
    bytes_cut: int
    reason: str


def _write_zeros(files: Files, fd: int, position: int, count: int) -> None:
    files.write_all(fd, memoryview(_ZERO_PIECE)[:count], position)


class PreparedFile:
    """A zero-filled file under a temporary name that a roll renames into the next segment."""

    def __init__(self, files: Files, path: Path, fd: int, size: int) -> None:
        self.files = files
        self.path = path
        self.fd = fd
        self.size = size

    @classmethod
    def create(cls, files: Files, directory: Path, size: int) -> PreparedFile:
        """Pool thread: write and fdatasync `size` zero bytes (the directory entry is made
        durable by the roll that renames it; one left by a crash is removed on open)."""
        fd, path = files.create_temp(directory, PREPARED_SUFFIX)
        prepared = cls(files, path, fd, 0)
        try:
            while prepared.size < size:
                count = min(len(_ZERO_PIECE), size - prepared.size)
                _write_zeros(files, fd, prepared.size, count)
                prepared.size += count
            files.fdatasync(fd)
        except BaseException:
            prepared.discard()
            raise
        return prepared

    def discard(self) -> None:
        self.files.close(self.fd)
        self.files.unlink(self.path)


class Segment:
    """A segment's file descriptor, index and positions (see the module docstring)."""

    def __init__(
        self,
        files: Files,
        directory: Path,
        base_offset: int,
        fd: int,
        index: SparseIndex,
        file_size: int = 0,
    ) -> None:
        self.files = files
        self.directory = directory
        self.base_offset = base_offset
        self.fd = fd
        self.index = index
        self.file_size = file_size
        self.sealed = False
        self._length_lock = threading.Lock()
        self.size = 0
        self.next_offset = base_offset
        self.first_timestamp_ms: int | None = None
        self.max_timestamp_ms = -1
        self.readable_size = 0
        self.published_max_timestamp_ms = -1
        self.readers = 0
        self.deleted = False
        self.closed = False
        # open_sealed: the offset after the last batch found, None if the data is damaged
        self.scanned_next_offset: int | None = None

    def __repr__(self) -> str:
        return f"Segment({self.log_path}, size={self.size}, next_offset={self.next_offset})"

    @property
    def log_path(self) -> Path:
        return self.directory / (segment_name(self.base_offset) + LOG_SUFFIX)

    @property
    def index_path(self) -> Path:
        return self.directory / (segment_name(self.base_offset) + INDEX_SUFFIX)

    @property
    def time_index_path(self) -> Path:
        return self.directory / (segment_name(self.base_offset) + TIME_INDEX_SUFFIX)

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def create(
        cls, files: Files, directory: Path, base_offset: int, prepared: PreparedFile | None = None
    ) -> Segment:
        """A new empty segment: `prepared` renamed, else a new file (an existing empty
        file of that name is reused)."""
        path = directory / (segment_name(base_offset) + LOG_SUFFIX)
        if prepared is not None:
            if _lstat_size(path):
                raise FileExistsError(f"segment {path} already holds data")
            files.rename(prepared.path, path)
            return cls(files, directory, base_offset, prepared.fd, SparseIndex(), prepared.size)
        fd = files.open(path, create=True)
        if os.fstat(fd).st_size:
            files.close(fd)
            raise FileExistsError(f"segment {path} already holds data")
        return cls(files, directory, base_offset, fd, SparseIndex())

    @classmethod
    def recover(
        cls, files: Files, directory: Path, base_offset: int
    ) -> tuple[Segment, RecoveryCut | None]:
        """Open the active segment: check every batch, cut a torn or corrupt tail (zeros
        after the data stay: they are the zero-filled room ahead of the writer)."""
        path = directory / (segment_name(base_offset) + LOG_SUFFIX)
        fd = files.open(path)
        try:
            file_size = os.fstat(fd).st_size
            index, result = _scan_file(fd, file_size, base_offset)
            cut = None
            if result.error is not None:
                next_offset = result.last.next_offset if result.last else base_offset
                cut = RecoveryCut(
                    path, next_offset, result.valid_end, file_size - result.valid_end, result.error
                )
                files.truncate(fd, result.valid_end)
                files.fsync(fd)
                file_size = result.valid_end
        except BaseException:
            files.close(fd)
            raise
        segment = cls(files, directory, base_offset, fd, index, file_size)
        segment.size = segment.readable_size = result.valid_end
        if result.last is not None:
            segment.next_offset = result.last.next_offset
            segment.first_timestamp_ms = index.timestamps[0]
            segment.max_timestamp_ms = result.last.timestamp_ms
            segment.published_max_timestamp_ms = result.last.timestamp_ms
        return segment, cut

    @classmethod
    def open_sealed(
        cls, files: Files, directory: Path, base_offset: int, next_offset: int
    ) -> Segment:
        """Open a sealed segment; its index is loaded, or rebuilt if missing or damaged.

        `next_offset` is the next segment's base offset. The segment is not fully checked
        here: a corrupt batch surfaces as CorruptRecord when it is read. Zeros after its
        data (a crash came between the roll and the trim) are trimmed now.
        """
        path = directory / (segment_name(base_offset) + LOG_SUFFIX)
        fd = files.open(path)
        try:
            file_size = os.fstat(fd).st_size
            segment = cls(files, directory, base_offset, fd, SparseIndex(), file_size)
            segment.sealed = True
            index = segment._load_index(file_size)
            last: codec.BatchHeader | None = None
            data_end = file_size
            damaged = False
            if index is not None:
                # The batches after the last entry give the newest timestamp and the end of
                # the data; if they do not scan, the index (or the segment) is wrong and a
                # full scan decides which.
                start = index.last_position
                data = os.pread(fd, file_size - start, start)
                result = codec.scan(data, 0, index.offsets[-1] if len(index) else base_offset)
                if result.error is None:
                    segment.index = index
                    last = result.last
                    data_end = start + result.valid_end
                else:
                    index = None
            if index is None:
                segment.index, result = _scan_file(fd, file_size, base_offset)
                if result.error is None:
                    data_end = result.valid_end
                else:  # left in place: reading the damaged batch is an error
                    log.error("sealed segment %s is damaged: %s", path, result.error)
                    damaged = True
                segment._write_index()
                last = result.last
            if data_end < file_size:
                files.truncate(fd, data_end)
                segment.file_size = data_end
        except BaseException:
            files.close(fd)
            raise
        segment.size = segment.readable_size = data_end
        segment.next_offset = next_offset
        if not damaged:
            segment.scanned_next_offset = last.next_offset if last is not None else base_offset
        if len(segment.index):
            segment.first_timestamp_ms = segment.index.timestamps[0]
            segment.max_timestamp_ms = segment.index.timestamps[-1]
        if last is not None:
            segment.max_timestamp_ms = max(segment.max_timestamp_ms, last.timestamp_ms)
        segment.published_max_timestamp_ms = segment.max_timestamp_ms
        return segment

    def _load_index(self, size: int) -> SparseIndex | None:
        try:
            offset_bytes = self._read_whole(self.index_path)
            time_bytes = self._read_whole(self.time_index_path)
        except FileNotFoundError:
            return None
        index = SparseIndex.from_files(offset_bytes, time_bytes, self.base_offset, size)
        if index is None:
            log.warning("index of %s is damaged; rebuilding it from the segment", self.log_path)
        return index

    def _read_whole(self, path: Path) -> bytes:
        fd = self.files.open(path)
        try:
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            self.files.close(fd)

    # -- writing (I/O lock held, in the writer thread) -------------------------------------

    def _write_index(self) -> None:
        """Not synced: a torn index is refused by `SparseIndex.from_files` and rebuilt."""
        offset_bytes, time_bytes = self.index.encode()
        for path, data in ((self.index_path, offset_bytes), (self.time_index_path, time_bytes)):
            fd = self.files.open(path, create=True, truncate=True)
            try:
                self.files.write_all(fd, data, 0)
            finally:
                self.files.close(fd)

    def seal(self, sync: Callable[[int], None] | None) -> None:
        """Sync (when `sync` is given), index and trim a segment that takes no more appends.

        The trim is not synced: a crash before it is durable leaves zeros after the data,
        which `open_sealed` trims.
        """
        if sync is not None:
            sync(self.fd)
        self._write_index()
        with self._length_lock:
            self.sealed = True
            if self.file_size > self.size:
                self.files.truncate(self.fd, self.size)
                self.file_size = self.size

    def write_locked(
        self, data: bytes, batches: Sequence[Batch], sync: Callable[[int], None] | None
    ) -> None:
        """Append `data` (the bytes of `batches`), then `sync` the file when given."""
        start = self.size
        position = start
        index = self.index
        due = index.next_entry_position
        try:
            for batch in batches:
                if position >= due:
                    index.add(batch.base_offset, position, batch.timestamp_ms)
                    due = index.next_entry_position
                position += len(batch.data)
            if position <= self.file_size:  # only this thread makes file_size smaller
                self.files.write_all(self.fd, data, start)
            else:  # beyond the zeros: the file grows, and no zeros may be written meanwhile
                with self._length_lock:
                    self.files.write_all(self.fd, data, start)
                    self.file_size = max(self.file_size, position)
            if sync is not None:
                sync(self.fd)
        except BaseException:
            index.truncate(start)
            raise
        self.size = position
        last = batches[-1]
        self.next_offset = last.base_offset + last.record_count
        if self.first_timestamp_ms is None:
            self.first_timestamp_ms = batches[0].timestamp_ms
        self.max_timestamp_ms = last.timestamp_ms

    def truncate_locked(self, size: int) -> None:
        """Cut the file back to `size` after a failed write."""
        with self._length_lock:
            self.files.truncate(self.fd, size)
            self.file_size = size
        self.index.truncate(size)

    def fill_zeros(self, target_size: int) -> None:
        """Pool thread: extend the file with zeros up to `target_size`, then fdatasync them.

        Stops early once the segment is sealed or closed. The lock is held for one piece at
        a time, and for the fdatasync only so that the descriptor stays open.
        """
        filled = False
        while True:
            with self._length_lock:
                if self.sealed or self.closed or self.file_size >= target_size:
                    break
                count = min(len(_ZERO_PIECE), target_size - self.file_size)
                _write_zeros(self.files, self.fd, self.file_size, count)
                self.file_size += count
                filled = True
        if filled:
            with self._length_lock:
                if not self.closed:
                    self.files.fdatasync(self.fd)

    def close(self) -> None:
        with self._length_lock:
            if not self.closed:
                self.closed = True
                self.files.close(self.fd)

    def unlink(self) -> None:
        for path in (self.log_path, self.index_path, self.time_index_path):
            self.files.unlink(path)

    # -- reading (any thread; only below a published `limit`) -------------------------------

    def read(
        self, offset: int, limit: int, max_records: int, max_bytes: int, at_least_one: bool
    ) -> codec.Decoded:
        """Records from `offset` on, reading only below file position `limit`."""
        index_offset, position = self.index.lookup(offset)
        records: list[Record] = []
        used_bytes = 0
        first_offset = offset
        want_at_least = 0
        checked_index = False
        while position < limit:
            want = min(
                limit - position,
                max(
                    _READ_CHUNK_BYTES, want_at_least, min(max_bytes - used_bytes, _MAX_CHUNK_BYTES)
                ),
            )
            buf = os.pread(self.fd, want, position)
            if len(buf) < want:
                raise CorruptRecord(f"{self.log_path} is shorter than expected")
            if not checked_index:
                checked_index = True
                if position and not _starts_batch(buf, index_offset):
                    log.warning("index of %s is wrong; scanning from the start", self.log_path)
                    position = 0
                    continue
            decoded = codec.decode(
                buf,
                first_offset,
                max_records - len(records),
                max_bytes - used_bytes,
                at_least_one=at_least_one and not records,
            )
            records.extend(decoded.records)
            used_bytes += decoded.used_bytes
            if decoded.full:
                return codec.Decoded(records, 0, used_bytes, True)
            if decoded.records:
                first_offset = decoded.records[-1].offset + 1
            if decoded.next_position == 0:
                header = codec.read_header(buf, 0)
                if header is None or position + header.size > limit:
                    raise CorruptRecord(f"batch at {self.log_path}:{position} overruns the segment")
                want_at_least = header.size
            else:
                want_at_least = 0
            position += decoded.next_position
        return codec.Decoded(records, position, used_bytes, False)

    def find_timestamp(self, timestamp_ms: int, limit: int) -> int | None:
        """The base offset of the first batch with timestamp >= `timestamp_ms`, if any."""
        indexed_offset, position = self.index.lookup_time(timestamp_ms)
        if position and not _starts_batch(
            os.pread(self.fd, codec.BATCH_HEADER_SIZE, position), indexed_offset
        ):
            log.warning("index of %s is wrong; scanning from the start", self.log_path)
            position = 0
        while position < limit:
            buf = os.pread(self.fd, min(limit - position, _READ_CHUNK_BYTES), position)
            cursor = 0
            while True:
                header = codec.read_header(buf, cursor)
                if header is None or header.end_position > len(buf):
                    break
                if header.timestamp_ms >= timestamp_ms:
                    return header.base_offset
                cursor = header.end_position
            if cursor == 0:
                header = codec.read_header(buf, 0)
                if header is None:
                    raise CorruptRecord(f"{self.log_path} is shorter than expected")
                if header.timestamp_ms >= timestamp_ms:
                    return header.base_offset
                cursor = header.size
            position += cursor
        return None


def _lstat_size(path: Path) -> int:
    """The size of `path` itself (0 when missing); a symlink's is its target's name."""
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def _scan_file(fd: int, size: int, base_offset: int) -> tuple[SparseIndex, codec.ScanResult]:
    """Check a whole segment file and index it, through mmap in constant memory."""
    index = SparseIndex()

    def visit(header: codec.BatchHeader) -> None:
        index.maybe_add(header.base_offset, header.position, header.timestamp_ms)

    if size == 0:
        return index, codec.scan(b"", 0, base_offset)
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mapped:
        return index, codec.scan(mapped, 0, base_offset, visit)


def _starts_batch(buf: bytes, base_offset: int) -> bool:
    """Whether `buf` starts with the header of the batch at `base_offset` (an index check)."""
    try:
        header = codec.read_header(buf, 0)
    except CorruptRecord:
        return False
    return header is not None and header.base_offset == base_offset
