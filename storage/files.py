"""Every file operation that changes storage's files, through one small interface.

Two reasons for one door. Safety: the data dir holds every record, so what storage
creates is private by default (directories `dir_mode`, 0700; files the same without the
execute bits, 0600; umask can only tighten them), and it never follows a symlink or uses
an entry it does not own: `open` passes O_NOFOLLOW, and `open`, `listdir` and `ensure_dir`
refuse (UnsafeEntry) anything that is not a regular file or a directory of this user. A
planted `topics/t -> /elsewhere` or a segment replaced by a symlink then stops the
start instead of writing, or truncating, a file outside the data dir. Testing: a test
file system (tests/storage/powerloss.py) subclasses `Files`, records every operation and
builds the disks a power cut could leave, so recovery is checked against them.

Reads (pread, mmap, fstat on a descriptor opened here) do not go through it: a power cut
cannot change what a read returns before the cut.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from storage.errors import DataDirInUse, UnsafeEntry

log = logging.getLogger(__name__)

DEFAULT_DIR_MODE = 0o700
LOCK_FILE = "lock"
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OPEN_FLAGS = os.O_RDWR | os.O_CLOEXEC | _NO_FOLLOW

# Recovery needs a segment's data and size, never its timestamps: fdatasync flushes just
# those (measured here: 61 vs 92 us per 100-byte append). fsync where there is none (macOS).
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def parse_dir_mode(text: str) -> int:
    """A data dir mode written in octal ("0700", "750"), checked as `check_dir_mode` says."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f"expected an octal mode such as 0700, not {text!r}") from None
    check_dir_mode(mode)
    return mode


def check_dir_mode(mode: int) -> None:
    """Refuse a data dir mode that the owner cannot use or that lets others write."""
    if mode & ~0o777 or mode & 0o700 != 0o700:
        raise ValueError(f"the owner needs rwx (0700 at least), not {mode:04o}")
    if mode & 0o022:
        raise ValueError(f"only the owner may write to the data dir, not with {mode:04o}")


def check_entry(path: Path, st: os.stat_result) -> None:
    """Raise UnsafeEntry unless `st` (an lstat) is a regular file or directory of ours."""
    kind = st.st_mode
    if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
        what = "a symlink" if stat.S_ISLNK(kind) else "not a regular file or directory"
        raise UnsafeEntry(f"refusing {path}: {what} (remove it, or restore the real one)")
    if st.st_uid != os.geteuid():
        raise UnsafeEntry(f"refusing {path}: owned by uid {st.st_uid}, not by this user")


class Files:
    """The real file system, with the data dir's modes and checks (module docstring)."""

    def __init__(self, dir_mode: int = DEFAULT_DIR_MODE) -> None:
        check_dir_mode(dir_mode)
        self.dir_mode = dir_mode
        self.file_mode = dir_mode & 0o666

    # -- files --------------------------------------------------------------------------

    def open(self, path: Path, *, create: bool = False, truncate: bool = False) -> int:
        """A read-write descriptor of a regular file of ours (created when `create`)."""
        flags = _OPEN_FLAGS | (os.O_CREAT if create else 0) | (os.O_TRUNC if truncate else 0)
        try:
            fd = os.open(path, flags, self.file_mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeEntry(f"refusing {path}: a symlink") from None
            raise
        try:
            check_entry(path, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def create_temp(self, directory: Path, suffix: str) -> tuple[int, Path]:
        """A new empty file under a random name in `directory` (as tempfile.mkstemp)."""
        while True:
            path = directory / f"tmp{secrets.token_hex(8)}{suffix}"
            try:
                fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, self.file_mode)
            except FileExistsError:
                continue
            return fd, path

    def pwrite(self, fd: int, data: bytes | memoryview, position: int) -> int:
        return os.pwrite(fd, data, position)

    def write_all(self, fd: int, data: bytes | memoryview, position: int) -> None:
        """pwrite until every byte is written (a short write is not an error by itself)."""
        view = memoryview(data)
        while view:
            written = self.pwrite(fd, view, position)
            if written == 0:
                raise OSError("pwrite wrote nothing")
            view = view[written:]
            position += written

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fdatasync(self, fd: int) -> None:
        """Make the file's data and size durable (not its timestamps)."""
        _fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    # -- directory entries ----------------------------------------------------------------

    def rename(self, source: Path, target: Path) -> None:
        os.rename(source, target)

    def unlink(self, path: Path) -> None:
        """Remove a file; one that is already gone is not an error."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def fsync_dir(self, path: Path) -> None:
        """Make a created, renamed or removed directory entry durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | _NO_FOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def ensure_dir(self, path: Path) -> bool:
        """Create `path` (its parent must exist) unless it is already a directory of ours;
        True when it was created (its parent's entry is then not yet durable)."""
        try:
            os.mkdir(path, self.dir_mode)
        except FileExistsError:
            st = os.lstat(path)
            check_entry(path, st)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path)) from None
            return False
        return True

    def listdir(self, path: Path) -> list[str]:
        """The names in a directory of ours, each checked as `check_entry` says."""
        names = os.listdir(path)
        for name in names:
            try:
                st = os.lstat(path / name)
            except FileNotFoundError:  # removed meanwhile
                continue
            check_entry(path / name, st)
        return names


def is_dir(path: Path) -> bool:
    """Whether `path` is a directory, not following a symlink."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def make_data_dir(files: Files, data_dir: Path) -> None:
    """Create the data dir with `files.dir_mode`, or warn when an existing one lets other
    users in further than that (its files may already be readable: see docs/deploy)."""
    try:
        mode = stat.S_IMODE(os.stat(data_dir).st_mode)  # the data dir itself may be a link
    except FileNotFoundError:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        files.ensure_dir(data_dir)
        return
    loose = mode & 0o077 & ~files.dir_mode
    if loose:
        log.warning(
            "data dir %s has mode %04o: other users can %s it (the records are readable "
            "around every ACL); chmod %04o it, or set data_mode to allow this",
            data_dir,
            mode,
            "read" if loose & 0o044 else "enter",
            files.dir_mode,
        )


def make_private_file(files: Files, path: Path, *sidecars: str) -> None:
    """Create `path` empty with `files.file_mode` unless it exists, refusing it (and its
    `sidecars`, `path` + suffix, when present) if not a regular file of ours. For files a
    library opens itself (SQLite copies the database's mode to its -wal and -shm)."""
    files.close(files.open(path, create=True))
    for suffix in sidecars:
        sidecar = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            check_entry(sidecar, os.lstat(sidecar))


def lock_data_dir(files: Files, data_dir: Path) -> int:
    """Take the data dir for this process: an exclusive flock on `<data_dir>/lock`, held
    as long as the returned descriptor is open. The kernel drops it when the process
    ends, kill -9 included, so a crash never leaves a stale lock; a second `logway serve`
    on the same data dir gets DataDirInUse (naming the holder's pid) instead of writing
    into the same segments."""
    path = data_dir / LOCK_FILE
    fd = files.open(path, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        files.close(fd)
        raise DataDirInUse(
            f"data dir {data_dir} is in use by another process (pid {holder}): "
            "one logway serve per data dir"
        ) from None
    except BaseException:
        files.close(fd)
        raise
    files.truncate(fd, 0)
    files.write_all(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
