"""Soak: produce and consume concurrently for a bounded time on loopback, with periodic stream
reconnects and a gateway restart in the middle, then check that every acknowledged record
reached every consumer group.

    .venv/bin/python -m bench.soak --minutes 10

- A real `logway serve` on 127.0.0.1 (free port, temporary data dir, --fsync always).
- Producers post batches of records `{"p": producer, "s": seq}`, each batch with an
  Idempotency-Key and retried with it until acknowledged (so a batch sent while the gateway
  restarts is written once). Only acknowledged records are expected downstream.
- Each consumer group has several members: NDJSON streams with `group=…&from=earliest`.
  By default (`--commit manual`) a member commits the offsets it has processed every
  second and before it disconnects, so the group gets every record at least once; with
  `--commit auto` the gateway commits what it wrote to the connection. Every member closes
  its stream after a random 10-20 s and reconnects (a rebalance each time); any error or
  end of stream also reconnects.
- Halfway through, the gateway gets SIGTERM and is started again on the same data dir.
- At the end producers stop; consumers get up to 60 s to catch up; the check is
  acknowledged ⊆ delivered, per group (at least once: duplicates are counted, not errors).

Prints one line every 10 s (throughput, errors, gateway RSS) and a summary; exits 1 if
any acknowledged record is missing from any group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

LOGWAY = Path(sys.executable).parent / "logway"
TOPIC = "soak"
CATCH_UP_S = 60.0
SAMPLE_EVERY_S = 10.0


@dataclass
class Stats:
    acked: set[tuple[int, int]] = field(default_factory=set)
    delivered: dict[str, set[tuple[int, int]]] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    samples: list[str] = field(default_factory=list)


class Gateway:
    """One `logway serve` process, restartable on the same port and data dir."""

    def __init__(self, data_dir: Path, server: str) -> None:
        self.data_dir = data_dir
        self.server = server
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = open(data_dir.parent / "gateway.log", "ab")  # noqa: SIM115 - closed in stop()

    async def start(self) -> None:
        env = {
            **os.environ,
            "LOGWAY_GROUP_SESSION_TIMEOUT_S": "6",
            "LOGWAY_MAX_STREAMS_PER_CLIENT": "10000",
        }
        self.process = subprocess.Popen(  # noqa: ASYNC220 - starts and returns at once
            [str(LOGWAY), "serve", "--server", self.server, "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--shutdown-timeout-s", "10",
             "--heartbeat-s", "2"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            for _ in range(400):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError("the gateway did not become ready")

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(self.process.wait, 30)
        return returncode

    def rss_mib(self) -> float:
        if self.process is None or self.process.poll() is not None:
            return 0.0
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


async def produce(url: str, producer: int, batch: int, stop: asyncio.Event, stats: Stats,
                  rate_per_s: float) -> None:  # fmt: skip
    seq = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            ids = [(producer, seq + i) for i in range(batch)]
            body = {"records": [{"key": f"{p}-{s}", "value": {"p": p, "s": s}} for p, s in ids]}
            key = str(uuid.uuid4())
            while True:  # retried with the same Idempotency-Key until acknowledged
                try:
                    response = await client.post(
                        f"/v1/topics/{TOPIC}/records", json=body, headers={"Idempotency-Key": key}
                    )
                    if response.status_code == 200:
                        stats.acked.update(ids)
                        break
                    stats.errors[f"produce {response.status_code}"] += 1
                except httpx.TransportError as exc:
                    stats.errors[f"produce {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
            seq += batch
            if rate_per_s > 0:
                await asyncio.sleep(max(0.0, batch / rate_per_s - (time.monotonic() - started)))


COMMIT_EVERY_S = 1.0


async def consume(
    url: str, group: str, stop: asyncio.Event, stats: Stats, commit_mode: str
) -> None:
    """One member of `group`; with commit_mode "manual" it commits what it has processed
    (every second and before it disconnects), with "auto" it lets the gateway commit."""
    delivered = stats.delivered.setdefault(group, set())
    params = {"group": group, "commit": commit_mode, "from": "earliest"}
    headers = {"Accept": "application/x-ndjson"}
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, read=30)) as client:

        async def commit(member: dict[str, object], processed: dict[int, int]) -> None:
            if commit_mode != "manual" or not processed or not member:
                return
            body = {
                **member,
                "offsets": [
                    {"topic": TOPIC, "partition": p, "offset": o} for p, o in processed.items()
                ],
            }
            try:
                response = await client.post(f"/v1/groups/{group}/offsets", json=body)
                if not response.is_success:  # fenced by a rebalance: redelivered, not lost
                    stats.errors[f"commit {response.status_code}"] += 1
            except httpx.TransportError as exc:
                stats.errors[f"commit {type(exc).__name__}"] += 1

        while not stop.is_set():
            reconnect_at = time.monotonic() + random.uniform(10, 20)
            member: dict[str, object] = {}
            processed: dict[int, int] = {}  # partition -> next offset, this generation
            committed_at = time.monotonic()
            try:
                async with client.stream(
                    "GET", f"/v1/topics/{TOPIC}/events", params=params, headers=headers
                ) as response:
                    if response.status_code != 200:
                        stats.errors[f"stream {response.status_code}"] += 1
                        await asyncio.sleep(0.5)
                        continue
                    async for line in response.aiter_lines():
                        if line:
                            item = orjson.loads(line)
                            if item.get("event") == "assignment":
                                await commit(member, processed)
                                member = {
                                    "member_id": item["member_id"],
                                    "generation": item["generation"],
                                }
                                processed = {}
                            elif "event" not in item:
                                value = item["value"]
                                record = (value["p"], value["s"])
                                if record in delivered:
                                    stats.duplicates[group] += 1
                                delivered.add(record)
                                processed[item["partition"]] = item["offset"] + 1
                        if time.monotonic() - committed_at >= COMMIT_EVERY_S:
                            await commit(member, processed)
                            committed_at = time.monotonic()
                        if stop.is_set() or time.monotonic() > reconnect_at:
                            await commit(member, processed)
                            break
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                stats.errors[f"stream {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
            stats.reconnects += 1


async def run(args: argparse.Namespace) -> int:
    stats = Stats()
    with tempfile.TemporaryDirectory(prefix="logway-soak-") as tmp:
        gateway = Gateway(Path(tmp) / "data", args.server)
        await gateway.start()
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            created = await client.put(f"/v1/topics/{TOPIC}", json={"partitions": args.partitions})
            assert created.status_code == 201, created.text
        stop_producing, stop_consuming = asyncio.Event(), asyncio.Event()
        groups = [f"group-{g}" for g in range(args.groups)]
        consumers = [
            asyncio.create_task(consume(gateway.url, group, stop_consuming, stats, args.commit))
            for group in groups
            for _ in range(args.members)
        ]
        producers = [
            asyncio.create_task(
                produce(
                    gateway.url, p, args.batch, stop_producing, stats, args.rate / args.producers
                )
            )
            for p in range(args.producers)
        ]
        duration_s = args.minutes * 60
        began = time.monotonic()
        restarted = False
        last = (began, 0, {g: 0 for g in groups})
        print(
            f"soak: {args.minutes} min on {gateway.url} ({args.server}, commit={args.commit}); "
            "restart at half time"
        )
        while time.monotonic() - began < duration_s:
            await asyncio.sleep(min(SAMPLE_EVERY_S, duration_s - (time.monotonic() - began)))
            now = time.monotonic()
            if not restarted and now - began >= duration_s / 2:
                code = await gateway.stop()
                await gateway.start()
                restarted = True
                stats.samples.append(f"  restart: exit code {code}, serving again")
                print(stats.samples[-1])
            then, acked_then, delivered_then = last
            span = now - then
            delivered_now = {g: len(stats.delivered.get(g, ())) for g in groups}
            line = (
                f"  t={now - began:5.0f}s produce {(len(stats.acked) - acked_then) / span:7.0f} rec/s"
                + "".join(
                    f" {g} {(delivered_now[g] - delivered_then[g]) / span:7.0f} rec/s"
                    for g in groups
                )
                + f" errors {sum(stats.errors.values()):4d} rss {gateway.rss_mib():6.0f} MiB"
            )
            stats.samples.append(line)
            print(line, flush=True)
            last = (now, len(stats.acked), delivered_now)
        stop_producing.set()
        await asyncio.gather(*producers)
        deadline = time.monotonic() + CATCH_UP_S
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - polls shared sets
            not stats.acked <= stats.delivered.get(g, set()) for g in groups
        ):
            await asyncio.sleep(0.5)
        stop_consuming.set()
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        elapsed = time.monotonic() - began
        exit_code = await gateway.stop()
        gateway.log.close()

    missing = {g: len(stats.acked - stats.delivered.get(g, set())) for g in groups}
    print("summary:")
    print(f"  acknowledged records {len(stats.acked)} ({len(stats.acked) / elapsed:.0f}/s overall)")
    for g in groups:
        print(f"  {g}: delivered {len(stats.delivered.get(g, ()))} distinct, "
              f"{stats.duplicates[g]} duplicates, missing {missing[g]}")  # fmt: skip
    print(f"  stream reconnects {stats.reconnects}; errors {dict(stats.errors) or 0}")
    print(f"  gateway exit code at the end: {exit_code}")
    return 1 if any(missing.values()) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to produce")
    parser.add_argument("--server", choices=["granian", "hypercorn"], default="granian")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50, help="records per produce request")
    parser.add_argument("--rate", type=float, default=4000, help="records/s in total (0: no cap)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--members", type=int, default=2, help="streams per group")
    parser.add_argument(
        "--commit",
        choices=["manual", "auto"],
        default="manual",
        help="manual: members commit what they processed; auto: commit=auto (the gateway "
        "commits what it wrote to the connection, so records in flight when a member "
        "disconnects can be lost to the group)",
    )
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
