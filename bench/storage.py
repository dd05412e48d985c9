"""Storage benchmark: the embedded log against raw writes, and against another checkout's log.

    python -m bench.storage [--dir PATH] [--runs N] [--baseline-src DIR] [--sections ...]

`--dir` must be on the disk under test (default: the system temp directory); the file
system it is on is printed. `--baseline-src DIR` names a directory holding another version
of the `storage` package (e.g. `git archive main storage | tar -x -C DIR`): every section
then runs it too, in the same run, alternating with this checkout, and prints the ratio.
Each measurement runs in a fresh child process (`python -m bench.storage child ...`) so
the two versions never share a process. Appends are `await engine.start_append(...)`, the
path the gateway's produce takes. Sections (100-byte values):

- throughput: durable appends (fsync=always) from 1, 16 and 256 concurrent producers to one
  partition, 4 and then 1,000 records per append, and from 4 producers on each of 8
  partitions, records/s and p50/p99 latency, beside the baseline of os.write + os.fsync per
  batch of the append's size; fsync=never appends of 1,000 records against raw os.write;
  sequential reads (cold files, tail cache);
- latency: one producer, one record per append, fsync=always: append latency p50/p99/max
  at a steady 1,000 appends/s (open loop: measured from each append's scheduled time, so
  a stall delays the appends behind it too) and at full speed (each append right after the
  previous one returns);
- instructions: CPU cost per append in instructions (valgrind --tool=callgrind, every thread
  of the process), 4-record appends from 256 producers and from 1 producer, fsync=always;
  the difference between a run of 2N and one of N appends, divided by N, so start-up and
  shut-down cancel out;
- timeline: 1,000 appends/s for --timeline-s seconds (this checkout, and the baseline's
  code timed the same way when given): where the time of the slowest appends went (arrival, loop pickup, queue, write, sync, hand-back, resolve)
  and how long each thread involved waited for a CPU, next to loop stalls, garbage
  collections, the CPU time the hypervisor stole and the machine's CPU pressure (PSI);
- fdatasync: no logway code, the reason for zero-filled segments: pwrite + fdatasync at
  1,000/s, 150 B and 4 KiB each, into a growing file and over zeros, wall time and the time
  blocked on the disk and journal (wall less running and waiting for a CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from storage import codec, files, partition
from storage.log import LogEngine
from storage.types import Durability, DurabilityPolicy, NewRecord, TopicConfig

ROOT = Path(__file__).resolve().parents[1]
VALUE_BYTES = 100
SMALL_APPEND = 4
NEVER_BATCH = 1000
CONFIG = TopicConfig(retention_ms=None)
SECTIONS = ("throughput", "latency", "instructions", "timeline", "fdatasync")


def _records(count: int) -> list[NewRecord]:
    return [NewRecord(b"%08d" % i + b"x" * (VALUE_BYTES - 8)) for i in range(count)]


def _batch_bytes(count: int) -> bytes:
    return codec.encode_batch(0, 0, _records(count))


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of latencies in seconds, in milliseconds."""
    ordered = sorted(values)
    return {
        "p50": ordered[len(ordered) // 2] * 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max": ordered[-1] * 1000,
    }


async def _engine(directory: Path, mode: Durability) -> LogEngine:
    engine = await LogEngine.open(directory, DurabilityPolicy(mode), 3600)
    await engine.open_topic("bench", 1, CONFIG)
    return engine


# -- throughput (child) ---------------------------------------------------------------------


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


async def durable_appends(
    directory: Path, producers: int, per_append: int, total_records: int, partitions: int = 1
) -> dict[str, float]:
    """records/s, p50 and p99 (ms) of fsync=always appends from concurrent producers, each
    appending to one of `partitions` partitions (`producers` per partition)."""
    engine = await LogEngine.open(directory, DurabilityPolicy(Durability.ALWAYS), 3600)
    await engine.open_topic("bench", partitions, CONFIG)
    records = _records(per_append)
    appends_each = max(1, total_records // (partitions * producers * per_append))
    latencies: list[float] = []

    async def produce(partition: int) -> None:
        for _ in range(appends_each):
            start = time.perf_counter()
            await engine.start_append("bench", partition, records)
            latencies.append(time.perf_counter() - start)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(produce(p) for p in range(partitions) for _ in range(producers)))
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    rate = partitions * producers * appends_each * per_append / elapsed
    return {"rate": rate, **_quantiles(latencies)}


async def never_appends(directory: Path, total_records: int, producers: int) -> float:
    """records/s of fsync=never appends of NEVER_BATCH records each."""
    engine = await _engine(directory, Durability.NEVER)
    records = _records(NEVER_BATCH)
    appends_each = max(1, total_records // (producers * NEVER_BATCH))

    async def produce() -> None:
        for _ in range(appends_each):
            await engine.start_append("bench", 0, records)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(produce() for _ in range(producers)))
        elapsed = time.perf_counter() - start
    finally:
        await engine.close()
    return producers * appends_each * NEVER_BATCH / elapsed


async def sequential_reads(directory: Path, cold: bool) -> float:
    """records/s reading in pulls of 1,000 records: the whole partition from its files
    (`cold`), or 20 passes over the last 8,000 records, which sit in the tail cache."""
    engine = await _engine(directory, Durability.NEVER)
    try:
        if not cold:
            for _ in range(8):
                await engine.start_append("bench", 0, _records(NEVER_BATCH))
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
    return count / elapsed


async def throughput_rows(root: Path, scale: float) -> dict[str, dict[str, float]]:
    """Every row of the throughput section, keyed by its label."""
    rows: dict[str, dict[str, float]] = {}
    for per_append, durable_total in ((SMALL_APPEND, 200_000), (1000, 1_000_000)):
        total = int(durable_total * scale)
        for producers in (1, 16, 256):
            rows[f"{per_append} rec x {producers:>3} producers"] = await durable_appends(
                root / f"always-{per_append}-{producers}",
                producers,
                per_append,
                total // (10 if producers == 1 else 1),
            )
    rows["4 rec x 4 producers x 8 partitions"] = await durable_appends(
        root / "always-spread", 4, SMALL_APPEND, int(100_000 * scale), partitions=8
    )
    never_total = int(1_000_000 * scale)
    for producers in (1, 4):
        rate = await never_appends(root / f"never-{producers}", never_total, producers)
        rows[f"never, 1000 rec x {producers} producer(s)"] = {"rate": rate}
    rows["reads from the files"] = {"rate": await sequential_reads(root / "never-1", cold=True)}
    rows["reads from the tail cache"] = {
        "rate": await sequential_reads(root / "never-4", cold=False)
    }
    return rows


def raw_rows(root: Path, scale: float) -> dict[str, float]:
    """The raw-write baselines (the same for both versions: measured once per run)."""
    return {
        "write+fsync 4": raw_write(root, SMALL_APPEND, int(20_000 * scale), True),
        "write+fsync 1000": raw_write(root, 1000, int(1_000_000 * scale), True),
        "write 1000": raw_write(root, NEVER_BATCH, int(1_000_000 * scale), False),
    }


# -- latency (child) ------------------------------------------------------------------------


class Arrivals:
    """Appends that arrive at a steady rate, as requests do: a thread wakes the loop at each
    scheduled time (call_soon_threadsafe, as a socket would) so the loop's own timer
    granularity (1 ms with epoll) adds nothing, while a busy or stalled loop still delays
    the appends behind it."""

    def __init__(
        self, rate: float, count: int, arrive: Callable[[float], None], trace: bool = False
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.interval = 1 / rate
        self.count = count
        self.arrive = arrive
        self.trace = trace
        # with `trace`: scheduled time -> (handed to the loop, this thread's run-queue wait)
        self.sent: dict[float, tuple[float, float]] = {}
        self.start = time.perf_counter() + 0.05
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        waited = run_queue_wait()
        for i in range(self.count):
            scheduled = self.start + i * self.interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if self.trace:
                before, waited = waited, run_queue_wait()
                self.sent[scheduled] = (time.perf_counter(), waited - before)
            self.loop.call_soon_threadsafe(self.arrive, scheduled)


async def paced_latencies(engine: LogEngine, rate: float, count: int) -> list[float]:
    """One single-record append every 1/rate s, each measured from its scheduled arrival
    to its acknowledgement (rate 0: full speed, each right after the last returns)."""
    records = _records(1)
    latencies: list[float] = []
    if rate == 0:
        for _ in range(count):
            start = time.perf_counter()
            await engine.start_append("bench", 0, records)
            latencies.append(time.perf_counter() - start)
        return latencies
    done = asyncio.get_running_loop().create_future()

    def arrive(scheduled: float) -> None:
        def finished(_: object) -> None:
            latencies.append(time.perf_counter() - scheduled)
            if len(latencies) == count and not done.done():
                done.set_result(None)

        engine.start_append("bench", 0, records).add_done_callback(finished)

    Arrivals(rate, count, arrive)
    await done
    return latencies


async def latency_child(directory: Path, rate: float, count: int) -> dict[str, float]:
    engine = await _engine(directory, Durability.ALWAYS)
    try:
        await paced_latencies(engine, 0, 200)  # warm up: files opened, zeros ahead
        return _quantiles(await paced_latencies(engine, rate, count))
    finally:
        await engine.close()


# -- instructions (child, under callgrind) --------------------------------------------------


async def appends_child(directory: Path, producers: int, appends: int) -> None:
    engine = await _engine(directory, Durability.ALWAYS)
    records = _records(SMALL_APPEND)

    async def produce(count: int) -> None:
        for _ in range(count):
            await engine.start_append("bench", 0, records)

    try:
        each, extra = divmod(appends, producers)
        await asyncio.gather(*(produce(each + (i < extra)) for i in range(producers)))
    finally:
        await engine.close()


# -- timeline (child, this checkout only) ---------------------------------------------------


class _Stamps:
    """Timestamps taken inside the engine by wrapping a few of its functions (benchmark
    only): when the writer thread took each group, and when the loop published it."""

    def __init__(self) -> None:
        self.by_offset: dict[int, dict[str, float]] = {}

    def install(self) -> None:
        stamps = self
        write_group = partition.Partition._write_locked
        publish = partition.Partition._publish_locked
        write_all = files.Files.write_all
        sync_data = files.Files.fdatasync
        local = threading.local()

        def timed_write_group(self: Any, group: list[Any]) -> Any:
            local.times = times = {"taken": time.perf_counter()}
            try:
                return write_group(self, group)
            finally:
                times["written"] = time.perf_counter()
                waited = run_queue_wait()
                times["writer rq"] = waited - getattr(local, "waited", waited)
                local.waited = waited
                for pending in group:
                    stamps.by_offset[pending.base_offset] = times

        def timed_write_all(self: files.Files, fd: int, data: Any, position: int) -> None:
            started = time.perf_counter()
            write_all(self, fd, data, position)
            times = getattr(local, "times", None)
            if times is not None:
                times["write"] = times.get("write", 0.0) + time.perf_counter() - started

        def timed_sync(self: files.Files, fd: int) -> None:
            started = time.perf_counter()
            sync_data(self, fd)
            times = getattr(local, "times", None)
            if times is not None:  # a thread that writes groups (not one that zero-fills)
                times["sync"] = times.get("sync", 0.0) + time.perf_counter() - started

        def timed_publish(self: Any, group: list[Any], *rest: Any) -> None:
            now = time.perf_counter()
            for pending in group:
                stamps.by_offset[pending.base_offset]["published"] = now
            publish(self, group, *rest)

        partition.Partition._write_locked = timed_write_group  # type: ignore[method-assign]
        partition.Partition._publish_locked = timed_publish  # type: ignore[method-assign,assignment]
        files.Files.write_all = timed_write_all  # type: ignore[method-assign]
        files.Files.fdatasync = timed_sync  # type: ignore[method-assign]


def _schedstat() -> tuple[float, float]:
    """Seconds the calling thread has run, and has been runnable but waiting for a CPU."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            ran, waited, _ = stat.read().split()
    except OSError:
        return 0.0, 0.0
    return int(ran) / 1e9, int(waited) / 1e9


def run_queue_wait() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (schedstat)."""
    return _schedstat()[1]


# -- fdatasync (child): growing a file against overwriting its zeros ------------------------


def fdatasync_child(directory: Path, write_bytes: int, count: int, zero_filled: bool) -> Any:
    """pwrite + fdatasync of `write_bytes` at the end of the data, 1,000 a second: into a
    file that grows, or over zeros written and synced beforehand. Per call: the wall time,
    and the time blocked (wall less running and waiting for a CPU), which is the disk's and
    the journal's share whatever else the machine runs."""
    path = directory / "fdatasync.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if zero_filled:
            zeros = bytes(1 << 20)
            for position in range(0, count * write_bytes + len(zeros), len(zeros)):
                os.pwrite(fd, zeros, position)
            os.fdatasync(fd)
        data = b"x" * write_bytes
        walls, blocked = [], []
        next_at = time.perf_counter()
        for i in range(count):
            next_at += 0.001
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ran, waited = _schedstat()
            started = time.perf_counter()
            os.pwrite(fd, data, i * write_bytes)
            os.fdatasync(fd)
            wall = time.perf_counter() - started
            ran_after, waited_after = _schedstat()
            walls.append(wall)
            blocked.append(max(0.0, wall - (ran_after - ran) - (waited_after - waited)))
    finally:
        os.close(fd)
        path.unlink()
    return {"wall": _quantiles(walls), "blocked": _quantiles(blocked)}


def _cpu_pressure_s() -> float:
    """Seconds during which some runnable task of the machine waited for a CPU (PSI)."""
    try:
        with open("/proc/pressure/cpu") as pressure:
            return int(pressure.readline().rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def _steal_ticks() -> int:
    """CPU time (USER_HZ ticks) the hypervisor gave to others while this VM wanted it."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


async def timeline_child(directory: Path, seconds: float) -> dict[str, Any]:
    stamps = _Stamps()
    stamps.install()
    engine = await _engine(directory, Durability.ALWAYS)
    loop = asyncio.get_running_loop()
    stalls: list[tuple[float, float]] = []  # (when, how late a 1 ms timer fired)
    collections: list[tuple[float, float, int]] = []  # (when, pause, generation)
    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started.append(time.perf_counter())
        elif gc_started:
            started = gc_started.pop()
            collections.append((started, time.perf_counter() - started, info["generation"]))

    async def watch_loop() -> None:
        while True:
            expected = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            late = time.perf_counter() - expected
            if late > 0.002:
                stalls.append((expected, late))

    records = _records(1)
    count = int(seconds * 1000)
    # offset -> scheduled, called, done, the loop thread's run-queue wait from the arrival
    # before this one until this one was done
    appends: dict[int, tuple[float, float, float, float]] = {}
    done = loop.create_future()
    loop_waited = [run_queue_wait()]

    def arrive(scheduled: float) -> None:
        called = time.perf_counter()
        before = loop_waited[0]
        loop_waited[0] = run_queue_wait()

        def finished(future: asyncio.Future[Any]) -> None:
            appends[future.result().base_offset] = (
                scheduled,
                called,
                time.perf_counter(),
                run_queue_wait() - before,
            )
            if len(appends) == count and not done.done():
                done.set_result(None)

        engine.start_append("bench", 0, records).add_done_callback(finished)

    try:
        await paced_latencies(engine, 0, 200)
        watcher = loop.create_task(watch_loop())
        gc.callbacks.append(on_gc)
        steal_before = _steal_ticks()
        pressure_before = _cpu_pressure_s()
        arrivals = Arrivals(1000, count, arrive, trace=True)
        start = arrivals.start
        await done
        steal = _steal_ticks() - steal_before
        pressure = _cpu_pressure_s() - pressure_before
        gc.callbacks.remove(on_gc)
        watcher.cancel()
    finally:
        await engine.close()
    rows = []
    for offset, (scheduled, called, finished_at, loop_rq) in appends.items():
        times = stamps.by_offset.get(offset, {})
        taken = times.get("taken", called)
        written = times.get("written", taken)
        published = times.get("published", written)
        sent, arrival_rq = arrivals.sent[scheduled]
        rows.append(
            {
                "at": scheduled - start,
                "total": finished_at - scheduled,
                "arrival late": sent - scheduled,
                "arrival rq": arrival_rq,
                "loop pickup": called - sent,
                "loop rq": loop_rq,
                "queue": taken - called,
                "write": times.get("write", 0.0),
                "sync": times.get("sync", 0.0),
                "writer other": (written - taken) - times.get("write", 0) - times.get("sync", 0),
                "hand-back": published - written,
                "resolve": finished_at - published,
                "writer rq": times.get("writer rq", 0.0),
            }
        )
    return {
        "rows": rows,
        "stalls": [(when - start, late) for when, late in stalls],
        "collections": [(when - start, pause, gen) for when, pause, gen in collections],
        "steal_s": steal / os.sysconf("SC_CLK_TCK"),
        "pressure_s": pressure,
        "seconds": seconds,
    }


# -- the driver -----------------------------------------------------------------------------


def _child(src: Path, directory: Path, *args: str, wrapper: Sequence[str] = ()) -> Any:
    """Run `python -m bench.storage child ...` with the `storage` package of `src`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys([str(src), str(ROOT)])))
    result = subprocess.run(
        [*wrapper, sys.executable, "-m", "bench.storage", "child", *args, "--dir", str(directory)],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if wrapper:
        return result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def _file_system(path: Path) -> str:
    out = subprocess.run(
        ["df", "--output=fstype,source", str(path)], capture_output=True, text=True, check=False
    ).stdout.split()
    return f"{out[2]} on {out[3]}" if len(out) >= 4 else "unknown"


def _span(values: Sequence[float], fmt: str = "{:,.2f}") -> str:
    low, high = min(values), max(values)
    return (
        fmt.format(low)
        if fmt.format(low) == fmt.format(high)
        else f"{fmt.format(low)}-{fmt.format(high)}"
    )


def _versions(args: argparse.Namespace) -> list[tuple[str, Path]]:
    versions = [("this", ROOT)]
    if args.baseline_src is not None:
        versions.append(("baseline", args.baseline_src.resolve()))
    return versions


def run_throughput(args: argparse.Namespace, root: Path) -> None:
    versions = _versions(args)
    results: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name, _ in versions}
    raws: list[dict[str, float]] = []
    for run in range(args.runs):
        raws.append(raw_rows(root, args.scale))
        for name, src in versions if run % 2 == 0 else versions[::-1]:
            directory = root / f"throughput-{name}-{run}"
            results[name].append(_child(src, directory, "throughput", "--scale", str(args.scale)))
            shutil.rmtree(directory, ignore_errors=True)
    print("throughput (records/s; latency p50 / p99 ms), min-max of", args.runs, "runs:")
    for key in ("write+fsync 4", "write+fsync 1000", "write 1000"):
        print(f"  raw {key:<38} {_span([r[key] for r in raws], '{:,.0f}'):>26}")
    for label in results["this"][0]:
        line = f"  {label:<42}"
        for name, _ in versions:
            runs = results[name]
            line += f" {name}: {_span([r[label]['rate'] for r in runs], '{:,.0f}'):>24}"
            if "p50" in runs[0][label]:
                p50 = _span([r[label]["p50"] for r in runs])
                p99 = _span([r[label]["p99"] for r in runs])
                line += f" ({p50} / {p99})"
        if len(versions) > 1:
            ratios = [
                t[label]["rate"] / b[label]["rate"]
                for t, b in zip(results["this"], results["baseline"], strict=True)
            ]
            line += f"  x{_span(ratios)}"
        print(line)
    print()


def run_latency(args: argparse.Namespace, root: Path) -> None:
    versions = _versions(args)
    modes = (("1,000 appends/s", 1000.0), ("full speed", 0.0))
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for run in range(args.runs):
        for mode, rate in modes:
            for name, src in versions if run % 2 == 0 else versions[::-1]:
                directory = root / f"latency-{name}-{run}"
                result = _child(
                    src, directory, "latency", "--rate", str(rate), "--count", str(args.count)
                )
                results.setdefault((mode, name), []).append(result)
                shutil.rmtree(directory, ignore_errors=True)
    print(
        f"append latency, fsync=always, 1 record per append, {args.count:,} appends,"
        f" ms, min-max of {args.runs} runs:"
    )
    for mode, _ in modes:
        for name, _ in versions:
            runs = results[(mode, name)]
            cells = "  ".join(f"{q} {_span([r[q] for r in runs])}" for q in ("p50", "p99", "max"))
            print(f"  {mode:<16} {name:<9} {cells}")
        if len(versions) > 1:
            this, base = results[(mode, "this")], results[(mode, "baseline")]
            cells = "  ".join(
                f"{q} x{_span([t[q] / b[q] for t, b in zip(this, base, strict=True)])}"
                for q in ("p50", "p99", "max")
            )
            print(f"  {mode:<16} {'ratio':<9} {cells}")
    print()


_COLLECTED = re.compile(r"Collected : (\d+)")


def run_instructions(args: argparse.Namespace, root: Path) -> None:
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed; skipped\n")
        return
    versions = _versions(args)
    base_appends = args.appends
    results: dict[tuple[str, int], list[float]] = {}
    for run in range(args.runs):
        for producers in (256, 1):
            for name, src in versions if run % 2 == 0 else versions[::-1]:
                counts = []
                for appends in (base_appends, 2 * base_appends):
                    directory = root / f"instructions-{name}-{run}"
                    stderr = _child(
                        src,
                        directory,
                        "appends",
                        "--producers",
                        str(producers),
                        "--appends",
                        str(appends),
                        wrapper=("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
                    )
                    shutil.rmtree(directory, ignore_errors=True)
                    match = _COLLECTED.search(stderr)
                    if match is None:
                        raise RuntimeError(f"no instruction count from callgrind:\n{stderr}")
                    counts.append(int(match.group(1)))
                results.setdefault((name, producers), []).append(
                    (counts[1] - counts[0]) / base_appends
                )
    print(
        f"instructions per {SMALL_APPEND}-record append, fsync=always (callgrind, all threads,"
        f" ({base_appends * 2:,} - {base_appends:,} appends) / {base_appends:,}), min-max of"
        f" {args.runs} runs:"
    )
    for producers in (256, 1):
        line = f"  {producers:>3} producer(s)"
        for name, _ in versions:
            line += f"  {name}: {_span(results[(name, producers)], '{:,.0f}'):>16}"
        if len(versions) > 1:
            ratios = [
                t / b
                for t, b in zip(
                    results[("this", producers)], results[("baseline", producers)], strict=True
                )
            ]
            line += f"  x{_span(ratios)}"
        print(line)
    print()


def run_fdatasync(args: argparse.Namespace, root: Path) -> None:
    cases = [(size, zero_filled) for size in (150, 4096) for zero_filled in (False, True)]
    results: dict[tuple[int, bool], list[dict[str, dict[str, float]]]] = {}
    for run in range(args.runs):
        for size, zero_filled in cases if run % 2 == 0 else cases[::-1]:
            directory = root / f"fdatasync-{run}"
            result = _child(
                ROOT,
                directory,
                "fdatasync",
                "--count",
                str(args.fdatasync_count),
                "--bytes",
                str(size),
                *(["--zero-filled"] if zero_filled else []),
            )
            results.setdefault((size, zero_filled), []).append(result)
            shutil.rmtree(directory, ignore_errors=True)
    print(
        f"pwrite + fdatasync at 1,000/s, {args.fdatasync_count:,} each, ms (wall; blocked ="
        f" wall less running and waiting for a CPU), min-max of {args.runs} runs:"
    )
    for size, zero_filled in cases:
        runs = results[(size, zero_filled)]
        kind = "over zeros" if zero_filled else "growing"
        for measure in ("wall", "blocked"):
            cells = "  ".join(
                f"{q} {_span([r[measure][q] for r in runs], '{:.3f}')}"
                for q in ("p50", "p99", "max")
            )
            print(f"  {size:>5} B {kind:<11} {measure:<8} {cells}")
    print()


STAGES = (
    "arrival late",
    "loop pickup",
    "queue",
    "write",
    "sync",
    "writer other",
    "hand-back",
    "resolve",
)
RUN_QUEUE = ("arrival rq", "loop rq", "writer rq")


def run_timeline(args: argparse.Namespace, root: Path) -> None:
    versions = _versions(args)
    for run in range(args.runs if len(versions) > 1 else 1):
        for name, src in versions if run % 2 == 0 else versions[::-1]:
            directory = root / f"timeline-{name}-{run}"
            result = _child(src, directory, "timeline", "--seconds", str(args.timeline_s))
            shutil.rmtree(directory, ignore_errors=True)
            _print_timeline(name, result)


def _print_timeline(name: str, result: dict[str, Any]) -> None:
    rows = result["rows"]
    totals = sorted(r["total"] for r in rows)
    p99 = totals[int(len(totals) * 0.99)]
    slow = [r for r in rows if r["total"] >= p99]
    print(
        f"timeline of {name}: {len(rows):,} appends at 1,000/s over {result['seconds']:.0f} s,"
        f" p50 {totals[len(totals) // 2] * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms,"
        f" max {totals[-1] * 1000:.2f} ms"
    )
    print(
        f"  per stage, ms: mean over the {len(slow)} appends at or over p99; p50 / p99 / max"
        " over all appends"
    )
    for stage in STAGES + RUN_QUEUE:
        values = [r[stage] for r in rows]
        q = _quantiles(values)
        slow_mean = statistics.fmean(r[stage] for r in slow) * 1000
        print(
            f"    {stage:<13} {slow_mean:8.3f}   {q['p50']:.3f} / {q['p99']:.3f} / {q['max']:.3f}"
        )
    print("  the 5 slowest, ms (at = seconds into the run; rq = waiting for a CPU):")
    columns = STAGES + RUN_QUEUE
    print("    " + f"{'at':>7} {'total':>7} " + " ".join(f"{s[:9]:>9}" for s in columns))
    for r in sorted(rows, key=lambda r: r["total"])[-5:]:
        print(
            "    "
            + f"{r['at']:7.3f} {r['total'] * 1000:7.2f} "
            + " ".join(f"{r[s] * 1000:9.3f}" for s in columns)
        )
    stalls = result["stalls"]
    collections = result["collections"]
    print(
        f"  loop stalls over 2 ms: {len(stalls)} (max {max((s[1] for s in stalls), default=0) * 1000:.1f} ms);"
        f" garbage collections: {len(collections)}, max pause"
        f" {max((c[1] for c in collections), default=0) * 1000:.2f} ms;"
        f" CPU stolen by the hypervisor: {result['steal_s']:.2f} s of {result['seconds']:.0f} s;"
        f" some task of the machine waiting for a CPU (PSI): {result['pressure_s']:.1f} s"
    )
    cpu_bound = sum(max(r[q] for q in RUN_QUEUE) >= r["total"] / 2 for r in slow)
    disk_bound = sum(r["sync"] - r["writer rq"] >= r["total"] / 2 for r in slow)
    queued = sum(
        r["queue"] >= r["total"] / 2 and max(r[q] for q in RUN_QUEUE) < r["total"] / 2 for r in slow
    )
    print(
        f"  of the {len(slow)} slow appends, {cpu_bound} spent at least half their latency with"
        f" a thread of theirs waiting for a CPU (run queue), {disk_bound} in fdatasync beyond"
        f" the writer's run-queue wait (the disk), {queued} others queued behind an earlier"
        " group"
    )
    slow_at = [r["at"] for r in slow]
    near_stall = sum(any(abs(at - s[0]) < 0.01 for s in stalls) for at in slow_at)
    near_gc = sum(any(abs(at - c[0]) < 0.01 for c in collections if c[1] > 0.001) for at in slow_at)
    print(
        f"  of the slow appends, {near_stall} were within 10 ms of a loop stall and {near_gc}"
        " of a collection pausing over 1 ms"
    )
    print()


def _child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.storage child")
    parser.add_argument(
        "what", choices=("throughput", "latency", "appends", "timeline", "fdatasync")
    )
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--producers", type=int, default=256)
    parser.add_argument("--appends", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--bytes", type=int, default=4096, help="fdatasync: bytes per write")
    parser.add_argument("--zero-filled", action="store_true")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.what == "throughput":
        result: Any = asyncio.run(throughput_rows(args.dir, args.scale))
    elif args.what == "latency":
        result = asyncio.run(latency_child(args.dir, args.rate, args.count))
    elif args.what == "appends":
        asyncio.run(appends_child(args.dir, args.producers, args.appends))
        return
    elif args.what == "fdatasync":
        result = fdatasync_child(args.dir, args.bytes, args.count, args.zero_filled)
    else:
        result = asyncio.run(timeline_child(args.dir, args.seconds))
    print(json.dumps(result))


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        _child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--baseline-src", type=Path, help="a directory holding another `storage`")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sections", default=",".join(SECTIONS[:3]))
    parser.add_argument("--scale", type=float, default=1.0, help="throughput: share of records")
    parser.add_argument("--count", type=int, default=10_000, help="latency: appends per run")
    parser.add_argument("--appends", type=int, default=5_000, help="instructions: N")
    parser.add_argument("--timeline-s", type=float, default=30.0)
    parser.add_argument("--fdatasync-count", type=int, default=3000)
    args = parser.parse_args()
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir))
    runners: dict[str, Callable[[argparse.Namespace, Path], None]] = {
        "throughput": run_throughput,
        "latency": run_latency,
        "instructions": run_instructions,
        "timeline": run_timeline,
        "fdatasync": run_fdatasync,
    }
    try:
        print(
            f"logway storage benchmark: {VALUE_BYTES}-byte values, files under {root}"
            f" ({_file_system(root)}), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        )
        if args.baseline_src is not None:
            print(f"  baseline: the storage package in {args.baseline_src}")
        print()
        for section in sections:
            runners[section](args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
