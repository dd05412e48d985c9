"""Running the JS client's node and browser scripts against real gateways, from pytest.

A node script gets the gateway's URL in `LOGWAY_URL`. To restart that gateway in the middle
of a test it POSTs to `LOGWAY_CONTROL_URL` + `/restart` (`?kill=1` for kill -9, else
SIGTERM): a small HTTP server in the pytest process stops the gateway and starts a new one
on the same data dir, and answers once the new gateway is healthy. A new gateway listens on
a new port, so `LOGWAY_URL` is a `Relay`: a TCP relay on a port of its own that forwards each
connection to the current gateway (TLS passes through it untouched), so the URL, and a
page's origin, stay valid across restarts. `/stop` and `/start` do the two halves, for a test
that acts while the gateway is down. Nothing else crosses between the two processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import Gateway, GatewayFactory

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "clients" / "js"
NODE_MODULES = JS_DIR / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")


def missing_tool(reason: str) -> NoReturn:
    """Skip on a developer machine without the tool; fail in CI (CI=true), which must have it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide this: {reason}", pytrace=False)
    pytest.skip(reason)


def node_or_skip() -> str:
    """The node executable (Node.js >= 20)."""
    node = shutil.which("node")
    if node is None:
        missing_tool("node (Node.js >= 20) is not installed")
    return node


def node_modules_or_skip(*packages: str) -> None:
    """The devDependencies of clients/js that a test needs."""
    missing = [p for p in packages if not (NODE_MODULES / p / "package.json").exists()]
    if missing:
        missing_tool(f"{', '.join(missing)} not installed: run `npm ci --prefix clients/js`")


def chromium_or_skip() -> None:
    if not CHROMIUM.exists():
        missing_tool(f"{CHROMIUM} is missing: apt-get install chromium")


@dataclass
class Restartable:
    """The current gateway of a test, restarted on its own port on request."""

    start_gateway: GatewayFactory
    gateway: Gateway
    extra_args: tuple[str, ...]
    tls: tuple[Path, Path] | None
    restarts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    relay: Relay | None = None

    def stop(self, kill: bool) -> None:
        with self.lock:
            if kill:
                self.gateway.kill()
            else:
                self.gateway.terminate()

    def start(self) -> None:
        with self.lock:
            if self.gateway.process.poll() is None:
                raise RuntimeError("the gateway is running: stop it first")
            self.gateway = self.start_gateway(
                *self.extra_args, data_dir=self.gateway.data_dir, tls=self.tls
            )
            if self.relay is not None:
                self.relay.target_port = gateway_port(self.gateway)
            self.restarts += 1

    def restart(self, kill: bool) -> None:
        self.stop(kill)
        self.start()


def gateway_port(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


class Relay:
    """A TCP relay on 127.0.0.1 in a thread of its own: a stable address in front of
    gateways that come and go. A connection made while the gateway is down is closed."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            up_writer = None
        try:
            if up_writer is not None:
                pipes = [
                    asyncio.create_task(_pipe(reader, up_writer)),
                    asyncio.create_task(_pipe(up_reader, writer)),
                ]
                try:
                    await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for pipe in pipes:
                        pipe.cancel()
                    await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(OSError):
                        await w.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@contextmanager
def relayed(target: Restartable) -> Iterator[str]:
    """A relay in front of `target`'s gateways; yields the URL clients should use."""
    relay = Relay(gateway_port(target.gateway))
    relay.start()
    target.relay = relay
    try:
        scheme = target.gateway.url.split(":", 1)[0]
        yield f"{scheme}://127.0.0.1:{relay.port}"
    finally:
        target.relay = None
        relay.close()


@contextmanager
def control_server(target: Restartable) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 whose `POST /restart` restarts `target`; yields its URL."""

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            url = urlsplit(self.path)
            kill = parse_qs(url.query).get("kill") == ["1"]
            actions = {
                "/restart": lambda: target.restart(kill),
                "/stop": lambda: target.stop(kill),
                "/start": target.start,
            }
            action = actions.get(url.path)
            if action is None:
                self.send_error(404)
                return
            try:
                action()
            except Exception as exc:  # the node side fails its test with this text
                self.answer(500, f"{url.path} failed: {exc}")
                return
            self.answer(200, "done")

    with http_server(Handler) as url:
        yield url


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler for test servers: one-call answers, no log lines on stderr."""

    def answer(self, status: int, text: str, content_type: str = "text/plain") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served from a thread on a free port of 127.0.0.1; yields the server's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def run_node(
    args: Sequence[str], env: dict[str, str], timeout_s: float, cwd: Path = JS_DIR
) -> subprocess.CompletedProcess[str]:
    """Run node with `args`; output is returned (stdout and stderr merged) for the assertion."""
    node = node_or_skip()
    try:
        return subprocess.run(
            [node, *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        raise AssertionError(f"node {' '.join(args)} ran past {timeout_s} s:\n{output}") from None


def assert_passed(result: subprocess.CompletedProcess[str], what: str) -> None:
    """Fail with node's whole output unless it exited 0; print it either way (pytest -rP)."""
    print(result.stdout)
    assert result.returncode == 0, f"{what} exited {result.returncode}:\n{result.stdout}"
