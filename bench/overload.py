"""Produce flood: does the gateway's memory stay bounded, and is every acknowledged record
readable afterwards?

    .venv/bin/python -m bench.overload --seconds 20 --runs 3 --baseline-ref main

- A real `logway serve` (Granian, `--fsync always`) on 127.0.0.1 with its data in a
  temporary directory on the disk, a topic of `--partitions` partitions.
- `--clients` clients, each its own connection (`AsyncLogwayClient`) and `AsyncProducer`,
  send records as fast as they can: the producer always has its next batch of about
  `--batch-bytes` (1 MiB) queued behind the one in flight, and retries what is refused
  the way it does for users (backoff, at least the answer's Retry-After, the same
  Idempotency-Key). Every answer the clients get is counted by status, and 503s by
  whether they carried Retry-After.
- The gateway's RSS is read from /proc/PID/status every `SAMPLE_EVERY_S` (VmRSS) and its
  peak at the end (VmHWM, the kernel's high-water mark, which sampling cannot miss).
- After `--seconds` the clients stop sending and flush; then every partition is read
  back from offset 0 and every acknowledged record is looked up at the partition and
  offset it was acknowledged with: it must be there, with its client, sequence number and
  value length. A missing or different one is counted (must be 0; the exit code is 1).

`--baseline-ref REF` runs the same flood against REF's code (`git archive REF`, run with
this virtualenv's Python and PYTHONPATH on the extracted tree) before each run of this
tree's code, so the two are compared in the same window; `--baseline-source DIR` takes a
tree as it is instead, and `--source DIR` measures another tree than this one.
`--cost N` counts instead what a produce request costs each tree (callgrind instructions,
in process through the ASGI app, N single-record requests less 0; needs valgrind).
`--gateway-arg` / `--baseline-arg` pass a flag to one side's gateway only (e.g.
`--baseline-arg=--max-inflight-produce-bytes=1000000000`: the same code, no bound).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from logway_client import AsyncLogwayClient, AsyncProducer, RecordMetadata

from bench.processes import status_kib, stop
from gateway.app import create_app
from gateway.settings import Settings
from storage.types import Durability, DurabilityPolicy

REPO = Path(__file__).resolve().parent.parent
TOPIC = "flood"
SAMPLE_EVERY_S = 0.2
FLUSH_TIMEOUT_S = 120.0
READ_BYTES = 32 * 1024 * 1024
MiB = 1024 * 1024


class Gateway:
    """`logway serve` from a source tree (this one or an extracted baseline)."""

    def __init__(self, source: Path, data_dir: Path, extra: Sequence[str]) -> None:
        self.source = source
        self.data_dir = data_dir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        command = [
            sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())",
            "serve", "--port", str(self.port), "--data-dir", str(data_dir),
            "--fsync", "always", "--log-level", "warning", *extra,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(source)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=source, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    async def ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            for _ in range(600):
                if self.process.poll() is not None:
                    raise RuntimeError(f"the gateway exited; see {self.log_path}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError("the gateway did not become ready")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop(self.process)


@dataclass
class Acked:
    """Where one client's records were acknowledged, by sequence number (-1: not acked)."""

    partitions: array[int] = field(default_factory=lambda: array("i"))
    offsets: array[int] = field(default_factory=lambda: array("q"))


@dataclass
class Flood:
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after_missing: int = 0  # 503s without Retry-After
    retry_after_values: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # records whose delivery failed for good (not acknowledged)
    acked: list[Acked] = field(default_factory=list)


def value_of(client: int, seq: int, pad: str) -> dict[str, object]:
    return {"c": client, "s": seq, "pad": pad}


async def _client(
    url: str, index: int, args: argparse.Namespace, flood: Flood, stop: asyncio.Event
) -> None:
    pad = "x" * args.record_bytes
    per_batch = max(1, args.batch_bytes // (args.record_bytes + 40))
    acked = flood.acked[index]

    async def count(response: httpx.Response) -> None:
        flood.statuses[response.status_code] += 1
        if response.status_code == 503:
            retry_after = response.headers.get("retry-after")
            if retry_after is None:
                flood.retry_after_missing += 1
            else:
                flood.retry_after_values[retry_after] += 1

    def record(seq: int, future: asyncio.Future[RecordMetadata]) -> None:
        if future.cancelled() or future.exception() is not None:
            flood.failed += 1
            return
        metadata = future.result()
        acked.partitions[seq] = metadata.partition
        acked.offsets[seq] = metadata.offset

    async with AsyncLogwayClient(url, timeout=60) as client:
        client.http.event_hooks["response"].append(count)
        producer = AsyncProducer(
            client,
            linger_ms=0,
            max_batch_records=per_batch,
            max_batch_bytes=args.batch_bytes + 64 * 1024,
            delivery_timeout_ms=FLUSH_TIMEOUT_S * 1000,
        )
        previous: list[asyncio.Future[RecordMetadata]] = []
        seq = 0
        while not stop.is_set():
            current = []
            for _ in range(per_batch):
                future = producer.send(TOPIC, value_of(index, seq, pad))
                acked.partitions.append(-1)
                acked.offsets.append(-1)
                future.add_done_callback(functools.partial(record, seq))
                current.append(future)
                seq += 1
            if previous:  # one batch in flight, the next one queued behind it
                await asyncio.wait(previous)
            previous = current
        await producer.close()


async def _sample(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(status_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


async def run_flood(url: str, args: argparse.Namespace, pid: int) -> tuple[Flood, int]:
    """`args.clients` clients flooding `url` for `args.seconds`, then flushing; returns what
    they got and the highest VmRSS (KiB) sampled from `pid` meanwhile."""
    flood = Flood(acked=[Acked() for _ in range(args.clients)])
    stop, sampled = asyncio.Event(), asyncio.Event()
    samples: list[int] = []
    sampler = asyncio.create_task(_sample(pid, samples, sampled))
    clients = [asyncio.create_task(_client(url, i, args, flood, stop)) for i in range(args.clients)]
    await asyncio.sleep(args.seconds)
    stop.set()
    await asyncio.gather(*clients)
    sampled.set()
    await sampler
    return flood, max(samples, default=0)


async def _read_back(
    url: str, partitions: int
) -> AsyncIterator[tuple[int, int, dict[str, object]]]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for partition in range(partitions):
            offset = 0
            while True:
                response = await client.get(
                    f"/v1/topics/{TOPIC}/partitions/{partition}/records",
                    params={"offset": offset, "max_records": 10_000, "max_bytes": READ_BYTES},
                )
                response.raise_for_status()
                doc = orjson.loads(response.content)
                for record in doc["records"]:
                    yield partition, record["offset"], record["value"]
                if not doc["records"]:
                    break
                offset = doc["next_offset"]


@dataclass
class Run:
    name: str
    seconds: float
    statuses: Counter[int]
    retry_after_missing: int
    retry_after_values: Counter[str]
    acked_records: int
    acked_mib: float
    failed: int
    rss_start_mib: float
    rss_max_mib: float
    hwm_mib: float
    missing: int
    wrong: int


async def flood_once(
    name: str, source: Path, extra: Sequence[str], args: argparse.Namespace
) -> Run:
    with tempfile.TemporaryDirectory(prefix="logway-overload-", dir=args.tmp) as tmp:
        gateway = Gateway(source, Path(tmp) / "data", extra)
        try:
            await gateway.ready()
            async with httpx.AsyncClient(base_url=gateway.url) as admin:
                response = await admin.put(
                    f"/v1/topics/{TOPIC}", json={"partitions": args.partitions}
                )
                response.raise_for_status()
            rss_start = status_kib(gateway.pid)
            started = time.monotonic()
            flood, rss_max = await run_flood(gateway.url, args, gateway.pid)
            elapsed = time.monotonic() - started
            hwm = status_kib(gateway.pid, "VmHWM")
            missing, wrong, acked_records = await verify(gateway.url, flood, args)
        finally:
            gateway.stop()
    record_size = args.record_bytes + 40
    return Run(
        name=name,
        seconds=elapsed,
        statuses=flood.statuses,
        retry_after_missing=flood.retry_after_missing,
        retry_after_values=flood.retry_after_values,
        acked_records=acked_records,
        acked_mib=acked_records * record_size / MiB,
        failed=flood.failed,
        rss_start_mib=rss_start / 1024,
        rss_max_mib=rss_max / 1024,
        hwm_mib=hwm / 1024,
        missing=missing,
        wrong=wrong,
    )


async def verify(url: str, flood: Flood, args: argparse.Namespace) -> tuple[int, int, int]:
    """(missing, wrong, acknowledged): every acknowledged record, looked up where it was
    acknowledged."""
    expected: dict[tuple[int, int], tuple[int, int]] = {}
    for client, acked in enumerate(flood.acked):
        for seq, (partition, offset) in enumerate(
            zip(acked.partitions, acked.offsets, strict=True)
        ):
            if partition >= 0:
                expected[(partition, offset)] = (client, seq)
    acknowledged = len(expected)
    wrong = 0
    async for partition, offset, value in _read_back(url, args.partitions):
        want = expected.pop((partition, offset), None)
        if want is None:
            continue  # written but never acknowledged (a retry's first attempt, say)
        if (
            not isinstance(value, dict)
            or (value.get("c"), value.get("s")) != want
            or len(str(value.get("pad"))) != args.record_bytes
        ):
            wrong += 1
    return len(expected), wrong, acknowledged


def _row(run: Run) -> str:
    ok = sum(n for status, n in run.statuses.items() if 200 <= status < 300)
    other = sum(n for status, n in run.statuses.items() if status >= 300 and status != 503)
    retry_after = ",".join(f"{v}:{n}" for v, n in sorted(run.retry_after_values.items())) or "-"
    return (
        f"| {run.name} | {run.seconds:.0f} | {ok} | {run.statuses.get(503, 0)} "
        f"| {run.retry_after_missing} ({retry_after}) | {other} | {run.acked_records} "
        f"| {run.acked_mib / run.seconds:.1f} | {run.rss_start_mib:.0f} | {run.rss_max_mib:.0f} "
        f"| {run.hwm_mib:.0f} | {run.missing} | {run.wrong} |"
    )


HEADER = (
    "| code | s | 2xx | 503 | 503 w/o Retry-After (values) | other | acked records "
    "| acked MiB/s | RSS start MiB | RSS max MiB | VmHWM MiB | missing | wrong |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


# -- what admission costs a request --------------------------------------------------------

COST_BODY = b'{"records":[{"value":{"order":1,"amount":12.5}}]}'


async def _produce_in_process(requests: int) -> None:
    """`requests` single-record produces through the ASGI app of whichever `gateway` the
    interpreter imports (PYTHONPATH picks the tree)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), durability=DurabilityPolicy(Durability.NEVER))
        app = create_app(settings)
        headers = {"content-type": "application/json"}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://bench", headers=headers
            ) as client,
        ):
            assert (await client.put(f"/v1/topics/{TOPIC}", json={"partitions": 1})).is_success
            for _ in range(requests):
                response = await client.post(f"/v1/topics/{TOPIC}/records", content=COST_BODY)
                assert response.status_code == 200, response.text


# This file loaded by path, so that `gateway` comes from PYTHONPATH (the tree measured),
# whatever that tree's own bench/ holds.
_COST_RUN = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('overload', sys.argv[1])\n"
    "module = sys.modules['overload'] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "sys.exit(module.main(['cost-run', sys.argv[2]]))\n"
)


def _instructions(source: Path, requests: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-c", _COST_RUN, str(Path(__file__).resolve()), str(requests),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(source)}
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, env=env, cwd=tempfile.gettempdir()
    )
    match = re.search(r"Collected\s*:\s*(\d+)", result.stderr)
    assert match is not None, result.stderr[-2000:]
    return int(match.group(1))


def cost(trees: Sequence[tuple[str, Path]], requests: int) -> None:
    """Instructions per produce request (callgrind: runs of `requests` and of 0, so start-up
    cancels out) of each tree; the first is the baseline."""
    per_request = [
        (name, (_instructions(tree, requests) - _instructions(tree, 0)) / requests)
        for name, tree in trees
    ]
    print("| code | instructions per produce request | ratio |\n| --- | ---: | ---: |")
    for name, figure in per_request:
        print(f"| {name} | {figure:,.0f} | {figure / per_request[0][1]:.3f} |")


def _extract(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


async def main_async(args: argparse.Namespace) -> int:
    runs: list[Run] = []
    source = Path(args.source) if args.source else REPO
    name = "this tree" if args.source is None else Path(args.source).name
    name += "".join(f" {arg}" for arg in args.gateway_arg)
    with tempfile.TemporaryDirectory(prefix="logway-baseline-") as tmp:
        baseline: Path | None = None
        baseline_name = ""
        if args.baseline_ref:
            baseline, baseline_name = _extract(args.baseline_ref, Path(tmp)), args.baseline_ref
        elif args.baseline_source:
            baseline, baseline_name = Path(args.baseline_source), Path(args.baseline_source).name
        baseline_name += "".join(f" {arg}" for arg in args.baseline_arg)
        if args.cost:
            cost([*([(baseline_name, baseline)] if baseline else []), (name, source)], args.cost)
            return 0
        for _ in range(args.runs):
            if baseline is not None:
                runs.append(await flood_once(baseline_name, baseline, args.baseline_arg, args))
                print(_row(runs[-1]), flush=True)
            runs.append(await flood_once(name, source, args.gateway_arg, args))
            print(_row(runs[-1]), flush=True)
    print(f"\n{args.clients} clients, {args.batch_bytes} B batches of "
          f"{args.record_bytes} B values, {args.partitions} partitions, fsync always\n")  # fmt: skip
    print(HEADER)
    for run in runs:
        print(_row(run))
    return 1 if any(run.missing or run.wrong for run in runs) else 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["cost-run"]:  # one side of --cost, under valgrind
        asyncio.run(_produce_in_process(int(arguments[1])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="flood duration")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batch-bytes", type=int, default=MiB, help="bytes per request")
    parser.add_argument("--record-bytes", type=int, default=16 * 1024, help="value padding")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--source", default=None, help="the tree to measure (default: this)")
    parser.add_argument("--gateway-arg", action="append", default=[], help="for that tree")
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-ref", default=None, help="git ref to compare with")
    baseline.add_argument("--baseline-source", default=None, help="a tree to compare with")
    parser.add_argument("--baseline-arg", action="append", default=[], help="for the baseline")
    parser.add_argument(
        "--cost", type=int, default=0, help="instead: callgrind instructions of N requests"
    )
    parser.add_argument("--tmp", default=None, help="directory for the data (default: TMPDIR)")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
