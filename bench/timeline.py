"""Where produce→SSE latency goes: a per-stage timeline of each record, slow ones first.

    .venv/bin/python -m bench.timeline --seconds 20     # 1,000 records/s, fsync always

Runs `logway serve` (this module as its entry point, `serve`) with probes wrapped around
the stages of one record's way, each stamping `time.monotonic_ns()` (one clock for every
process on the machine), and the latency client and paced producer of bench/http.py:

    scheduled → recv (the request reached the route) → parsed → queued (start_append) →
    write (the writer thread took its group) → sync → synced (fdatasync returned) →
    woken (the loop ran the group's callback) → published → render → rendered →
    sent (the SSE response took the chunk) → received (the client read it)

The probes cost a little themselves; bench/http.py's latency section gives the figures
without them. Data lives in a temp dir on the disk (`--dir`; the file system is printed).
"""

from __future__ import annotations

import argparse
import contextvars
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson

STAGES = (
    "scheduled", "recv", "parsed", "queued", "write", "sync", "synced", "woken",
    "published", "render", "rendered", "sent", "received",
)  # fmt: skip
_now = time.monotonic_ns
_request: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "timeline", default=None
)
_by_offset: dict[tuple[str, int], dict[str, int]] = {}  # ("topic/partition", offset)
_writing = threading.local()
_chunks: dict[int, list[dict[str, int]]] = {}  # id(SSE chunk) → the records in it
_done: list[dict[str, int]] = []


def _install(out: Path) -> None:
    """Wrap the stages (gateway process only)."""
    import gateway.routes.produce as produce_route
    import gateway.routes.streams as streams_route
    import gateway.streams.formats as formats
    from gateway.produce.parse import parse_json_body
    from storage.files import Files
    from storage.partition import Partition

    produce, parse = produce_route.produce, parse_json_body

    async def timed_produce(scope: Any, receive: Any, send: Any) -> None:
        token = _request.set({"recv": _now()})
        try:
            await produce(scope, receive, send)
        finally:
            _request.reset(token)

    def timed_parse(body: bytes, limits: Any) -> Any:
        batch = parse(body, limits)
        stamps = _request.get()
        if stamps is not None and batch.records:
            stamps["parsed"] = _now()
            stamps["scheduled"] = orjson.loads(batch.records[0].value)["t"]
        return batch

    start_append = Partition.start_append

    def timed_start_append(self: Partition, records: Any, tag: Any = None) -> Any:
        stamps = _request.get()
        if stamps is not None:
            stamps["queued"] = _now()
            _by_offset[(self.name, self._next_offset)] = stamps
        return start_append(self, records, tag)

    write_locked = Partition._write_locked

    def timed_write_locked(self: Partition, group: Any) -> Any:
        now = _now()
        found = [s for b in group if (s := _by_offset.get((self.name, b.base_offset)))]
        for stamps in found:
            stamps["write"] = now
        _writing.stamps = found
        try:
            return write_locked(self, group)
        finally:
            _writing.stamps = []

    sync_data = Files.fdatasync

    def timed_sync(self: Files, fd: int) -> None:
        started = _now()
        sync_data(self, fd)
        ended = _now()
        for stamps in getattr(_writing, "stamps", []):
            stamps["sync"], stamps["synced"] = started, ended

    written = Partition._written

    def timed_written(self: Partition, group: Any, *rest: Any) -> None:
        now = _now()
        found = [s for b in group if (s := _by_offset.get((self.name, b.base_offset)))]
        for stamps in found:
            stamps["woken"] = now
        written(self, group, *rest)
        now = _now()
        for stamps in found:
            stamps["published"] = now

    sse_records = formats._sse_records

    def timed_sse_records(topic: str, batch: Any, encoder: Any) -> bytes:
        started = _now()
        chunk = sse_records(topic, batch, encoder)
        ended = _now()
        name = f"{topic}/{batch.partition}"
        found = [s for r in batch.records if (s := _by_offset.pop((name, r.offset), None))]
        for stamps in found:
            stamps["render"], stamps["rendered"] = started, ended
        _chunks[id(chunk)] = found
        return chunk

    sse_chunks = formats.sse_chunks  # what gateway.routes.streams imported

    async def timed_sse_chunks(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        async for chunk in sse_chunks(*args, **kwargs):
            found = _chunks.pop(id(chunk), [])
            yield chunk
            now = _now()
            for stamps in found:
                stamps["sent"] = now
            _done.extend(found)

    for owner, name, wrapper in (
        (produce_route, "produce", timed_produce),
        (produce_route, "parse_json_body", timed_parse),
        (Partition, "start_append", timed_start_append),
        (Partition, "_write_locked", timed_write_locked),
        (Files, "fdatasync", timed_sync),
        (Partition, "_written", timed_written),
        (formats, "_sse_records", timed_sse_records),
        (streams_route, "sse_chunks", timed_sse_chunks),
    ):
        setattr(owner, name, wrapper)
    threading.Thread(target=_flush_forever, args=(out,), daemon=True).start()


def _flush_forever(out: Path) -> None:
    with out.open("ab") as file:
        while True:
            time.sleep(0.5)
            taken = len(_done)
            file.write(b"".join(orjson.dumps(s) + b"\n" for s in _done[:taken]))
            del _done[:taken]
            file.flush()


def _serve(argv: list[str]) -> int:
    _install(Path(os.environ["BENCH_TIMELINE_OUT"]))
    from gateway.cli import main

    return main(["serve", *argv])


def _percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def _file_system(path: Path) -> str:
    command = ["findmnt", "-no", "FSTYPE,SOURCE", "-T", str(path)]
    return subprocess.run(command, capture_output=True, text=True).stdout.strip()


def _steps(stamps: dict[str, int]) -> list[tuple[str, int]]:
    """(stage, ns since the stage before it) for each stage the record has."""
    present = [s for s in STAGES if s in stamps]
    return [(b, stamps[b] - stamps[a]) for a, b in itertools.pairwise(present)]


def _report(timelines: list[dict[str, int]], slow_fraction: float) -> str:
    total = [t["received"] - t["scheduled"] for t in timelines]
    p50, p99 = _percentile(total, 0.5), _percentile(total, 0.99)
    cut = sorted(total)[int((1 - slow_fraction) * len(total))]
    slow = [t for t, e2e in zip(timelines, total, strict=True) if e2e >= cut]
    lines = [
        f"{len(timelines)} records: end-to-end p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"max {max(total) / 1e6:.2f} ms; slowest {len(slow)} (>= {cut / 1e6:.2f} ms)",
        "",
        "| stage (time since the previous one) | p50 all | p99 all | p50 slow | max slow |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stage in STAGES[1:]:
        every = [d for t in timelines for s, d in _steps(t) if s == stage]
        among = [d for t in slow for s, d in _steps(t) if s == stage]
        if every and among:
            lines.append(
                f"| {stage} | {_percentile(every, 0.5):.3f} | {_percentile(every, 0.99):.3f} | "
                f"{_percentile(among, 0.5):.3f} | {max(among) / 1e6:.3f} |"
            )
    lines += ["", "slowest records (ms per stage):"]
    for t in sorted(slow, key=lambda t: t["scheduled"] - t["received"])[:10]:
        steps = " ".join(f"{s} {d / 1e6:.2f}" for s, d in _steps(t))
        lines.append(f"  {(t['received'] - t['scheduled']) / 1e6:.2f} ms: {steps}")
    return "\n".join(lines)


def _run(seconds: int, rate: int, directory: Path | None, slow_fraction: float) -> str:
    from bench.http import TOPIC, Client, _free_port, running

    with tempfile.TemporaryDirectory(prefix="logway-timeline-", dir=directory) as workdir:
        work = Path(workdir)
        out, port = work / "stamps.jsonl", _free_port()
        os.environ["BENCH_TIMELINE_OUT"] = str(out)
        command = [sys.executable, "-m", "bench.timeline", "serve", "--port", str(port)]
        command += ["--data-dir", str(work / "data"), "--log-level", "warning", "--fsync", "always"]
        with running("logway serve (timeline probes)", command, port, work / "serve.log") as srv:
            httpx.put(f"{srv.url}/v1/topics/{TOPIC}", json={"partitions": 3}).raise_for_status()
            subscriber = Client("latency", port, records=seconds * rate, timeout_s=seconds + 30)
            subscriber.read()  # ready
            producer = Client("produce", port, rate=rate, seconds=seconds, batch=1)
            producer.read()
            producer.close()
            received = subscriber.read()
            subscriber.close()
            time.sleep(1.5)  # the probes' last flush
        stamps = {s["scheduled"]: s for s in map(orjson.loads, out.read_bytes().splitlines())}
        timelines = []
        for scheduled, latency in zip(
            received["scheduled_ns"], received["latencies_ns"], strict=True
        ):
            found = stamps.get(scheduled)
            if found is not None:
                timelines.append({**found, "received": scheduled + latency})
        head = f"data on {_file_system(work)} ({work}); {rate} records/s for {seconds} s; "
        return head + _report(timelines, slow_fraction)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.timeline", description=__doc__)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="where the temp data dir goes")
    parser.add_argument("--slow", type=float, default=0.01, help="fraction counted as slow")
    args = parser.parse_args(argv)
    print(_run(args.seconds, args.rate, args.dir, args.slow), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
