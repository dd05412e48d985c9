"""What JetStream's duplicate window costs nats-server's memory per keyed append.

logway's keyed produces carry a `Nats-Msg-Id` on JetStream (docs/exactly-once.md), and a
stream's duplicate window is `idempotency_ttl_ms`. nats-server keeps every id of the window
in memory: this measures the resident memory per message of one node with and without an
id, side by side in one run (each in a fresh node and store).

    .venv/bin/python -m bench.dedupe_memory --messages 200000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import nats
from nats.js.api import StreamConfig

from bench.processes import status_kib
from tests.nats_cluster import NatsCluster

WINDOW_S = 24 * 3600  # idempotency_ttl_ms's default
VALUE = b"x" * 100
IN_FLIGHT = 500  # publishes awaited together


async def resident_kib_per_message(root: Path, messages: int, with_ids: bool) -> float:
    """Bytes of nats-server RSS per message after publishing `messages` to a new stream."""
    cluster = NatsCluster.start(root, size=1)
    try:
        connection = await nats.connect(cluster.urls[0])
        js = connection.jetstream()
        await js.add_stream(StreamConfig(name="s", subjects=["s"], duplicate_window=WINDOW_S))
        before = status_kib(cluster.nodes[0].pid)
        for start in range(0, messages, IN_FLIGHT):
            await asyncio.gather(
                *(
                    js.publish("s", VALUE, headers={"Nats-Msg-Id": uuid.uuid4().hex + "-logway"})
                    if with_ids
                    else js.publish("s", VALUE)
                    for _ in range(start, min(messages, start + IN_FLIGHT))
                )
            )
        await asyncio.sleep(1)  # let the node settle its buffers
        after = status_kib(cluster.nodes[0].pid)
        await connection.close()
    finally:
        cluster.stop()
    return (after - before) * 1024 / messages


async def run(messages: int) -> None:
    with tempfile.TemporaryDirectory(prefix="logway-dedupe-") as scratch:
        plain = await resident_kib_per_message(Path(scratch) / "plain", messages, False)
        keyed = await resident_kib_per_message(Path(scratch) / "keyed", messages, True)
    print(f"{messages:,} appends of {len(VALUE)} B, duplicate window {WINDOW_S} s, one node")
    print(f"  without Nats-Msg-Id: {plain:.0f} B of nats-server RSS per message")
    print(f"  with Nats-Msg-Id:    {keyed:.0f} B per message ({keyed - plain:.0f} B for the id)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.messages))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
