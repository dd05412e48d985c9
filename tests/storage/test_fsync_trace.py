"""The syscalls, counted with strace: an acknowledged append was written and fdatasynced
before its acknowledgement, group commit shares fdatasyncs, and zeros never land on data.

The writer (tests/storage/crash_writer.py, fsync=always, 16 KiB segments so that it rolls
often) runs under `strace -f -y`, which names each descriptor's file. After it exits, the
segment files give every batch's place; the trace must show, for each acknowledged batch,
the pwrite that wrote it and then a completed fdatasync of that file, both before the line
that acknowledged it was written to stdout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage import codec
from storage.segment import parse_segment_name

ROOT = Path(__file__).resolve().parents[2]
APPENDS_PER_PRODUCER = 40
PRODUCERS = 8

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")

_LINE = re.compile(r"^(\d+) +(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_FD_PATH = re.compile(r"^\d+<([^>]*)>")


@dataclass
class Write:
    line: int
    path: str
    position: int
    count: int
    zeros: bool


@dataclass
class Trace:
    writes: list[Write]
    syncs: dict[str, list[int]]  # path -> lines where an fdatasync of it completed
    acks: list[tuple[int, int]]  # (line where the ack's write to stdout started, base offset)


def _parse(text: str) -> Trace:
    """strace -f prints a call whole when nothing interleaves, else `<unfinished ...>` at
    entry and `<... name resumed>` at exit: order of lines is order of events."""
    trace = Trace([], {}, [])
    pending: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(text.splitlines()):
        match = _LINE.match(raw)
        if match is None:
            continue
        pid, rest = match.groups()
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            name, args = pending.pop(pid)
            finished = True
        else:
            call = _CALL.match(rest)
            if call is None:
                continue
            name, args = call.groups()
            finished = not args.endswith(" <unfinished ...>")
            if finished:  # name(args) = result: the last ") = " ends the arguments
                args = args.rpartition(") = ")[0]
            else:
                args = args.removesuffix(" <unfinished ...>")
                pending[pid] = (name, args)
        if name == "write" and args.startswith("1<") and (resumed is None):
            content = args.split('"', 2)[1]
            for ack in content.split("\\n"):
                parts = ack.split()
                if len(parts) == 3:
                    trace.acks.append((number, int(parts[0])))
        elif name == "pwrite64" and finished:
            path_match = _FD_PATH.match(args)
            assert path_match is not None, raw
            count, position = args.rsplit(", ", 2)[-2:]
            zeros = args.split('"', 2)[1].startswith("\\0\\0\\0\\0")
            trace.writes.append(
                Write(number, path_match.group(1), int(position), int(count), zeros)
            )
        elif name == "fdatasync" and finished:
            path_match = _FD_PATH.match(args)
            assert path_match is not None, raw
            trace.syncs.setdefault(path_match.group(1), []).append(number)
    return trace


def _batches(partition_dir: Path) -> dict[int, tuple[str, codec.BatchHeader]]:
    """Every batch in the segment files: base offset -> (file, header)."""
    found = {}
    for path in partition_dir.glob("*.log"):
        base = parse_segment_name(path.name)
        assert base is not None
        scanned = codec.scan(path.read_bytes(), 0, base)
        assert scanned.error is None, scanned.error
        for header in scanned.batches:
            found[header.base_offset] = (str(path), header)
    return found


def test_every_ack_follows_its_write_and_fdatasync(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    trace_file = tmp_path / "trace"
    subprocess.run(
        [
            "strace",
            "-f",
            "-y",
            "-s",
            "100",
            "-e",
            "trace=pwrite64,write,fdatasync",
            "-o",
            str(trace_file),
            sys.executable,
            "-m",
            "tests.storage.crash_writer",
            str(data_dir),
            str(APPENDS_PER_PRODUCER),
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=120,
    )
    trace = _parse(trace_file.read_text())
    batches = _batches(data_dir / "t" / "0")
    assert len(trace.acks) == APPENDS_PER_PRODUCER * PRODUCERS
    data_writes = [w for w in trace.writes if w.path.endswith(".log") and not w.zeros]
    for ack_line, base_offset in trace.acks:
        path, header = batches[base_offset]
        covering = [
            w
            for w in data_writes
            if w.line < ack_line
            and w.path == path
            and w.position <= header.position
            and header.end_position <= w.position + w.count
        ]
        assert covering, f"batch {base_offset} acknowledged before it was written"
        written = covering[-1].line
        assert any(written < line < ack_line for line in trace.syncs.get(path, [])), (
            f"batch {base_offset} acknowledged before an fdatasync of {path}"
        )
    # Group commit: 8 producers, one fdatasync per group (plus one per roll), never one
    # per append.
    log_syncs = sum(len(lines) for path, lines in trace.syncs.items() if path.endswith(".log"))
    assert log_syncs < len(trace.acks)
    # Zeros only ever go where no data was written before.
    for zero in (w for w in trace.writes if w.zeros):
        assert not any(
            w.line < zero.line
            and w.path == zero.path
            and w.position < zero.position + zero.count
            and zero.position < w.position + w.count
            for w in data_writes
        ), f"zeros written over data in {zero.path} at {zero.position}"
