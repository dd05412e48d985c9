"""At-least-once soak: produce and consume through a real gateway while consumers reconnect,
are killed with SIGKILL and the gateway restarts; then check that every acknowledged record
reached every consumer group, and how much was delivered twice.

    .venv/bin/python -m bench.soak --minutes 10

- A real `logway serve` on 127.0.0.1 (free port, temporary data dir, --fsync always).
- Producers post batches of records `{"p": producer, "s": seq}`, each batch with an
  Idempotency-Key and retried with it until acknowledged (a batch sent while the gateway
  restarts is written once). Only acknowledged records are expected downstream.
- Four consumer groups of `--members` consumer processes each (`python -m bench.soak
  member …`), all from `earliest`:
  - `python-0`, `python-1`: the Python client with its defaults (`AsyncConsumer(client,
    topic, group=…)`: it commits what the application processed, every second);
  - `sse-auto`, `ndjson-auto`: raw SSE / NDJSON over httpx with `commit=auto`, reconnecting
    with the cursor of the last record they processed (`Last-Event-ID` / `cursor=`).
  A record is processed when the process has written it to its stdout (a pipe to this
  orchestrator); the raw readers process each record `--lag-ms` after it arrived, as a
  pipeline behind a socket does. Every member closes its stream after a random
  `--reconnect-s` (10-20 s) and reconnects as a new member (the raw ones after processing
  what they had received); every `--kill-every-s` (60 s) one consumer process, a raw reader
  and a Python one in turn, gets SIGKILL and is started again (the raw ones with the cursor
  of the last record they had written out). The gateway gets SIGTERM and is started again on
  the same data dir `--restarts` (2) times, evenly spread.
- At the end producers stop; consumers get up to 60 s to catch up. The check, per group:
  every acknowledged record was delivered (missing must be 0). A record processed twice in
  a group is a redelivery; it is charged to the older of the two stints (one member's hold
  on one partition, from the assignment that gave it to the one that took it away or the
  member's end) and measured as its redelivery window: how long before that stint's last
  record of the partition the stint had processed it. At-least-once with commits of what
  was received or processed bounds the window by about one commit interval (1 s;
  commit=auto 1.25 s).

Prints one line every 10 s (throughput, kills, errors, gateway RSS) and a summary; exits 1
if any acknowledged record is missing from any group or a redelivery window exceeds
`--max-window-s` (2.5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson
from logway_client import Assignment, AsyncConsumer, AsyncLogwayClient

from bench.processes import status_kib

LOGWAY = Path(sys.executable).parent / "logway"
REPO = Path(__file__).resolve().parent.parent
TOPIC = "soak"
GROUPS = {"python-0": "python", "python-1": "python", "sse-auto": "sse", "ndjson-auto": "ndjson"}
CATCH_UP_S = 60.0
SAMPLE_EVERY_S = 10.0
RECONNECT_PAUSE_S = 0.5
FLUSH_EVERY = 100  # records a raw reader writes out at most before it flushes


# -- one consumer process -------------------------------------------------------------------


class Output:
    """Lines to the orchestrator (stdout, a pipe). A line is processed once flushed."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def line(self, text: str) -> None:
        self._lines.append(text)

    def flush(self) -> None:
        if self._lines:
            data = ("\n".join(self._lines) + "\n").encode()
            self._lines.clear()
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]


def _record_line(partition: int, offset: int, value: Any) -> str:
    """A processed record, with when (the monotonic clock is the same in every process)."""
    return f"R {time.monotonic():.4f} {partition} {offset} {value['p']} {value['s']}"


async def python_member(args: argparse.Namespace) -> None:
    """A member reading with the Python client's defaults; a record is processed when it is
    written out, before the next one is asked for."""
    out = Output()
    rng = random.Random(args.seed)

    def assigned(assignment: Assignment) -> None:
        partitions = ",".join(map(str, assignment.partitions))
        out.line(f"A {assignment.member_id} {assignment.generation} {partitions}")
        out.flush()

    async with AsyncLogwayClient(args.url, timeout=10, stream_read_timeout_s=30) as client:
        while True:
            leave_at = time.monotonic() + rng.uniform(*args.reconnect_s)
            async with AsyncConsumer(
                client, TOPIC, group=args.group, start="earliest", on_assignment=assigned
            ) as consumer:
                async for record in consumer:
                    out.line(_record_line(record.partition, record.offset, record.value))
                    out.flush()
                    if time.monotonic() >= leave_at:
                        break


@dataclass
class _Pipeline:
    """What a raw reader received and has not processed yet, in arrival order: (due at,
    line to write, cursor after it); processing writes the line once it is due."""

    lag_s: float
    out: Output
    cursor: str | None
    items: asyncio.Queue[tuple[float, str | None, str | None]] = field(
        default_factory=asyncio.Queue
    )

    def received(self, line: str | None, cursor: str | None = None) -> None:
        self.items.put_nowait((time.monotonic() + self.lag_s, line, cursor))

    async def process(self) -> None:
        """Write each item out once it is due. Written means flushed: before waiting for
        the next item, and at least every `FLUSH_EVERY` items."""
        written_cursor = self.cursor
        pending = 0
        while True:
            if self.items.empty() or pending >= FLUSH_EVERY:
                written_cursor = self._flush(written_cursor)
                pending = 0
            due, line, cursor = await self.items.get()
            delay = due - time.monotonic()
            if delay > 0:
                written_cursor = self._flush(written_cursor)
                pending = 0
                await asyncio.sleep(delay)
            if line is not None:
                self.out.line(line)
            if cursor:
                self.cursor = cursor
            pending += 1
            if self.items.qsize() == 0:
                written_cursor = self._flush(written_cursor)
                pending = 0
            self.items.task_done()

    def _flush(self, written_cursor: str | None) -> str | None:
        if self.cursor != written_cursor:
            self.out.line(f"C {self.cursor}")
        self.out.flush()
        return self.cursor


async def _sse_lines(response: httpx.Response) -> AsyncIterator[tuple[str, str, str]]:
    """(event, id, data) of each SSE event; comments and retry-only blocks are skipped."""
    event, event_id, data = "message", "", ""
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, event_id, data
            event, event_id, data = "message", "", ""
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data = value


def _assignment_line(doc: dict[str, Any]) -> str:
    return f"A {doc['member_id']} {doc['generation']} {','.join(map(str, doc['partitions']))}"


async def _read(
    http: httpx.AsyncClient, kind: str, group: str, pipeline: _Pipeline, leave_at: float
) -> bool:
    """One connection: hand what arrives to the pipeline until `leave_at`, then let it
    process everything before the stream closes. False if it never joined (an error, or a
    draining gateway's empty stream)."""
    joined = False
    params = {"group": group, "commit": "auto", "from": "earliest"}
    headers = {"Accept": "text/event-stream" if kind == "sse" else "application/x-ndjson"}
    if pipeline.cursor and kind == "sse":
        headers["Last-Event-ID"] = pipeline.cursor
    elif pipeline.cursor:
        params["cursor"] = pipeline.cursor
    async with http.stream(
        "GET", f"/v1/topics/{TOPIC}/events", params=params, headers=headers
    ) as response:
        if response.status_code != 200:
            pipeline.out.line(f"E stream {response.status_code}")
            return False
        if kind == "sse":
            async for event, event_id, data in _sse_lines(response):
                doc = orjson.loads(data)
                if event == "record":
                    line = _record_line(doc["partition"], doc["offset"], doc["value"])
                    pipeline.received(line, event_id)
                elif event == "assignment":
                    joined = True
                    pipeline.received(_assignment_line(doc), event_id)
                elif event == "gap":
                    pipeline.received(None, event_id)
                elif event == "error":
                    pipeline.out.line(f"E error {doc.get('type')}")
                    break
                if time.monotonic() >= leave_at:
                    break
        else:
            async for text in response.aiter_lines():
                if not text:
                    continue
                doc = orjson.loads(text)
                control = doc.get("event")
                if control is None:
                    pipeline.received(_record_line(doc["partition"], doc["offset"], doc["value"]))
                elif control == "cursor":
                    pipeline.received(None, doc["cursor"])
                elif control == "assignment":
                    joined = True
                    pipeline.received(_assignment_line(doc))
                elif control == "error":
                    pipeline.out.line(f"E error {doc.get('type')}")
                    break
                if time.monotonic() >= leave_at:
                    break
        await pipeline.items.join()  # process what was received, then leave
    return joined


async def raw_member(args: argparse.Namespace) -> None:
    """A raw SSE or NDJSON reader with commit=auto that reconnects with its cursor."""
    out = Output()
    rng = random.Random(args.seed)
    pipeline = _Pipeline(args.lag_ms / 1000, out, args.cursor or None)
    processor = asyncio.create_task(pipeline.process())
    timeout = httpx.Timeout(10, read=30)
    async with httpx.AsyncClient(base_url=args.url, timeout=timeout) as http:
        while True:
            leave_at = time.monotonic() + rng.uniform(*args.reconnect_s)
            try:
                joined = await _read(http, args.kind, args.group, pipeline, leave_at)
            except httpx.HTTPError as exc:
                out.line(f"E stream {type(exc).__name__}")
                await pipeline.items.join()
                joined = False
            if not joined:
                await asyncio.sleep(RECONNECT_PAUSE_S)
            out.flush()
            if processor.done():
                processor.result()


def member_main(args: argparse.Namespace) -> int:
    run = python_member if args.kind == "python" else raw_member
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))
    return 0


# -- the orchestrator -----------------------------------------------------------------------


class Gateway:
    """One `logway serve` process, restartable on the same port and data dir."""

    def __init__(self, data_dir: Path, server: str, log: TextIO) -> None:
        self.data_dir = data_dir
        self.server = server
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = log

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
        return await asyncio.to_thread(self.process.wait, 30)

    def rss_mib(self) -> float:
        if self.process is None or self.process.poll() is not None:
            return 0.0
        return status_kib(self.process.pid) / 1024


class Bitmap:
    """A set of (producer, seq) as one bytearray per producer: seqs are dense from 0."""

    def __init__(self) -> None:
        self._bits: dict[int, bytearray] = {}
        self.count = 0

    def add(self, producer: int, seq: int) -> None:
        bits = self._bits.setdefault(producer, bytearray())
        if seq >= len(bits):
            bits.extend(bytes(seq + 1 - len(bits) + 4096))
        if not bits[seq]:
            bits[seq] = 1
            self.count += 1

    def missing_from(self, other: Bitmap) -> int:
        """How many of this set's members `other` lacks."""
        missing = 0
        for producer, bits in self._bits.items():
            theirs = other._bits.get(producer, bytearray())
            for seq in range(len(bits)):
                if bits[seq] and (seq >= len(theirs) or not theirs[seq]):
                    missing += 1
        return missing


class GroupLedger:
    """What one group was delivered, compactly. A stint is one member's hold on one
    partition, from the assignment that gave it to the one that took it away (or the
    member's end). Per partition and offset the ledger keeps the stint that processed it
    last and when. A record processed by two stints was delivered twice because the older
    one (by generation) ended without a commit covering it: the redelivery is charged to
    that stint, with the time it had processed the record."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.delivered = Bitmap()
        self.processed = 0
        self._members: dict[str, int] = {}
        self._open: dict[tuple[int, int], int] = {}  # (member, partition) -> stint
        self._generation: dict[int, int] = {}  # member -> its latest generation
        self._stint_last: array[float] = array("d")  # stint -> when it processed its last
        self._stint_generation: array[int] = array("q")  # stint -> generation it began in
        self._last_stint: dict[int, array[int]] = {}  # partition -> stint, per offset
        self._last_time: dict[int, array[float]] = {}  # partition -> time, per offset
        self.redelivered: list[tuple[int, float]] = []  # (previous stint, when it processed)
        self.repeats_within_a_stint = 0

    def member(self, member_id: str) -> int:
        return self._members.setdefault(member_id, len(self._members))

    def assigned(self, member: int, generation: int, partitions: set[int]) -> None:
        self._generation[member] = generation
        for key in [k for k in self._open if k[0] == member and k[1] not in partitions]:
            del self._open[key]

    def record(
        self, member: int, partition: int, offset: int, key: tuple[int, int], at: float
    ) -> None:
        self.processed += 1
        self.delivered.add(*key)
        stint = self._open.get((member, partition))
        if stint is None:
            stint = self._open[(member, partition)] = len(self._stint_last)
            self._stint_last.append(at)
            self._stint_generation.append(self._generation.get(member, 0))
        stints = self._last_stint.setdefault(partition, array("q"))
        times = self._last_time.setdefault(partition, array("d"))
        if offset >= len(stints):
            grow = offset + 1 - len(stints) + 4096
            stints.extend([-1] * grow)
            times.extend([0.0] * grow)
        previous = stints[offset]
        if previous == stint:
            self.repeats_within_a_stint += 1
        elif previous >= 0:
            older = self._stint_generation[previous] <= self._stint_generation[stint]
            self.redelivered.append((previous, times[offset]) if older else (stint, at))
        stints[offset] = stint
        times[offset] = at
        self._stint_last[stint] = at

    def windows_s(self) -> list[float]:
        """For each redelivery: how long before the end of its previous stint (that stint's
        last record) the record had been processed."""
        return [self._stint_last[stint] - at for stint, at in self.redelivered]

    def widest(self, count: int) -> list[tuple[float, float]]:
        """(when processed, when its stint ended) of the `count` widest redelivery windows,
        one per stint."""
        ends: dict[int, float] = {}
        for stint, at in self.redelivered:
            ends[stint] = min(at, ends.get(stint, at))
        ordered = sorted(ends.items(), key=lambda item: item[1] - self._stint_last[item[0]])
        return [(at, self._stint_last[stint]) for stint, at in ordered[:count]]

    def most_after_one_stint(self) -> int:
        return max(Counter(stint for stint, _ in self.redelivered).values(), default=0)

    @property
    def stints(self) -> int:
        return len(self._stint_last)


@dataclass
class Soak:
    """The shared state of one run."""

    args: argparse.Namespace
    gateway: Gateway
    log: TextIO  # the gateway's and the consumer processes' stderr
    acked: Bitmap = field(default_factory=Bitmap)
    groups: dict[str, GroupLedger] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    kills: list[str] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)
    stopping: bool = False


class Slot:
    """One consumer process of a group, started again whenever it ends."""

    def __init__(self, soak: Soak, group: str, kind: str, index: int) -> None:
        self.soak = soak
        self.group = group
        self.kind = kind
        self.index = index
        self.ledger = soak.groups[group]
        self.process: asyncio.subprocess.Process | None = None
        self.cursor = ""
        self.member = self.ledger.member(f"{group}/{index}/none")
        self.starts = 0

    async def run(self) -> None:
        args = self.soak.args
        while not self.soak.stopping:
            command = [
                sys.executable, "-m", "bench.soak", "member", "--kind", self.kind,
                "--url", self.soak.gateway.url, "--group", self.group,
                "--seed", str(hash((self.group, self.index, self.starts)) & 0xFFFF),
                "--reconnect-s", *map(str, args.reconnect_s), "--lag-ms", str(args.lag_ms),
            ]  # fmt: skip
            if self.cursor:
                command += ["--cursor", self.cursor]
            self.starts += 1
            self.process = await asyncio.create_subprocess_exec(
                *command, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=self.soak.log
            )
            assert self.process.stdout is not None
            async for raw in self.process.stdout:
                if raw.endswith(b"\n"):  # a killed process may leave half a line
                    self.handle(raw.decode().rstrip("\n"))
            code = await self.process.wait()
            if not self.soak.stopping and code not in (0, -signal.SIGKILL):
                self.soak.errors[f"{self.kind} member exit {code}"] += 1
            await asyncio.sleep(0.2)

    def handle(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "R":
            at, *numbers = rest.split()
            partition, offset, producer, seq = map(int, numbers)
            self.ledger.record(self.member, partition, offset, (producer, seq), float(at))
        elif kind == "A":
            member_id, generation, partitions = rest.split(" ")
            self.member = self.ledger.member(member_id)
            partitions_owned = {int(p) for p in partitions.split(",") if p}
            self.ledger.assigned(self.member, int(generation), partitions_owned)
        elif kind == "C":
            self.cursor = rest
        elif kind == "E":
            self.soak.errors[f"{self.kind} {rest}"] += 1

    def kill(self, elapsed_s: float) -> None:
        self.soak.kills.append(f"t={elapsed_s:.0f}s {self.group}/{self.index}")
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)


async def produce(soak: Soak, producer: int, stop: asyncio.Event) -> None:
    args = soak.args
    rate_per_s = args.rate / args.producers
    seq = 0
    async with httpx.AsyncClient(base_url=soak.gateway.url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            ids = [(producer, seq + i) for i in range(args.batch)]
            body = {"records": [{"key": f"{p}-{s}", "value": {"p": p, "s": s}} for p, s in ids]}
            key = str(uuid.uuid4())
            while True:  # retried with the same Idempotency-Key until acknowledged
                try:
                    response = await client.post(
                        f"/v1/topics/{TOPIC}/records", json=body, headers={"Idempotency-Key": key}
                    )
                    if response.status_code == 200:
                        for p, s in ids:
                            soak.acked.add(p, s)
                        break
                    soak.errors[f"produce {response.status_code}"] += 1
                except httpx.TransportError as exc:
                    soak.errors[f"produce {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
            seq += args.batch
            if rate_per_s > 0:
                await asyncio.sleep(
                    max(0.0, args.batch / rate_per_s - (time.monotonic() - started))
                )


@dataclass
class GroupResult:
    group: str
    delivered: int
    missing: int
    redelivered: int
    stints: int
    windows_s: list[float]
    most_after_one_stint: int
    widest: list[tuple[float, float]]  # (processed at, stint ended at), s since the start

    def window_percentile(self, fraction: float) -> float:
        ordered = sorted(self.windows_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


@dataclass
class Result:
    acknowledged: int
    elapsed_s: float
    groups: list[GroupResult]
    errors: Counter[str]
    kills: list[str]
    restarts: list[str]
    gateway_exit: int

    @property
    def missing(self) -> int:
        return sum(g.missing for g in self.groups)

    def widest_window_s(self) -> float:
        return max((max(g.windows_s, default=0.0) for g in self.groups), default=0.0)


async def run(args: argparse.Namespace) -> Result:
    """One soak; prints progress as it goes."""
    with (
        tempfile.TemporaryDirectory(prefix="logway-soak-") as tmp,
        open(Path(tmp) / "gateway.log", "a") as gateway_log,  # noqa: ASYNC230 - a log file
    ):
        gateway = Gateway(Path(tmp) / "data", args.server, gateway_log)
        await gateway.start()
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            created = await client.put(f"/v1/topics/{TOPIC}", json={"partitions": args.partitions})
            assert created.status_code == 201, created.text
        chosen = {g: GROUPS[g] for g in args.groups}
        soak = Soak(args, gateway, gateway_log, groups={g: GroupLedger(g) for g in chosen})
        slots = [Slot(soak, g, kind, i) for g, kind in chosen.items() for i in range(args.members)]
        members = [asyncio.create_task(slot.run()) for slot in slots]
        stop_producing = asyncio.Event()
        producers = [
            asyncio.create_task(produce(soak, p, stop_producing)) for p in range(args.producers)
        ]
        duration_s = args.minutes * 60
        restart_at = [duration_s * (i + 1) / (args.restarts + 1) for i in range(args.restarts)]
        began = time.monotonic()
        next_kill = args.kill_every_s
        # in turn: a raw reader, a Python client, the other raw reader, the other Python one…
        raw = [slot for slot in slots if slot.kind != "python"]
        python = [slot for slot in slots if slot.kind == "python"]
        victims = [slot for pair in itertools.zip_longest(raw, python) for slot in pair if slot]
        last = (began, 0, {g: 0 for g in chosen})
        next_sample = SAMPLE_EVERY_S
        print(
            f"soak: {args.minutes} min on {gateway.url} ({args.server}), groups "
            f"{', '.join(chosen)} x {args.members}, kill every {args.kill_every_s:g} s, "
            f"{args.restarts} gateway restarts",
            flush=True,
        )
        while (elapsed := time.monotonic() - began) < duration_s:
            await asyncio.sleep(min(0.25, duration_s - elapsed))
            elapsed = time.monotonic() - began
            if elapsed >= next_kill:
                victims[len(soak.kills) % len(victims)].kill(elapsed)
                next_kill += args.kill_every_s
            if restart_at and elapsed >= restart_at[0]:
                restart_at.pop(0)
                code = await gateway.stop()
                await gateway.start()
                soak.restarts.append(f"t={elapsed:.0f}s exit {code}")
                print(f"  restart at t={elapsed:.0f}s: exit code {code}, serving again", flush=True)
            if elapsed >= next_sample:
                next_sample += SAMPLE_EVERY_S
                now = time.monotonic()
                then, acked_then, processed_then = last
                span = now - then
                processed = {g: soak.groups[g].processed for g in chosen}
                print(
                    f"  t={elapsed:5.0f}s produce {(soak.acked.count - acked_then) / span:6.0f}/s"
                    + "".join(
                        f" {g} {(processed[g] - processed_then[g]) / span:6.0f}/s" for g in chosen
                    )
                    + f" kills {len(soak.kills)} errors {sum(soak.errors.values())}"
                    f" rss {gateway.rss_mib():4.0f} MiB",
                    flush=True,
                )
                last = (now, soak.acked.count, processed)
        stop_producing.set()
        await asyncio.gather(*producers)
        deadline = time.monotonic() + CATCH_UP_S
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - polls shared state
            soak.acked.missing_from(ledger.delivered) for ledger in soak.groups.values()
        ):
            await asyncio.sleep(1.0)
        elapsed = time.monotonic() - began
        soak.stopping = True
        for slot in slots:
            slot.stop()
        await asyncio.gather(*members)
        exit_code = await gateway.stop()
    groups = []
    for name, ledger in soak.groups.items():
        groups.append(
            GroupResult(
                name,
                ledger.delivered.count,
                soak.acked.missing_from(ledger.delivered),
                len(ledger.redelivered),
                ledger.stints,
                ledger.windows_s(),
                ledger.most_after_one_stint(),
                [(at - began, end - began) for at, end in ledger.widest(3)],
            )
        )
    return Result(
        soak.acked.count, elapsed, groups, soak.errors, soak.kills, soak.restarts, exit_code
    )


def print_summary(result: Result, args: argparse.Namespace) -> None:
    print("summary:")
    print(
        f"  acknowledged records {result.acknowledged}"
        f" ({result.acknowledged / result.elapsed_s:.0f}/s overall); gateway restarts: "
        f"{'; '.join(result.restarts) or 'none'}; exit code at the end {result.gateway_exit}"
    )
    print(f"  consumer processes killed: {'; '.join(result.kills) or 'none'}")
    for g in result.groups:
        rate = g.delivered / result.elapsed_s / args.partitions
        print(
            f"  {g.group}: delivered {g.delivered} distinct, missing {g.missing};"
            f" redelivered {g.redelivered} ({g.redelivered / max(1, g.delivered):.2%})"
            f" after {g.stints} stints (a member's hold on a partition), at most"
            f" {g.most_after_one_stint} after one;"
            f" redelivery window p50 {g.window_percentile(0.5):.2f} s,"
            f" p99 {g.window_percentile(0.99):.2f} s, max {max(g.windows_s, default=0):.2f} s"
            f" (~{rate:.0f} records per partition per second); widest after stints ending at "
            + ", ".join(f"t={end:.1f}s ({end - at:.2f} s)" for at, end in g.widest)
        )
    print(f"  errors {dict(result.errors) or 0}")


def main_parser() -> argparse.ArgumentParser:
    """The command line: the soak's options, and `member` for one consumer process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command")
    member = commands.add_parser("member", help="one consumer process (the soak starts these)")
    member.add_argument("--kind", choices=["python", "sse", "ndjson"], required=True)
    member.add_argument("--url", required=True)
    member.add_argument("--group", required=True)
    member.add_argument("--cursor", default="")
    member.add_argument("--seed", type=int, default=0)
    member.add_argument("--reconnect-s", type=float, nargs=2, default=[10.0, 20.0])
    member.add_argument("--lag-ms", type=float, default=300.0)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to produce")
    parser.add_argument("--server", choices=["granian", "hypercorn"], default="granian")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50, help="records per produce request")
    parser.add_argument("--rate", type=float, default=2000, help="records/s in total (0: no cap)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--members", type=int, default=2, help="consumer processes per group")
    parser.add_argument(
        "--reconnect-s",
        type=float,
        nargs=2,
        default=[10.0, 20.0],
        metavar=("MIN", "MAX"),
        help="each member reconnects after a random time in this range",
    )
    parser.add_argument(
        "--groups",
        type=lambda text: text.split(","),
        default=list(GROUPS),
        help=f"which groups read (default all: {','.join(GROUPS)})",
    )
    parser.add_argument("--kill-every-s", type=float, default=60.0)
    parser.add_argument("--restarts", type=int, default=2, help="gateway restarts (SIGTERM)")
    parser.add_argument(
        "--lag-ms", type=float, default=300.0, help="raw readers process a record this late"
    )
    parser.add_argument(
        "--max-window-s",
        type=float,
        default=2.5,
        help="fail if a record is redelivered that a member had processed longer than this "
        "before it stopped reading the partition (the design bound is 1-1.25 s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = main_parser().parse_args(argv)
    if args.command == "member":
        return member_main(args)
    result = asyncio.run(run(args))
    print_summary(result, args)
    ok = result.missing == 0 and result.widest_window_s() <= args.max_window_s
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
