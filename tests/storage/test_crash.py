"""kill -9 at random instants: every acknowledged record survives byte for byte, offsets
stay dense and nothing torn is ever served. The instants include zero-filling ahead of the
writer, preparing the next segment's file, rolls and the trim of a sealed segment (16 KiB
segments roll every few dozen appends)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import codec
from storage.log import LogEngine
from storage.segment import parse_segment_name
from storage.types import DurabilityPolicy, Record
from tests.storage.crash_writer import CONFIG, digest_of, value_is_whole

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 25


def _run_and_kill(data_dir: Path, rng: random.Random) -> list[tuple[int, int, str]]:
    """Start the writer, SIGKILL it at a random moment, return the acks it printed."""
    with subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_writer", str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    ) as process:
        try:
            assert process.stdout is not None
            if rng.random() < 0.15:
                time.sleep(rng.uniform(0, 0.3))  # sometimes during start-up and recovery
            else:
                assert process.stdout.readline().startswith(b"ready")
                time.sleep(rng.uniform(0, 0.25))
            process.send_signal(signal.SIGKILL)
            output = process.stdout.read()
        finally:
            process.kill()
    acks = []
    for line in output.decode().splitlines():
        if line.startswith("ready") or not line.endswith(tuple("0123456789abcdef")):
            continue
        parts = line.split()
        if len(parts) == 3 and len(parts[2]) == 64:  # a complete line is an acknowledged append
            acks.append((int(parts[0]), int(parts[1]), parts[2]))
    return acks


async def _read_back(data_dir: Path) -> list[Record]:
    engine = await LogEngine.open(data_dir, DurabilityPolicy(), 3600)
    try:
        await engine.open_topic("t", 1, CONFIG)
        info = engine.partition_info("t", 0)
        assert info.log_start_offset == 0
        records: list[Record] = []
        while len(records) < info.end_offset:
            records += await engine.read("t", 0, len(records), 10_000, 1 << 24)
        return records
    finally:
        await engine.close()


def _check_files(partition_dir: Path) -> None:
    """After a reopen: sealed segments end at their data, only zeros follow the active
    segment's data, and no prepared file is left."""
    files = sorted(partition_dir.glob("*.log"))
    for path in files:
        base = parse_segment_name(path.name)
        assert base is not None
        data = path.read_bytes()
        scanned = codec.scan(data, 0, base)
        assert scanned.error is None, (path, scanned.error)
        if path != files[-1]:
            assert scanned.valid_end == len(data), path
    assert not list(partition_dir.glob("*.prepared"))


@pytest.mark.slow
def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(1234)
    acknowledged: list[tuple[int, int, str]] = []
    for _ in range(ROUNDS):
        acknowledged += _run_and_kill(tmp_path, rng)
        records = asyncio.run(_read_back(tmp_path))
        _check_files(tmp_path / "t" / "0")
        assert [r.offset for r in records] == list(range(len(records)))
        assert all(value_is_whole(r.value) for r in records)
        for base_offset, count, digest in acknowledged:
            assert base_offset + count <= len(records), f"acked offset {base_offset} lost"
            values = [r.value for r in records[base_offset : base_offset + count]]
            assert digest_of(values) == digest, f"acked batch at {base_offset} changed"
    assert len(acknowledged) > ROUNDS  # the test did exercise the writer
    assert len(list((tmp_path / "t" / "0").glob("*.log"))) > 1  # and rolls happened
