"""What reading the produce tags back costs when a partition opens (storage.produce_tags).

Writes one partition of BATCHES batches of four 100-byte records, every other one tagged
(an Idempotency-Key's produce tag), then times, interleaved and RUNS times each, over the
same bytes in memory: the tag scan as `scan_tags` does it (codec.tagged_batches over
256 KiB chunks) and the checksum scan recovery already runs over an active segment
(codec.scan). Pure CPU on bytes, so the ratio says what the tag scan adds per batch.

    python -m bench.tag_scan [batches]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from storage import codec
from storage.embedded import EmbeddedBackend
from storage.types import Durability, DurabilityPolicy, NewRecord, ProduceTag, TopicConfig

RUNS = 3
CHUNK_BYTES = 256 * 1024


async def _fill(data_dir: Path, batches: int) -> bytes:
    backend = await EmbeddedBackend.open(data_dir, DurabilityPolicy(Durability.NEVER))
    await backend.create_topic("t", 1, TopicConfig())
    records = [NewRecord(b"x" * 100)] * 4
    for start in range(0, batches, 1000):
        await asyncio.gather(
            *(
                backend.start_append(
                    "t", 0, records, ProduceTag(os.urandom(32), os.urandom(32)) if i % 2 else None
                )
                for i in range(start, min(batches, start + 1000))
            )
        )
    await backend.close()
    directory = data_dir / "topics" / "t" / "0"
    return b"".join(
        (directory / name).read_bytes()
        for name in sorted(os.listdir(directory))
        if name.endswith(".log")
    )


def _tag_scan(data: bytes) -> None:
    view, position = memoryview(data), 0
    while position < len(data):
        _found, walked = codec.tagged_batches(view[position : position + CHUNK_BYTES], 0)
        if walked == 0:
            return
        position += walked


def _recovery_scan(data: bytes) -> None:
    codec.scan(data, 0, 0, lambda header: None)


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        data = asyncio.run(_fill(Path(tmp), batches))
    runs: dict[str, list[float]] = {"tag scan": [], "recovery scan": []}
    for _ in range(RUNS):
        for name, scan in (("tag scan", _tag_scan), ("recovery scan", _recovery_scan)):
            start = time.perf_counter()
            scan(data)
            runs[name].append(time.perf_counter() - start)
    print(f"{batches} batches, {len(data)} bytes")
    for name, seconds in runs.items():
        print(f"{name}: {min(seconds) * 1000:.0f}-{max(seconds) * 1000:.0f} ms")
    print(
        f"tag scan / recovery scan (min/min): {min(runs['tag scan']) / min(runs['recovery scan']):.2f}"
    )


if __name__ == "__main__":
    main()
