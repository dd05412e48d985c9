"""What the transport defences of issue 18 cost (gateway/connections.py, the auth-failure limit).

    .venv/bin/python -m bench.security                    # every section, about 6 minutes
    .venv/bin/python -m bench.security --sections guard --connections 1000,10000

- guard: the connection guard's scan over N idle connections accepted by this process on
  loopback (the same code, sockets and kernel counters as in `logway serve`): time per
  scan, median of `--repeat` scans, and the share of one core it takes at its period
  (`max(1 s, 20 x the scan)`). The baseline is the same scan over the process with no
  connection open (its fixed cost: listing /proc/self/fd). Nothing of it runs on a
  request's path.
- hpack: the gateway's RSS growth under 1,000 SSE requests over h2c (100 per connection),
  held open, on each server: without extra headers (the baseline), with a 4 KB header
  referenced 15 times through the HPACK dynamic table (60 KB decoded: under the 64 KiB
  cap, the most a request may hold), and 4,000 times (the bomb: refused).
- auth: instructions per produce request (single record, in-process through the ASGI app,
  auth on with an API key) with the auth-failure limiter and without it
  (`auth_failure_limit_per_s = 0`), counted by callgrind as the difference between runs of
  `--requests` and 0 requests, so start-up cancels out. Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.http import TOPIC as BENCH_TOPIC
from bench.http import gateway as http_gateway
from gateway.app import create_app
from gateway.connections import ConnectionGuard
from gateway.server import SERVERS
from gateway.settings import Settings
from storage.types import Durability, DurabilityPolicy
from tests.security.transport import RawH2

BOMB = b"x" * 4000  # with its name, fits HPACK's default 4,096-byte dynamic table

SECTIONS = ("guard", "hpack", "auth")
API_KEY = "lw_bench_0123456789abcdef"
BODY = b'{"records":[{"key":"order-1","value":{"id":1,"sku":"widget","price":9.99}}]}'


# -- guard ------------------------------------------------------------------------------------


def _scan_ms(guard: ConnectionGuard, repeat: int) -> tuple[float, int]:
    """Median busy time of a scan, in ms, and the connections it saw."""
    times, seen = [], 0
    for _ in range(repeat):
        result = asyncio.run(guard.scan())
        times.append(result.busy_s * 1000)
        seen = result.connections
    return statistics.median(times), seen


_CLIENT = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
for s in socks:
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: bench.example\\r\\n\\r\\n")
print("ready", flush=True)
sys.stdin.read()
"""


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def guard(counts: list[int], repeat: int) -> list[str]:
    """The clients are another process, as in production: only accepted sockets are here."""
    _raise_fd_limit(max(counts) + 100)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    scanner = ConnectionGuard(Settings(port=port, max_connections_per_client=0), socket.AF_INET)
    baseline_ms, _ = _scan_ms(scanner, repeat)
    rows = [f"| no connection (baseline) | {baseline_ms:.2f} ms | — |"]
    print(rows[-1], flush=True)
    for count in counts:
        client = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, str(port), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: _raise_fd_limit(count + 100),  # noqa: B023 (called at once)
        )
        accepted = [listener.accept()[0] for _ in range(count)]
        try:
            assert client.stdout is not None
            assert client.stdout.readline() == "ready\n"
            for sock in accepted:
                sock.recv(4096)  # what a server does with a request: read it
                sock.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            scan_ms, seen = _scan_ms(scanner, repeat)
            assert seen == count, (seen, count)
        finally:
            for sock in accepted:
                sock.close()
            client.communicate("")
        period_s = max(1.0, scan_ms / 1000 / 0.05)
        rows.append(
            f"| {count:,} idle connections | {scan_ms:.1f} ms ({scan_ms * 1000 / count:.1f} µs "
            f"each) | {scan_ms / 1000 / period_s:.1%} of a core (period {period_s:.1f} s) |"
        )
        print(rows[-1], flush=True)
    listener.close()
    return ["| guard scan over | time per scan (median) | cost |", "| --- | --- | --- |", *rows]


# -- hpack ------------------------------------------------------------------------------------

HPACK_CASES = (  # (label, x-bomb references per request)
    ("no extra header (baseline)", 0),
    ("15 x 4 KB header: 60 KB decoded, under the cap", 15),
    ("4,000 x 4 KB header: 16 MB decoded (the bomb)", 4000),
)


def _held_requests(port: int, refs: int, requests: int) -> Counter[str]:
    """`requests` SSE requests, 100 per HTTP/2 connection (the stream limit), kept open;
    a connection the server ends is replaced. What the server answered."""
    outcomes: Counter[str] = Counter()
    connections: list[RawH2] = []
    sent = 0
    try:
        while sent < requests:
            connection = RawH2.connect(port)
            connections.append(connection)
            for _ in range(100):
                if sent == requests or connection.closed:
                    break
                connection.request(f"/v1/topics/{BENCH_TOPIC}/events", [], BOMB, refs)
                sent += 1
                connection.pump(0.001)
        for _ in range(40):  # let the server catch up before RSS is read
            for connection in connections:
                connection.pump(0.01)
        for connection in connections:
            outcomes += connection.outcomes
    finally:
        for connection in connections:
            connection.close()
    return outcomes


def hpack(requests: int, workdir: Path) -> list[str]:
    """RSS growth of `logway serve` under `requests` held HTTP/2 requests of each kind."""
    rows = []
    for server_name in SERVERS:
        for label, refs in HPACK_CASES:
            with http_gateway(server_name, workdir / f"hpack-{server_name}-{refs}") as server:
                before = server.rss_bytes()
                outcomes = _held_requests(server.port, refs, requests)
                after = server.rss_bytes()
            grown_mib = (after - before) / 2**20
            rows.append(
                f"| {server_name} | {label} | +{grown_mib:.0f} MiB "
                f"({(after - before) / requests / 1024:.1f} KiB per request) | "
                + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
                + " |"
            )
            print(rows[-1], flush=True)
    return [
        f"| server | {requests:,} SSE requests over h2c, held open | gateway RSS | answers |",
        "| --- | --- | --- | --- |",
        *rows,
    ]


# -- auth -------------------------------------------------------------------------------------


async def _produce(requests: int, limiter: bool, workdir: Path) -> None:
    keys = workdir / "keys.toml"
    keys.write_text(
        f'[keys.bench]\nsha256 = "{hashlib.sha256(API_KEY.encode()).hexdigest()}"\n'
        'permissions = ["admin:topic:*"]\n'
    )
    settings = Settings(
        data_dir=workdir / f"data-{limiter}-{requests}",
        durability=DurabilityPolicy(Durability.NEVER),
        auth_api_keys_file=keys,
        auth_failure_limit_per_s=Settings().auth_failure_limit_per_s if limiter else 0.0,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app)
    headers = {"X-API-Key": API_KEY, "content-type": "application/json"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as c,
    ):
        assert (await c.put("/v1/topics/t", json={"partitions": 1})).status_code == 201
        for _ in range(requests):
            response = await c.post("/v1/topics/t/records", content=BODY)
            assert response.status_code == 200, response.text


def _instructions(requests: int, limiter: bool) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "bench.security", "auth-run",
        "--requests", str(requests), "--limiter", "on" if limiter else "off",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    match = re.search(r"Collected\s*:\s*(\d+)", result.stderr)
    assert match is not None, result.stderr[-2000:]
    return int(match.group(1))


def auth(requests: int) -> list[str]:
    per_request = {}
    for limiter in (False, True):
        empty = _instructions(0, limiter)
        full = _instructions(requests, limiter)
        per_request[limiter] = (full - empty) / requests
        print(
            f"  limiter {'on' if limiter else 'off'}: {per_request[limiter]:,.0f} instructions/request",
            flush=True,
        )
    ratio = per_request[True] / per_request[False]
    return [
        "| produce, auth on (API key) | instructions per request | ratio |",
        "| --- | --- | --- |",
        f"| auth-failure limiter off (baseline) | {per_request[False]:,.0f} | 1.00 |",
        f"| auth-failure limiter on (default) | {per_request[True]:,.0f} | {ratio:.3f} |",
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["auth-run"]:
        run = argparse.ArgumentParser(prog="python -m bench.security auth-run")
        run.add_argument("--requests", type=int, required=True)
        run.add_argument("--limiter", choices=("on", "off"), required=True)
        args = run.parse_args(argv[1:])
        with tempfile.TemporaryDirectory() as workdir:
            asyncio.run(_produce(args.requests, args.limiter == "on", Path(workdir)))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.security",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--connections", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    lines = [f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    for section in args.sections.split(","):
        if section == "guard":
            lines += guard([int(n) for n in args.connections.split(",")], args.repeat)
        elif section == "hpack":
            with tempfile.TemporaryDirectory() as workdir:
                lines += hpack(1000, Path(workdir))
        elif section == "auth":
            lines += auth(args.requests)
        else:
            parser.error(f"unknown section {section!r}; expected some of {SECTIONS}")
        lines.append("")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
