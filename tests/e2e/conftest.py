"""Real `logway serve` processes for the end-to-end tests, on both HTTP servers.

`start_gateway(...)` runs the installed console script on 127.0.0.1 with a free port and
a temporary data dir, waits for /healthz and returns a `Gateway`; teardown stops every
gateway it started by PID (SIGTERM, then SIGKILL). The `server` fixture parametrizes
every test that uses it over Granian and Hypercorn.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:  # the module imports this one (through js_harness)
    from tests.e2e.eventsource import EventSourceClient


LOGWAY = Path(sys.executable).parent / "logway"
SERVERS = ("granian", "hypercorn")
STARTUP_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 5.0  # passed to every gateway as --shutdown-timeout-s


def free_port() -> int:
    """A port the OS just handed out on 127.0.0.1 (closed again, so the gateway can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Gateway:
    """One running `logway serve` process."""

    server: str
    url: str
    data_dir: Path
    args: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log_path: Path
    tls_ca: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx needs to trust this gateway (its self-signed certificate, if any)."""
        if self.tls_ca is None:
            return True
        return ssl.create_default_context(cafile=str(self.tls_ca))

    def terminate(self, timeout_s: float = SHUTDOWN_TIMEOUT_S + 10) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it never comes)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"gateway ignored SIGTERM for {timeout_s} s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        """kill -9: no handler runs, no buffer is flushed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


GatewayFactory = Callable[..., Gateway]


@dataclass
class _Started:
    gateways: list[Gateway] = field(default_factory=list)


def _wait_healthy(gateway: Gateway) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(verify=gateway.verify(), timeout=2.0) as client:
        while time.monotonic() < deadline:
            if gateway.process.poll() is not None:
                raise AssertionError(
                    f"logway serve exited with {gateway.process.returncode}:\n{gateway.log()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{gateway.url}/healthz").status_code == 200:
                    return
            time.sleep(0.05)
    raise AssertionError(f"logway serve not healthy after {STARTUP_TIMEOUT_S} s:\n{gateway.log()}")


def _limit_fds(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    """The HTTP server under test; every real-server test runs once per server."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for 127.0.0.1 and localhost, made by openssl."""
    directory = tmp_path_factory.mktemp("tls")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(keyfile), "-out", str(certfile), "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return certfile, keyfile


@pytest.fixture
def start_gateway(server: str, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Factory of running gateways; call it again with the same data_dir (and port, for
    a proxy that knows the old one) to restart."""
    pytest.importorskip("gateway.app", reason="the app (gateway/app.py) has not landed yet")
    started = _Started()

    def start(
        *extra_args: str,
        data_dir: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        port: int | None = None,
        fd_limit: int | None = None,
    ) -> Gateway:
        """`fd_limit`: the gateway's RLIMIT_NOFILE, soft and hard (it may not raise it)."""
        port = port or free_port()
        data_dir = data_dir or tmp_path / "data"
        args = [
            "serve",
            "--server", server,
            "--port", str(port),
            "--data-dir", str(data_dir),
            "--shutdown-timeout-s", str(SHUTDOWN_TIMEOUT_S),
        ]  # fmt: skip
        scheme = "http"
        if tls is not None:
            args += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
            scheme = "https"
        args += extra_args
        log_path = tmp_path / f"gateway-{len(started.gateways)}-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(LOGWAY), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=None if fd_limit is None else functools.partial(_limit_fds, fd_limit),
            )
        gateway = Gateway(
            server=server,
            url=f"{scheme}://127.0.0.1:{port}",
            data_dir=data_dir,
            args=tuple(args),
            process=process,
            log_path=log_path,
            tls_ca=tls[0] if tls is not None else None,
        )
        started.gateways.append(gateway)
        _wait_healthy(gateway)
        return gateway

    yield start
    for gateway in started.gateways:
        if gateway.process.poll() is None:
            gateway.process.send_signal(signal.SIGTERM)
            try:
                gateway.process.wait(SHUTDOWN_TIMEOUT_S + 5)
            except subprocess.TimeoutExpired:
                gateway.kill()


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> Gateway:
    """One cleartext gateway that auto-creates topics."""
    return start_gateway("--auto-create-topics")


# -- clients --------------------------------------------------------------------------------


def create_topic(client: httpx.Client, topic: str, partitions: int) -> None:
    response = client.put(f"/v1/topics/{topic}", json={"partitions": partitions})
    assert response.status_code in (200, 201), response.text


def pull_all(client: httpx.Client, topic: str, partition: int) -> list[dict[str, Any]]:
    """Every record of one partition, by repeated pulls from offset 0."""
    records: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = client.get(
            f"/v1/topics/{topic}/partitions/{partition}/records",
            params={"offset": offset, "max_records": 1000},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        records += body["records"]
        offset = body["next_offset"]
        if offset >= body["end_offset"]:
            return records


@dataclass
class SseEvent:
    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse a text/event-stream body by hand (what a raw client or EventSource does)."""
    event, event_id = "message", None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(event, event_id, "\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


@pytest.fixture
def eventsources() -> Iterator[list[EventSourceClient]]:
    """Every EventSource a test starts, stopped at its end."""
    started: list[EventSourceClient] = []
    yield started
    for client in started:
        client.close()
