"""Subprocess for test_crash and test_fsync_trace: appends with fsync=always and reports
each ack.

    python -m tests.storage.crash_writer <data_dir> [<appends per producer>]

Appends forever unless a count is given. Prints `ready <end_offset>` once the log is open, then one line per acknowledged append:
`<base_offset> <count> <sha256 of the values>`, flushed before the next append of that
producer. Every value is self-checking (payload + its own digest), so a reader can tell a
torn record from a whole one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
from pathlib import Path

from storage.log import LogEngine
from storage.types import DurabilityPolicy, NewRecord, TopicConfig

CONFIG = TopicConfig(segment_bytes=16 * 1024, retention_ms=None)
PRODUCERS = 8
DIGEST_BYTES = 8


def make_value(rng: random.Random) -> bytes:
    payload = rng.randbytes(rng.randrange(1, 600))
    return payload + hashlib.sha256(payload).digest()[:DIGEST_BYTES]


def value_is_whole(value: bytes) -> bool:
    payload, digest = value[:-DIGEST_BYTES], value[-DIGEST_BYTES:]
    return len(value) > DIGEST_BYTES and hashlib.sha256(payload).digest()[:DIGEST_BYTES] == digest


def digest_of(values: list[bytes]) -> str:
    return hashlib.sha256(b"".join(len(v).to_bytes(4, "little") + v for v in values)).hexdigest()


async def produce(engine: LogEngine, seed: int, appends: int | None) -> None:
    rng = random.Random(seed)
    while appends is None or appends > 0:
        if appends is not None:
            appends -= 1
        values = [make_value(rng) for _ in range(rng.randrange(1, 6))]
        result = await engine.append("t", 0, [NewRecord(v) for v in values])
        sys.stdout.write(f"{result.base_offset} {result.count} {digest_of(values)}\n")
        sys.stdout.flush()


async def main(data_dir: Path, appends: int | None) -> None:
    engine = await LogEngine.open(data_dir, DurabilityPolicy(), 3600)
    await engine.open_topic("t", 1, CONFIG)
    sys.stdout.write(f"ready {engine.partition_info('t', 0).end_offset}\n")
    sys.stdout.flush()
    seed = int.from_bytes(os.urandom(8), "little")
    await asyncio.gather(*(produce(engine, seed + i, appends) for i in range(PRODUCERS)))
    await engine.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
