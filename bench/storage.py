"""Storage benchmark: the embedded log against raw os.write/os.fsync in the same process.

    python -m bench.storage [--dir PATH] [--quick]

100-byte record values. Prints one table:

- durable appends (fsync=always) from 1, 16 and 256 concurrent producers to one
  partition, with records/s and p50/p99 append latency, twice: each append a small batch
  of 4 records, then each append a batch of 1,000 records; beside the baseline of
  os.write + os.fsync per batch of the append's size (4, then 1,000 records);
- fsync=never appends of 1,000 records each against raw os.write of the same bytes;
- sequential reads of the whole log from a reopened engine (cold: through the files)
  and while the data is still in the partition's tail cache.

Files go to a temporary directory under --dir (default: the system temp directory); the
baselines write to the same directory as the log, so both hit the same disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from storage import codec
from storage.log import LogEngine
from storage.types import Durability, DurabilityPolicy, NewRecord, TopicConfig

VALUE_BYTES = 100
SMALL_APPEND = 4
NEVER_BATCH = 1000
CONFIG = TopicConfig(retention_ms=None)


def _records(count: int) -> list[NewRecord]:
    return [NewRecord(b"%08d" % i + b"x" * (VALUE_BYTES - 8)) for i in range(count)]


def _batch_bytes(count: int) -> bytes:
    return codec.encode_batch(0, 0, _records(count))


def raw_write(directory: Path, batch_records: int, total_records: int, fsync: bool) -> float:
    """records/s of os.write (+ os.fsync) of pre-encoded batches of `batch_records`."""
    data = _batch_bytes(batch_records)
    path = directory / f"raw-{batch_records}-{fsync}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        batches = max(1, total_records // batch_records)
        start = time.perf_counter()
        for _ in range(batches):
            os.write(fd, data)
            if fsync:
                os.fsync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return batches * batch_records / elapsed


async def _engine(directory: Path, mode: Durability) -> LogEngine:
    engine = await LogEngine.open(directory, DurabilityPolicy(mode), 3600)
    await engine.open_topic("bench", 1, CONFIG)
    return engine


async def durable_appends(
    directory: Path, producers: int, per_append: int, total_records: int
) -> tuple[float, float, float]:
    """(records/s, p50 ms, p99 ms) of fsync=always appends from concurrent producers."""
    engine = await _engine(directory, Durability.ALWAYS)
    records = _records(per_append)
    appends_each = max(1, total_records // (producers * per_append))
    latencies: list[float] = []

    async def produce() -> None:
        for _ in range(appends_each):
            start = time.perf_counter()
            await engine.append("bench", 0, records)
            latencies.append(time.perf_counter() - start)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(produce() for _ in range(producers)))
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    quantiles = statistics.quantiles(latencies, n=100)
    rate = producers * appends_each * per_append / elapsed
    return rate, quantiles[49] * 1000, quantiles[98] * 1000


async def never_appends(directory: Path, total_records: int, producers: int) -> float:
    """records/s of fsync=never appends of NEVER_BATCH records each."""
    engine = await _engine(directory, Durability.NEVER)
    records = _records(NEVER_BATCH)
    appends_each = max(1, total_records // (producers * NEVER_BATCH))

    async def produce() -> None:
        for _ in range(appends_each):
            await engine.append("bench", 0, records)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(produce() for _ in range(producers)))
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    return producers * appends_each * NEVER_BATCH / elapsed


async def sequential_reads(directory: Path, cold: bool) -> tuple[float, int]:
    """records/s reading in pulls of 1,000 records: the whole partition from its files
    (`cold`), or 20 passes over the last 8,000 records, which sit in the tail cache."""
    engine = await _engine(directory, Durability.NEVER)
    try:
        if not cold:
            for _ in range(8):
                await engine.append("bench", 0, _records(NEVER_BATCH))
        info = engine.partition_info("bench", 0)
        first = info.log_start_offset if cold else info.end_offset - 8 * NEVER_BATCH
        count = 0
        start = time.perf_counter()
        for _ in range(1 if cold else 20):
            offset = first
            while offset < info.end_offset:
                got = await engine.read("bench", 0, offset, 1000, 1 << 20)
                count += len(got)
                offset = got[-1].offset + 1
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    return count / elapsed, count


def _row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<58} {value:>14}  {note}")


def _best(runs: int, measure: Callable[[], float]) -> float:
    return max(measure() for _ in range(runs))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--quick", action="store_true", help="fewer records, for a smoke run")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir))
    try:
        print(f"logway storage benchmark: {VALUE_BYTES}-byte values, files under {root}")
        print(
            f"  (encoded record: {len(_batch_bytes(1000)) / 1000:.0f} bytes in a 1,000-record batch)"
        )
        print()
        for per_append, durable_total in ((SMALL_APPEND, 200_000), (1000, 1_000_000)):
            total = int(durable_total * scale)
            print(f"durable appends, fsync=always, {per_append:,} records per append:")
            baseline_records = total // 10 if per_append < 100 else total
            baseline = max(raw_write(root, per_append, baseline_records, True) for _ in range(3))
            _row(f"baseline os.write+os.fsync per {per_append:,} records", f"{baseline:,.0f} rec/s")
            for producers in (1, 16, 256):
                rate, p50, p99 = await durable_appends(
                    root / f"always-{per_append}-{producers}",
                    producers,
                    per_append,
                    total // (10 if producers == 1 else 1),
                )
                _row(
                    f"{producers:>3} producers",
                    f"{rate:,.0f} rec/s",
                    f"x{rate / baseline:.2f} baseline  p50 {p50:.2f} ms  p99 {p99:.2f} ms",
                )
            print()
        never_total = int(1_000_000 * scale)
        print(f"fsync=never, {NEVER_BATCH:,} records per append:")
        raw = _best(3, lambda: raw_write(root, NEVER_BATCH, never_total, False))
        _row(f"baseline os.write per {NEVER_BATCH:,} records", f"{raw:,.0f} rec/s")
        for producers in (1, 4):
            rate = await never_appends(root / f"never-{producers}", never_total, producers)
            _row(f"{producers} producer(s)", f"{rate:,.0f} rec/s", f"x{rate / raw:.2f} raw write")
        print()
        print("sequential reads, 1,000 records per read:")
        rate, count = await sequential_reads(root / "never-1", cold=True)
        _row(f"from the files after reopen ({count:,} records)", f"{rate:,.0f} rec/s")
        rate, count = await sequential_reads(root / "never-4", cold=False)
        _row(f"from the tail cache ({count:,} records)", f"{rate:,.0f} rec/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
