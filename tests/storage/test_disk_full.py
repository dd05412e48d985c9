"""A full disk (RLIMIT_FSIZE in a subprocess): appends raise DiskFull, the partition stays
failed until reopened, and every acknowledged record is intact afterwards."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from storage import codec
from storage.log import LogEngine
from storage.types import DurabilityPolicy, NewRecord, TopicConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIG = TopicConfig(segment_bytes=1 << 20, retention_ms=None)
FILE_SIZE_LIMIT = 100_000

WRITER = """
import asyncio, json, resource, signal, sys
from pathlib import Path
from storage.errors import DiskFull, StorageWriteError
from storage.log import LogEngine
from storage.types import DurabilityPolicy, NewRecord, TopicConfig

async def main() -> None:
    engine = await LogEngine.open(Path(sys.argv[1]), DurabilityPolicy(), 3600)
    await engine.open_topic("t", 1, TopicConfig(segment_bytes=1 << 20, retention_ms=None))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    acked, errors = [], []

    async def produce(producer: int) -> None:
        for i in range(10_000):
            values = [b"%d-%d-%d|" % (producer, i, j) + b"x" * 700 for j in range(1 + i % 3)]
            try:
                result = await engine.append("t", 0, [NewRecord(v) for v in values])
            except StorageWriteError as exc:
                errors.append(type(exc).__name__)
                return
            acked.append([result.base_offset, [v.decode() for v in values]])

    await asyncio.gather(*(produce(p) for p in range(4)))
    try:
        await engine.append("t", 0, [NewRecord(b"later")])
        errors.append("none")
    except StorageWriteError as exc:
        errors.append("sticky " + type(exc).__name__)
    records = await engine.read("t", 0, 0, 10**6, 10**9)
    await engine.close()
    print(json.dumps({"acked": acked, "errors": errors, "readable": len(records)}))

asyncio.run(main())
"""


async def _read_all(data_dir: Path) -> tuple[list[bytes], int]:
    engine = await LogEngine.open(data_dir, DurabilityPolicy(), 3600)
    try:
        await engine.open_topic("t", 1, CONFIG)
        records = await engine.read("t", 0, 0, 10**6, 10**9)
        assert [r.offset for r in records] == list(range(len(records)))
        next_offset = (await engine.append("t", 0, [NewRecord(b"after reopen")])).base_offset
        return [r.value for r in records], next_offset
    finally:
        await engine.close()


def test_disk_full_is_typed_sticky_and_harmless(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path), str(FILE_SIZE_LIMIT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    errors = report["errors"]
    assert errors[:4] == ["DiskFull"] * 4, errors  # every producer saw DiskFull
    assert errors[4] == "sticky DiskFull"
    acked: dict[int, list[str]] = {base: values for base, values in report["acked"]}
    acked_count = sum(len(v) for v in acked.values())
    assert acked_count > 50
    assert report["readable"] == acked_count  # reads kept working, saw only acked records
    assert "append to t/0 failed" in result.stderr
    # Zero-filling ahead hit the limit first; it said so once and then paused.
    assert result.stderr.count("could not zero-fill ahead of t/0") == 1

    values, next_offset = asyncio.run(_read_all(tmp_path))
    # The failed batches were cut off: the log holds exactly the acknowledged records.
    assert len(values) == acked_count == next_offset
    for base, expected in acked.items():
        assert [v.decode() for v in values[base : base + len(expected)]] == expected
    # Only zeros follow the data (the reopened engine zero-fills ahead of its writes).
    data = (tmp_path / "t" / "0" / f"{0:020d}.log").read_bytes()
    scanned = codec.scan(data, 0, 0)
    assert scanned.error is None
    assert scanned.valid_end <= FILE_SIZE_LIMIT + 200
