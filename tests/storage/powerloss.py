"""Simulated power loss: a recording file system and the disks a power cut could leave.

`RecordingFiles` is storage's `Files` (storage/files.py) over a real directory: every call
does the real operation, so the engine reads what it wrote, and appends one `Op` to a
trace, under one lock so the trace is the order the kernel saw. `crash_image(trace, k,
rng)` is a disk a power cut after the first `k` operations could leave:

- a file's write or truncate is durable once an fdatasync/fsync of that file ran after
  it; each other one is kept or lost sector by sector (512 bytes, torn), a file's size
  change independently of its data (a grown file reads zeros where data was lost), in any
  combination across files;
- a directory entry (create, mkdir, rename, unlink) is durable once an fsync of its
  directory ran after it; each other one is kept or lost (a lost rename leaves the old
  name), and whatever sits in a lost directory is lost with it.

`Image` is such a disk in memory (the initial one too: a trace can start from a crashed
disk, for a crash during recovery); `Image.write(root)` puts it on a real directory.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from storage.files import Files

SECTOR = 512


@dataclass(frozen=True, slots=True)
class Op:
    """One recorded operation. `inode` names a file's contents across renames."""

    kind: str  # write | truncate | sync | create | mkdir | rename | unlink | syncdir
    inode: int = -1
    path: str = ""  # relative to the root; create/mkdir/unlink/rename source
    target: str = ""  # rename target
    position: int = 0  # write: file position; truncate: the new size
    data: bytes = b""

    @property
    def directory(self) -> str:
        """The directory whose entries the op changes (syncdir: the one it syncs)."""
        return self.path if self.kind == "syncdir" else os.path.dirname(self.path)


@dataclass
class Image:
    """A disk: directories and files (by relative path), and each file's bytes by inode."""

    dirs: set[str] = field(default_factory=lambda: {""})
    names: dict[str, int] = field(default_factory=dict)
    contents: dict[int, bytes] = field(default_factory=dict)

    def write(self, root: Path) -> None:
        """Make `root` (new or empty) hold exactly this disk."""
        for directory in sorted(self.dirs, key=len):
            (root / directory).mkdir(parents=True, exist_ok=True)
        for name, inode in self.names.items():
            (root / name).write_bytes(self.contents[inode])

    @classmethod
    def read(cls, root: Path) -> Image:
        image = cls()
        for directory, dirs, names in os.walk(root):
            relative = os.path.relpath(directory, root)
            relative = "" if relative == "." else relative
            image.dirs.update(os.path.join(relative, d) for d in dirs)
            for name in names:
                inode = len(image.contents)
                image.names[os.path.join(relative, name)] = inode
                image.contents[inode] = (Path(directory) / name).read_bytes()
        return image


class RecordingFiles(Files):
    """Files over a real directory `root` that records every operation (module docstring)."""

    def __init__(self, root: Path, initial: Image | None = None) -> None:
        super().__init__()
        self.root = root
        self.initial = initial or Image.read(root)
        self.trace: list[Op] = []
        self._lock = threading.RLock()
        self._names = dict(self.initial.names)  # the live namespace
        self._inodes: dict[int, int] = {}  # fd -> inode
        self._next_inode = max(self.initial.contents, default=-1) + 1

    def _relative(self, path: Path) -> str:
        relative = os.path.relpath(path, self.root)
        return "" if relative == "." else relative

    def _new_inode(self, path: Path) -> int:
        inode = self._next_inode
        self._next_inode += 1
        self._names[self._relative(path)] = inode
        self.trace.append(Op("create", inode, self._relative(path)))
        return inode

    def open(self, path: Path, *, create: bool = False, truncate: bool = False) -> int:
        with self._lock:
            existed = path.exists()
            fd = super().open(path, create=create, truncate=truncate)
            name = self._relative(path)
            inode = self._names[name] if existed else self._new_inode(path)
            self._inodes[fd] = inode
            if truncate:
                self.trace.append(Op("truncate", inode, position=0))
            return fd

    def create_temp(self, directory: Path, suffix: str) -> tuple[int, Path]:
        with self._lock:
            fd, path = super().create_temp(directory, suffix)
            self._inodes[fd] = self._new_inode(path)
            return fd, path

    def pwrite(self, fd: int, data: bytes | memoryview, position: int) -> int:
        with self._lock:
            written = super().pwrite(fd, data, position)
            self.trace.append(Op("write", self._inodes[fd], position=position, data=bytes(data)))
            return written

    def truncate(self, fd: int, size: int) -> None:
        with self._lock:
            super().truncate(fd, size)
            self.trace.append(Op("truncate", self._inodes[fd], position=size))

    def fdatasync(self, fd: int) -> None:
        with self._lock:
            super().fdatasync(fd)
            self.trace.append(Op("sync", self._inodes[fd]))

    def fsync(self, fd: int) -> None:
        with self._lock:
            super().fsync(fd)
            self.trace.append(Op("sync", self._inodes[fd]))

    def close(self, fd: int) -> None:
        with self._lock:
            super().close(fd)
            del self._inodes[fd]

    def rename(self, source: Path, target: Path) -> None:
        with self._lock:
            super().rename(source, target)
            inode = self._names.pop(self._relative(source))
            self._names[self._relative(target)] = inode
            self.trace.append(
                Op("rename", path=self._relative(source), target=self._relative(target))
            )

    def unlink(self, path: Path) -> None:
        with self._lock:
            existed = path.exists()
            super().unlink(path)
            if existed:
                self._names.pop(self._relative(path))
                self.trace.append(Op("unlink", path=self._relative(path)))

    def fsync_dir(self, path: Path) -> None:
        with self._lock:
            super().fsync_dir(path)
            self.trace.append(Op("syncdir", path=self._relative(path)))

    def ensure_dir(self, path: Path) -> bool:
        with self._lock:
            created = super().ensure_dir(path)
            if created:
                self.trace.append(Op("mkdir", path=self._relative(path)))
            return created


def _durable_prefixes(ops: list[Op]) -> tuple[dict[int, int], dict[str, int]]:
    """For each inode and directory: how many of `ops` its last sync covers."""
    files: dict[int, int] = {}
    dirs: dict[str, int] = {}
    for i, op in enumerate(ops):
        if op.kind == "sync":
            files[op.inode] = i
        elif op.kind == "syncdir":
            dirs[op.directory] = i
    return files, dirs


def crash_image(initial: Image, trace: list[Op], k: int, rng: random.Random) -> Image:
    """A disk a power cut after `trace[:k]` could leave (module docstring)."""
    ops = trace[:k]
    synced_files, synced_dirs = _durable_prefixes(ops)
    image = Image(set(initial.dirs), dict(initial.names), {})
    for i, op in enumerate(ops):
        if op.kind not in ("create", "mkdir", "rename", "unlink"):
            continue
        parent = op.directory
        if parent not in image.dirs:
            continue  # its directory was lost
        if i >= synced_dirs.get(parent, -1) and rng.random() < 0.5:
            continue  # lost
        if op.kind == "mkdir":
            image.dirs.add(op.path)
        elif op.kind == "create":
            image.names.setdefault(op.path, op.inode)
        elif op.kind == "rename":
            if op.path in image.names:
                image.names[op.target] = image.names.pop(op.path)
        else:
            image.names.pop(op.path, None)
    image.names = {n: i for n, i in image.names.items() if os.path.dirname(n) in image.dirs}
    wanted = set(image.names.values())
    contents = {i: bytearray(initial.contents.get(i, b"")) for i in wanted}
    for i, op in enumerate(ops):
        if op.inode not in wanted or op.kind not in ("write", "truncate"):
            continue
        data = contents[op.inode]
        durable = i < synced_files.get(op.inode, -1)
        if op.kind == "truncate":
            if durable or rng.random() < 0.5:
                _resize(data, op.position)
            continue
        end = op.position + len(op.data)
        if end > len(data) and (durable or rng.random() < 0.5):
            _resize(data, end)  # the size change made it, whatever the data did
        for start in range(op.position - op.position % SECTOR, end, SECTOR):
            low, high = max(start, op.position), min(start + SECTOR, end, len(data))
            if low < high and (durable or rng.random() < 0.5):
                data[low:high] = op.data[low - op.position : high - op.position]
    image.contents = {i: bytes(c) for i, c in contents.items()}
    return image


def _resize(data: bytearray, size: int) -> None:
    if size < len(data):
        del data[size:]
    else:
        data.extend(bytes(size - len(data)))
