"""A real `logway serve` for the story: free loopback port, temporary data dir, stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 5.0


def free_port() -> int:
    """A port the OS just handed out on 127.0.0.1 (closed again, so a server can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def logway_command() -> list[str]:
    """The `logway` console script next to this interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "logway"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("logway")
    if found is None:
        raise RuntimeError("the logway command is not installed: pip install -e .")
    return [found]


@dataclass(frozen=True, slots=True)
class RunningGateway:
    url: str
    pid: int
    data_dir: Path
    log_path: Path


@contextlib.asynccontextmanager
async def running_gateway(*extra_args: str) -> AsyncIterator[RunningGateway]:
    """Start `logway serve`, wait for /healthz, and stop it (SIGTERM, then SIGKILL) at the end."""
    with tempfile.TemporaryDirectory(prefix="logway-ecommerce-") as tmp:
        data_dir, log_path = Path(tmp) / "data", Path(tmp) / "gateway.log"
        port = free_port()
        command = [
            *logway_command(),
            "serve",
            "--port", str(port),
            "--data-dir", str(data_dir),
            "--shutdown-timeout-s", str(SHUTDOWN_TIMEOUT_S),
            *extra_args,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=log, stderr=subprocess.STDOUT
            )
        gateway = RunningGateway(f"http://127.0.0.1:{port}", process.pid, data_dir, log_path)
        try:
            await _wait_healthy(gateway, process)
            yield gateway
        finally:
            await _stop(process)


async def _wait_healthy(gateway: RunningGateway, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(
                    f"logway serve exited with {process.returncode}:\n"
                    + gateway.log_path.read_text(errors="replace")
                )
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{gateway.url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"logway serve not healthy after {STARTUP_TIMEOUT_S} s")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), SHUTDOWN_TIMEOUT_S + 5)
    except TimeoutError:
        process.kill()
        await process.wait()
