"""HTTP benchmark of `logway serve`, each figure beside a bare-Starlette baseline from the same run.

    apt-get install -y nghttp2-client wrk      # h2load and wrk
    .venv/bin/python -m bench.http             # default server, a few minutes, loopback only
    .venv/bin/python -m bench.http --server hypercorn --sections compare,produce

Load always comes from other processes: wrk (HTTP/1.1) and h2load (h2c) for request rates,
and this module re-run as a client (`python -m bench.http client ...`, raw asyncio sockets)
for SSE latency, fan-out and idle-stream memory. The gateway and the baselines run as real
`logway serve` / `python -m bench.baseline_app` processes with their data in a temp dir.
Sections:

- compare: the bare baseline app on Granian and on Hypercorn (how the default was chosen);
- produce: single-record durable produce (fsync always) vs the bare handler, req/s and p99;
- batch: 1,000 x 100-byte records per request, records/s, vs the bare parse-and-append handler;
- latency: produce -> SSE end-to-end latency at 1,000 records/s (scheduled send -> receipt);
- fanout: delivered events/s, 1,000 SSE subscribers on one topic;
- memory: gateway RSS delta per idle SSE stream at 1,000 and 10,000 streams;
- schema: batch produce of 1,000 ten-property orders to a topic without a schema, with one
  (the msgspec fast path) and with one the fast path cannot express (a `format`, so
  jsonschema_rs checks every value), alternating in one gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.bodies import BATCH_BODY, ORDER_SCHEMA, ORDERS_BODY, SINGLE_BODY, SLOW_ORDER_SCHEMA
from bench.processes import status_kib, stop
from gateway.server import SERVERS
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LOGWAY = Path(sys.executable).parent / "logway"
HOST = "127.0.0.1"
TOPIC = "bench"
SECTIONS = ("compare", "produce", "batch", "latency", "fanout", "memory", "schema")

# -- processes ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process under test (the gateway or a baseline)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def rss_bytes(self) -> int:
        return status_kib(self.process.pid) * 1024

    def stop(self) -> None:
        stop(self.process, 20)


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} not healthy")


# All load comes from 127.0.0.1: lift the gateway's per-client and total stream caps, and
# its per-client connection cap (10,000 idle streams are 10,000 connections).
GATEWAY_ENV = {
    "LOGWAY_MAX_STREAMS": "100000",
    "LOGWAY_MAX_STREAMS_PER_CLIENT": "100000",
    "LOGWAY_MAX_CONNECTIONS_PER_CLIENT": "0",
}


@contextlib.contextmanager
def running(name: str, command: list[str], port: int, log_path: Path) -> Iterator[Server]:
    with log_path.open("ab") as log:  # a file, never a pipe nobody reads: a full pipe blocks
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **GATEWAY_ENV},
        )
    server = Server(name, port, process)
    try:
        _wait_healthy(server)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def gateway(server_name: str, data_dir: Path, *extra: str) -> Iterator[Server]:
    port = _free_port()
    command = [str(LOGWAY), "serve", "--server", server_name, "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--log-level", "warning", *extra]
    log_path = data_dir.parent / f"{data_dir.name}-{server_name}.log"
    with running(f"logway serve --server {server_name}", command, port, log_path) as server:
        response = httpx.put(f"{server.url}/v1/topics/{TOPIC}", json={"partitions": 3})
        response.raise_for_status()
        yield server


@contextlib.contextmanager
def baseline(server_name: str, workdir: Path) -> Iterator[Server]:
    port = _free_port()
    command = [sys.executable, "-m", "bench.baseline_app", "--server", server_name]
    log_path = workdir / f"baseline-{server_name}.log"
    with running(
        f"baseline on {server_name}", [*command, "--port", str(port)], port, log_path
    ) as server:
        yield server


# -- wrk and h2load -------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests_per_s: float
    p99_ms: float | None  # wrk only; h2load prints no percentiles
    mean_ms: float | None
    command: str


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    return float(match[1]) * _UNITS_MS[match[2]]


def wrk(url: str, body_file: Path, connections: int, duration_s: int, workdir: Path) -> LoadResult:
    script = workdir / f"{body_file.stem}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()\n'
    )
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script)]
    command.append(url)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"99%\s+(\S+)", output)[1])  # type: ignore[index]
    mean = _ms(re.search(r"Latency\s+(\S+)", output)[1])  # type: ignore[index]
    return LoadResult(rate, p99, mean, " ".join(command))


def h2load(url: str, body_file: Path, clients: int, streams: int, duration_s: int) -> LoadResult:
    command = [
        "h2load", "-t1", f"-c{clients}", f"-m{streams}", f"-D{duration_s}", "--warm-up-time=1",
        "-d", str(body_file), "-H", "content-type: application/json", url,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", output)
    if done is None or done[1] != done[2] or " 0 2xx" in output:
        raise RuntimeError(f"h2load saw errors:\n{output}")
    rate = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", output)[1])  # type: ignore[index]
    mean = _ms(re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", output)[1])  # type: ignore[index]
    return LoadResult(rate, None, mean, " ".join(command))


# -- the client side of the SSE measurements (runs in its own process) ----------------------


async def _open_sse(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    writer.write(request.encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    return reader, writer


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


_WRITERS: list[asyncio.StreamWriter] = []  # kept alive: a collected writer closes its socket


async def _client_streams(port: int, count: int, path: str) -> list[asyncio.StreamReader]:
    """Open `count` SSE streams over HTTP/1.1 (one connection each), 500 at a time."""
    readers: list[asyncio.StreamReader] = []
    for start in range(0, count, 500):
        opened = await asyncio.gather(
            *(_open_sse(port, path) for _ in range(start, min(count, start + 500)))
        )
        readers += [reader for reader, _ in opened]
        _WRITERS.extend(writer for _, writer in opened)
    return readers


async def client_count(port: int, streams: int, expected: int, timeout_s: float) -> None:
    """Fan-out subscriber: count record events per stream until each has `expected`."""
    readers = await _client_streams(port, streams, f"/v1/topics/{TOPIC}/events?from=latest")
    first_ns: list[int] = []
    last_ns = 0

    async def count(reader: asyncio.StreamReader) -> int:
        nonlocal last_ns
        seen, tail = 0, b""
        while seen < expected:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            data = tail + chunk
            new = data.count(b"event: record\n") - tail.count(b"event: record\n")
            tail = data[-16:]
            if new:
                seen += new
                if not first_ns:
                    first_ns.append(time.monotonic_ns())
                last_ns = time.monotonic_ns()
        return seen

    _say({"ready": True})
    try:
        async with asyncio.timeout(timeout_s):
            counts = await asyncio.gather(*(count(reader) for reader in readers))
    except TimeoutError:
        counts = []
    events = sum(counts)
    _say({"events": events, "seconds": (last_ns - first_ns[0]) / 1e9 if first_ns else 0})


async def client_latency(port: int, records: int, timeout_s: float) -> None:
    """Latency subscriber: one SSE stream; each record's value carries its scheduled send time."""
    [reader] = await _client_streams(port, 1, f"/v1/topics/{TOPIC}/events?from=latest")
    _say({"ready": True})
    latencies_ns: list[int] = []
    scheduled_ns: list[int] = []
    buffer = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while len(latencies_ns) < records:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                now = time.monotonic_ns()
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    start = event.find(b"\ndata: ")
                    if b"event: record" in event and start >= 0:
                        line = event[start + 7 :].split(b"\n", 1)[0]
                        scheduled_ns.append(orjson.loads(line)["value"]["t"])
                        latencies_ns.append(now - scheduled_ns[-1])
    _say({"latencies_ns": latencies_ns, "scheduled_ns": scheduled_ns})


async def client_idle(port: int, streams: int) -> None:
    """Idle subscribers: hold `streams` SSE streams open until stdin closes."""
    readers = await _client_streams(port, streams, f"/v1/topics/{TOPIC}/events?from=latest")
    _say({"ready": True, "streams": len(readers)})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
    await reader.readexactly(length)


def _post_request(port: int, body: bytes) -> bytes:
    return (
        f"POST /v1/topics/{TOPIC}/records HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def producer_paced(port: int, rate: int, seconds: float, batch: int) -> None:
    """Produce `rate` records/s in requests of `batch` records, each value {"t": scheduled ns}."""
    connections = [await asyncio.open_connection(HOST, port) for _ in range(16)]
    schedule: asyncio.Queue[int] = asyncio.Queue()

    async def sender(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            scheduled_ns = await schedule.get()
            body = orjson.dumps({"records": [{"value": {"t": scheduled_ns}}] * batch})
            await _post(reader, writer, _post_request(port, body))
            schedule.task_done()

    senders = [asyncio.create_task(sender(r, w)) for r, w in connections]
    interval_ns = int(1e9 * batch / rate)
    start_ns = time.monotonic_ns()
    for index in range(int(seconds * rate / batch)):
        scheduled_ns = start_ns + index * interval_ns
        delay_ns = scheduled_ns - time.monotonic_ns()
        if delay_ns > 0:
            await asyncio.sleep(delay_ns / 1e9)
        schedule.put_nowait(scheduled_ns)
    joined = asyncio.create_task(schedule.join())
    await asyncio.wait([joined, *senders], return_when=asyncio.FIRST_COMPLETED)
    for task in senders:
        if task.done():
            task.result()  # a failed request ends the run with its error
        task.cancel()
    _say({"produced": int(seconds * rate / batch) * batch})


def _client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.http client", allow_abbrev=False)
    parser.add_argument("role", choices=["count", "latency", "idle", "produce"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--records", type=int, default=0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    _raise_nofile_limit()
    if args.role == "count":
        main = client_count(args.port, args.streams, args.records, args.timeout_s)
    elif args.role == "latency":
        main = client_latency(args.port, args.records, args.timeout_s)
    elif args.role == "idle":
        main = client_idle(args.port, args.streams)
    else:
        main = producer_paced(args.port, args.rate, args.seconds, args.batch)
    asyncio.run(main)


# -- orchestration --------------------------------------------------------------------------


def _raise_nofile_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Client:
    """`python -m bench.http client <role>` in its own process, talking JSON lines."""

    def __init__(self, role: str, port: int, **options: float) -> None:
        command = [sys.executable, "-m", "bench.http", "client", role, "--port", str(port)]
        for name, value in options.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def read(self, timeout_s: float = 120) -> dict[str, Any]:
        assert self.process.stdout is not None
        killer = threading.Timer(timeout_s, self.process.kill)  # a stuck client ends the run
        killer.start()
        try:
            line = self.process.stdout.readline()
        finally:
            killer.cancel()
        if not line:
            raise RuntimeError(f"client exited with {self.process.wait()}")
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Row:
    figure: str
    logway: str
    baseline: str
    ratio: str
    target: str


class Bench:
    def __init__(self, server_name: str, duration_s: int, workdir: Path) -> None:
        self.server_name = server_name
        self.duration_s = duration_s
        self.workdir = workdir
        self.single_body = workdir / "single.json"
        self.single_body.write_bytes(SINGLE_BODY)
        self.batch_body = workdir / "batch.json"
        self.batch_body.write_bytes(BATCH_BODY)
        self.orders_body = workdir / "orders.json"
        self.orders_body.write_bytes(ORDERS_BODY)
        self.rows: list[Row] = []
        self.commands: list[str] = []

    def _data_dir(self, name: str) -> Path:
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def _row(self, figure: str, ours: float, base: float | None, unit: str, target: str) -> None:
        ratio = f"{ours / base:.2f}" if base else "—"
        shown_base = f"{base:,.0f} {unit}" if base is not None else "—"
        self.rows.append(Row(figure, f"{ours:,.0f} {unit}", shown_base, ratio, target))
        print(f"  {figure}: {ours:,.0f} {unit} (baseline {shown_base}, ratio {ratio})", flush=True)

    def _load(self, url: str, body: Path, h2: bool, connections: int) -> LoadResult:
        if h2:
            result = h2load(
                url, body, clients=4, streams=max(1, connections // 4), duration_s=self.duration_s
            )
        else:
            result = wrk(url, body, connections, self.duration_s, self.workdir)
        self.commands.append(result.command)
        return result

    def compare(self) -> None:
        print("compare: the bare app on each server", flush=True)
        for name in SERVERS:
            with baseline(name, self.workdir) as server:
                url = f"{server.url}/v1/topics/{TOPIC}/records"
                h1 = self._load(url, self.single_body, h2=False, connections=32)
                h2 = self._load(url, self.single_body, h2=True, connections=32)
            self.rows.append(
                Row(
                    f"bare Starlette POST on {name}: HTTP/1.1 req/s (p99) · h2c req/s",
                    f"{h1.requests_per_s:,.0f} ({h1.p99_ms:.1f} ms) · {h2.requests_per_s:,.0f}",
                    "—",
                    "—",
                    "default = faster server that passes every e2e test",
                )
            )
            print(f"  {self.rows[-1].figure}: {self.rows[-1].logway}", flush=True)

    def produce(self) -> None:
        print(f"produce: single record, fsync always, {self.server_name}", flush=True)
        with baseline(self.server_name, self.workdir) as server:
            url = f"{server.url}/v1/topics/{TOPIC}/records"
            base_h1 = self._load(url, self.single_body, h2=False, connections=32)
            base_h2 = self._load(url, self.single_body, h2=True, connections=32)
        with gateway(self.server_name, self._data_dir("produce")) as server:
            url = f"{server.url}/v1/topics/{TOPIC}/records"
            ours_h1 = self._load(url, self.single_body, h2=False, connections=32)
            ours_h2 = self._load(url, self.single_body, h2=True, connections=32)
        target = ">= 0.85 x bare and ≥ 5,000 req/s"
        self._row(
            "single produce, HTTP/1.1 (wrk -c32)",
            ours_h1.requests_per_s,
            base_h1.requests_per_s,
            "req/s",
            target,
        )
        assert ours_h1.p99_ms is not None
        assert base_h1.p99_ms is not None
        self.rows.append(
            Row(
                "single produce p99, HTTP/1.1",
                f"{ours_h1.p99_ms:.1f} ms",
                f"{base_h1.p99_ms:.1f} ms",
                f"{ours_h1.p99_ms / base_h1.p99_ms:.2f}",
                "—",
            )
        )
        self._row(
            "single produce, h2c (h2load -c4 -m8)",
            ours_h2.requests_per_s,
            base_h2.requests_per_s,
            "req/s",
            target,
        )

    def batch(self) -> None:
        print(f"batch: 1,000 x 100 B records per request, {self.server_name}", flush=True)
        with baseline(self.server_name, self.workdir) as server:
            base = self._load(
                f"{server.url}/v1/topics/{TOPIC}/records", self.batch_body, h2=False, connections=4
            )
        with gateway(self.server_name, self._data_dir("batch")) as server:
            ours = self._load(
                f"{server.url}/v1/topics/{TOPIC}/records", self.batch_body, h2=False, connections=4
            )
        self._row(
            "batch produce (wrk -c4)",
            1000 * ours.requests_per_s,
            1000 * base.requests_per_s,
            "records/s",
            "≥ 0.8 x bare",
        )

    def latency(self) -> None:
        print(f"latency: produce -> SSE at 1,000 records/s, {self.server_name}", flush=True)
        seconds = 10
        with gateway(self.server_name, self._data_dir("latency")) as server:
            subscriber = Client(
                "latency", server.port, records=seconds * 1000, timeout_s=seconds + 30
            )
            subscriber.read()  # ready
            producer = Client("produce", server.port, rate=1000, seconds=seconds, batch=1)
            produced = producer.read()["produced"]
            producer.close()
            latencies = [ns / 1e6 for ns in subscriber.read()["latencies_ns"]]
            subscriber.close()
        self.commands.append(
            f"python -m bench.http client latency|produce --rate 1000 --seconds {seconds} --batch 1"
        )
        if len(latencies) < produced:
            print(f"  only {len(latencies)} of {produced} records arrived", flush=True)
        p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
        self.rows.append(
            Row(
                "produce→SSE latency p50 / p99 (1,000 rec/s, fsync always)",
                f"{p50:.1f} / {p99:.1f} ms",
                "—",
                "—",
                "p99 ≤ 10 ms",
            )
        )
        print(
            f"  {self.rows[-1].figure}: {self.rows[-1].logway} ({len(latencies)} samples)",
            flush=True,
        )

    def fanout(self) -> None:
        subscribers, records = 1000, 2000
        print(
            f"fanout: {subscribers} subscribers, {records} records, {self.server_name}", flush=True
        )
        with gateway(self.server_name, self._data_dir("fanout")) as server:
            counter = Client(
                "count", server.port, streams=subscribers, records=records, timeout_s=90
            )
            counter.read()  # ready
            producer = Client("produce", server.port, rate=1000, seconds=records / 1000, batch=100)
            producer.read()
            producer.close()
            result = counter.read()
            counter.close()
        self.commands.append(
            f"python -m bench.http client count --streams {subscribers} --records {records}; client produce --rate 1000 --batch 100"
        )
        rate = result["events"] / result["seconds"] if result["seconds"] else 0.0
        complete = result["events"] == subscribers * records
        self._row(
            f"SSE fan-out, {subscribers} subscribers{'' if complete else ' (INCOMPLETE)'}",
            rate,
            None,
            "events/s",
            "≥ 200,000 events/s",
        )

    def _rss_per_stream(self, server: Server, streams: int) -> tuple[float, int, int]:
        """KB of server RSS per idle SSE stream, after a warm-up of 100 streams."""
        warm = Client("idle", server.port, streams=100)
        warm.read()
        warm.close()
        time.sleep(1)
        before = server.rss_bytes()
        idle = Client("idle", server.port, streams=streams)
        idle.read()
        time.sleep(2)
        after = server.rss_bytes()
        idle.close()
        return (after - before) / streams / 1024, before, after

    def memory(self) -> None:
        print(f"memory: idle SSE streams, {self.server_name}", flush=True)
        for streams in (1000, 10_000):
            with gateway(self.server_name, self._data_dir("memory")) as server:
                ours, before, after = self._rss_per_stream(server, streams)
            with baseline(self.server_name, self.workdir) as server:
                base, _, _ = self._rss_per_stream(server, streams)
            self.rows.append(
                Row(
                    f"RSS per idle SSE stream at {streams:,}",
                    f"{ours:.1f} KB",
                    f"{base:.1f} KB",
                    f"{ours / base:.2f}",
                    "≤ 30 KB at 10,000",
                )
            )
            print(
                f"  {self.rows[-1].figure}: {ours:.1f} KB, bare {base:.1f} KB (gateway RSS {before / 2**20:.0f} → {after / 2**20:.0f} MiB)",
                flush=True,
            )
        self.commands.append(
            "python -m bench.http client idle --streams 1000|10000 (HTTP/1.1, one connection per stream)"
        )

    def schema(self) -> None:
        print(f"schema: 1,000 ten-property orders per request, {self.server_name}", flush=True)
        topics = {"plain": None, "checked": ORDER_SCHEMA, "checked-slow": SLOW_ORDER_SCHEMA}
        rates: dict[str, list[float]] = {topic: [] for topic in topics}
        with gateway(self.server_name, self._data_dir("schema")) as server:
            for topic, schema in topics.items():
                httpx.put(f"{server.url}/v1/topics/{topic}", json={"partitions": 3})
                if schema is not None:
                    registered = httpx.post(
                        f"{server.url}/v1/topics/{topic}/schemas", json={"schema": schema}
                    )
                    registered.raise_for_status()
            for _ in range(3):  # alternating, so the machine's noise falls on all three
                for topic in topics:
                    url = f"{server.url}/v1/topics/{topic}/records"
                    result = self._load(url, self.orders_body, h2=False, connections=4)
                    rates[topic].append(1000 * result.requests_per_s)
        base = rates["plain"]
        for topic, label, target in (
            ("plain", "no schema", "—"),
            ("checked", "10-property schema (msgspec fast path)", "≥ 0.8 x no schema"),
            ("checked-slow", "same schema + format (jsonschema_rs only)", "—"),
        ):
            ratios = [ours / plain for ours, plain in zip(rates[topic], base, strict=True)]
            self.rows.append(
                Row(
                    f"batch produce of orders, {label} (wrk -c4)",
                    f"{min(rates[topic]):,.0f}-{max(rates[topic]):,.0f} records/s",
                    f"{min(base):,.0f}-{max(base):,.0f}",
                    f"{min(ratios):.2f}-{max(ratios):.2f}",
                    target,
                )
            )
            print(f"  {self.rows[-1].figure}: {self.rows[-1].logway} ({self.rows[-1].ratio})")

    def report(self) -> str:
        lines = [
            f"server: {self.server_name}; {os.cpu_count()} cores; loopback; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            "",
            "| figure | logway | bare baseline | ratio | target |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.figure} | {r.logway} | {r.baseline} | {r.ratio} | {r.target} |"
            for r in self.rows
        ]
        lines += ["", "Load commands:", "", *(f"    {c}" for c in dict.fromkeys(self.commands))]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        _client_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.http",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server", choices=SERVERS, default=Settings().server)
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="comma-separated subset of " + ",".join(SECTIONS),
    )
    parser.add_argument("--duration-s", type=int, default=6, help="length of each wrk/h2load run")
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: apt-get install -y nghttp2-client wrk")
    _raise_nofile_limit()  # inherited by the servers
    with tempfile.TemporaryDirectory(prefix="logway-bench-") as workdir:
        print(f"server logs: {workdir}/*.log (kept until the run ends)", flush=True)
        bench = Bench(args.server, args.duration_s, Path(workdir))
        for section in SECTIONS:
            if section in sections:
                getattr(bench, section)()
        print()
        print(bench.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
