"""CPU cost of whole produce requests through the real app, as instruction counts (callgrind).

bench/instructions.py counts the parse and the render alone with the cyclic GC off; this
counts what a request costs the process: the app built as `logway serve` builds it (its
lifespan opens a log with `fsync always` in a temp dir on the disk), the ASGI call from
routing to the answer, the writer thread's encode and write, and the GC as the process
runs it. Each case starts the app in a fresh interpreter under valgrind with instrumentation
off, makes one request (first-call costs), then `callgrind_control -i on`, `count`
requests, `-i off`: the instructions counted (every thread's) divided by `count` are
reported, with startup and imports not counted at all; `PYTHONHASHSEED=0`. The GC modes:

- `default`: CPython's thresholds, nothing frozen;
- `served`: what gateway/server.py does before the app starts (`tune_for_serving`);
- `started`: that, and `gc.freeze()` again once the lifespan has run (the log opened);
- `off`: no cyclic GC (bench/instructions.py's condition).

    .venv/bin/python -m bench.requests                      # every case, every mode
    .venv/bin/python -m bench.requests --cases batch --modes served,started --calls 40
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from subprocess import PIPE

from starlette.types import ASGIApp as App
from starlette.types import Message

from bench.bodies import BATCH_BODY, ORDERS_BODY, SINGLE_BODY
from bench.instructions import collected

ROOT = Path(__file__).resolve().parent.parent
BODIES = {"single": SINGLE_BODY, "batch": BATCH_BODY, "orders": ORDERS_BODY}
APPS = ("gateway", "bare")
MODES = ("default", "served", "started", "off")
TOPIC = "bench"


async def _call(app: App, method: str, path: str, body: bytes) -> int:
    """One HTTP request through the ASGI app, as a server would make it; its status."""
    scope: Message = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
        "headers": [
            (b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected
        raise AssertionError

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _serve(which: str, case: str, calls: int, mode: str) -> None:
    from gateway.process import tune_for_serving
    from gateway.server import Lifespan

    if mode == "off":
        gc.disable()
    elif mode in ("served", "started"):
        tune_for_serving()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", ".")) as data:
        app = _app(which, Path(data))
        lifespan = Lifespan(app)
        await lifespan.startup()
        if which == "gateway":
            await _call(app, "PUT", f"/v1/topics/{TOPIC}", b'{"partitions": 3}')
        if mode == "started":
            gc.freeze()
        path, body = f"/v1/topics/{TOPIC}/records", BODIES[case]
        if await _call(app, "POST", path, body) != 200:  # first-call costs, in both runs
            raise RuntimeError(f"{which} refused {case}")
        print("ready", flush=True)
        sys.stdin.readline()  # instrumentation is being turned on
        for _ in range(calls):
            await _call(app, "POST", path, body)
        print("done", flush=True)
        sys.stdin.readline()  # and off
        await lifespan.shutdown()


def _app(which: str, data: Path) -> App:
    if which == "bare":
        from bench.baseline_app import create_baseline_app

        return create_baseline_app()
    from gateway.app import create_app
    from gateway.settings import Settings
    from storage.types import Durability, DurabilityPolicy

    return create_app(Settings(data_dir=data, durability=DurabilityPolicy(Durability.ALWAYS)))


def _count(which: str, case: str, calls: int, mode: str) -> int:
    """Instructions of `calls` requests, counted only between the two `callgrind_control`s."""
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", *os.environ.get("CALLGRIND_ARGS", "").split(), f"--callgrind-out-file={os.environ.get('CALLGRIND_OUT', '/dev/null')}"]  # fmt: skip
    command += [sys.executable, "-m", "bench.requests", "run", which, case, str(calls), mode]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=PIPE, stdout=PIPE, stderr=PIPE, text=True
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        for switch in ("on", "off"):
            if child.stdout.readline().strip() not in ("ready", "done"):
                break
            subprocess.run(["callgrind_control", "-i", switch, str(child.pid)], capture_output=True, check=True)  # fmt: skip
            child.stdin.write("\n")
            child.stdin.flush()
        return collected(child.communicate()[1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        asyncio.run(_serve(argv[1], argv[2], int(argv[3]), argv[4]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.requests", description=__doc__)
    parser.add_argument("--calls", type=int, default=0, help="requests per count (0: per case)")
    parser.add_argument("--cases", default=",".join(BODIES))
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    for case in args.cases.split(","):
        calls = args.calls or (400 if case == "single" else 30)
        for which in args.apps.split(","):
            for mode in args.modes.split(","):
                per_request = _count(which, case, calls, mode) / calls
                print(
                    f"{case} {which} {mode}: {per_request:,.0f} instructions per request",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
