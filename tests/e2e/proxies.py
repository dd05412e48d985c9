"""Real reverse proxies — nginx, HAProxy, Caddy — run from the files in docs/deploy/.

`start_proxy(kind, ...)` writes the documented configuration with only the test's ports,
file paths and the `extra` replacements substituted (each replaced line must be in the
file, so a test breaks when a template drifts from what it proves), starts the proxy in
the foreground and waits until it listens. Every proxy serves HTTPS on 127.0.0.1 (HTTP/2
or HTTP/1.1 by ALPN) with the test certificate, and the API under /logway/. Proxies are
stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.conftest import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
PROXIES = ("nginx", "haproxy", "caddy")
PREFIX = "/logway"
START_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0  # a guard against hanging only; nothing asserts a duration


def executable(kind: str) -> str | None:
    """The proxy's binary (Debian packages nginx, haproxy, caddy), or None."""
    name = {"nginx": "nginx", "haproxy": "haproxy", "caddy": "caddy"}[kind]
    found = shutil.which(name)
    if found is None and Path(f"/usr/sbin/{name}").exists():
        found = f"/usr/sbin/{name}"
    return found


@dataclass(frozen=True)
class Listen:
    """Where the proxy listens: HTTPS always; cleartext HTTP/1.1 too when `plain` is set."""

    tls: int
    plain: int | None = None


@dataclass
class Proxy:
    kind: str
    url: str  # https://127.0.0.1:PORT/logway
    plain_url: str | None  # http://127.0.0.1:PORT/logway, when started with cleartext=True
    process: subprocess.Popen[bytes]
    directory: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def substitute(template: str, replacements: Sequence[tuple[str, str]], source: str) -> str:
    """`template` with each (old, new) replaced; every `old` must be in it."""
    config = template
    for old, new in replacements:
        assert old in config, f"docs/deploy/{source} no longer has {old!r}"
        config = config.replace(old, new)
    return config


def nginx_config(directory: Path, listen: Listen, upstream_ports: Sequence[int],
                 cert: tuple[Path, Path], extra: Mapping[str, str]) -> str:  # fmt: skip
    temp_paths = "".join(
        f"    {kind}_temp_path {directory / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    servers = "\n        ".join(
        f"server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports
    )
    config = substitute(
        (DEPLOY / "nginx.conf").read_text(),
        [
            ("worker_processes auto;", "worker_processes 1;"),
            ("error_log /var/log/nginx/logway-error.log warn;", f"error_log {directory}/error.log info;"),
            ("pid /run/nginx-logway.pid;", f"pid {directory}/nginx.pid;"),
            ("worker_connections 16384;", "worker_connections 512;"),
            ("access_log /var/log/nginx/logway-access.log;",
             f"access_log {directory}/access.log;\n{temp_paths}"),
            ("server 127.0.0.1:8080 max_fails=1 fail_timeout=2s;", servers),
            ("listen 443 ssl http2;", f"listen 127.0.0.1:{listen.tls} ssl http2;"
             + (f"\n        listen 127.0.0.1:{listen.plain};" if listen.plain else "")),
            ("ssl_certificate /etc/ssl/logway/cert.pem;", f"ssl_certificate {cert[0]};"),
            ("ssl_certificate_key /etc/ssl/logway/key.pem;", f"ssl_certificate_key {cert[1]};"),
            *extra.items(),
        ],
        "nginx.conf",
    )  # fmt: skip
    if os.geteuid() == 0:  # workers would run as nobody, who cannot read the test's files
        config = "user root;\n" + config
    return config


def haproxy_config(directory: Path, listen: Listen, upstream_ports: Sequence[int],
                   cert: tuple[Path, Path], extra: Mapping[str, str]) -> str:  # fmt: skip
    pem = directory / "logway.pem"  # HAProxy wants the certificate and its key in one file
    pem.write_text(cert[0].read_text() + cert[1].read_text())
    names = [f"gateway{i + 1}" for i in range(len(upstream_ports))]
    servers = "".join(
        f"    server {n} 127.0.0.1:{p}\n" for n, p in zip(names, upstream_ports, strict=True)
    )
    tracked = "".join(
        f"    server {n} 127.0.0.1:{p} track logway/{n}\n"
        for n, p in zip(names, upstream_ports, strict=True)
    )
    return substitute(
        (DEPLOY / "haproxy.cfg").read_text(),
        [
            ("    log /dev/log local0\n", "    log stderr format raw local0\n"),
            ("    user haproxy\n", ""),
            ("    group haproxy\n", ""),
            ("maxconn 100000", "maxconn 1000"),  # within the test machine's file limit
            ("bind :443 ssl crt /etc/ssl/logway/logway.pem alpn h2,http/1.1\n",
             f"bind 127.0.0.1:{listen.tls} ssl crt {pem} alpn h2,http/1.1\n"
             + (f"    bind 127.0.0.1:{listen.plain}\n" if listen.plain else "")),
            ("    server gateway1 127.0.0.1:8080\n", servers),
            ("    server gateway1 127.0.0.1:8080 track logway/gateway1\n", tracked),
            ("/etc/haproxy/errors/logway-event-stream-retry.http",
             str(DEPLOY / "haproxy-event-stream-retry.http")),
            *extra.items(),
        ],
        "haproxy.cfg",
    )  # fmt: skip


def caddy_config(directory: Path, listen: Listen, upstream_ports: Sequence[int],
                 cert: tuple[Path, Path], extra: Mapping[str, str]) -> str:  # fmt: skip
    upstreams = " ".join(f"127.0.0.1:{p}" for p in upstream_ports)
    return substitute(
        (DEPLOY / "Caddyfile").read_text(),
        [
            # no admin endpoint (a fixed port), no HTTP->HTTPS redirect server on port 80,
            # no HTTP/3 (UDP) listener: only the one TCP port the test chose
            ("\tadmin localhost:2019\n",
             "\tadmin off\n\tauto_https disable_redirects\n\tservers {\n\t\tprotocols h1 h2\n\t}\n"),
            ("logway.example.com {",
             (f"http://127.0.0.1:{listen.plain} {{\n\timport logway\n}}\n\n" if listen.plain else "")
             + f"https://127.0.0.1:{listen.tls} {{"),
            ("tls /etc/ssl/logway/cert.pem /etc/ssl/logway/key.pem", f"tls {cert[0]} {cert[1]}"),
            ("to 127.0.0.1:8080", f"to {upstreams}"),
            *extra.items(),
        ],
        "Caddyfile",
    )  # fmt: skip


_CONFIGS = {"nginx": nginx_config, "haproxy": haproxy_config, "caddy": caddy_config}
_FILES = {"nginx": "nginx.conf", "haproxy": "haproxy.cfg", "caddy": "Caddyfile"}


def _command(kind: str, binary: str, directory: Path, config: Path, log: Path) -> list[str]:
    if kind == "nginx":
        return [binary, "-e", str(log), "-p", str(directory), "-c", str(config),
                "-g", "daemon off;"]  # fmt: skip
    if kind == "haproxy":
        return [binary, "-db", "-f", str(config)]
    return [binary, "run", "--config", str(config), "--adapter", "caddyfile"]


def start_proxy(kind: str, directory: Path, upstream_ports: Sequence[int],
                cert: tuple[Path, Path], extra: Mapping[str, str] | None = None,
                cleartext: bool = False) -> Proxy:  # fmt: skip
    """The proxy `kind` from its docs/deploy file, in front of the gateways on `upstream_ports`;
    with `cleartext`, also on a cleartext HTTP/1.1 port (as behind a TLS-terminating balancer)."""
    binary = executable(kind)
    assert binary is not None, f"{kind} is not installed"
    directory.mkdir(parents=True, exist_ok=True)
    listen = Listen(free_port(), free_port() if cleartext else None)
    config_path = directory / _FILES[kind]
    config_path.write_text(_CONFIGS[kind](directory, listen, upstream_ports, cert, extra or {}))
    log_path = directory / "proxy.log"
    # Caddy keeps its state under the XDG directories: the test's own, not the user's.
    env = {**os.environ, "XDG_DATA_HOME": str(directory), "XDG_CONFIG_HOME": str(directory)}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            _command(kind, binary, directory, config_path, directory / "early.log"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    plain_url = f"http://127.0.0.1:{listen.plain}{PREFIX}" if listen.plain else None
    proxy = Proxy(
        kind, f"https://127.0.0.1:{listen.tls}{PREFIX}", plain_url, process, directory, log_path
    )
    try:
        for port in (listen.tls, listen.plain):
            if port is not None:
                _wait_listening(proxy, port)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def _wait_listening(proxy: Proxy, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            early = proxy.directory / "early.log"
            text = proxy.log() + (early.read_text() if early.exists() else "")
            raise AssertionError(f"{proxy.kind} exited with {proxy.process.returncode}:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{proxy.kind} is not listening after {START_TIMEOUT_S} s:\n{proxy.log()}")


async def assert_idle_stream_outlives(client: httpx.AsyncClient, quiet_s: float) -> None:
    """An SSE stream of a new topic, read for `quiet_s` with nothing but heartbeats, then
    still open: a record produced now arrives on it (the proxy's timeouts cut nothing)."""
    created = await client.put("/v1/topics/quiet", json={"partitions": 1})
    assert created.status_code == 201, created.text
    headers = {"Accept": "text/event-stream"}
    async with client.stream("GET", "/v1/topics/quiet/events", headers=headers) as stream:
        assert stream.status_code == 200
        lines = stream.aiter_lines()
        pings = 0
        loop = asyncio.get_running_loop()
        until = loop.time() + quiet_s
        while loop.time() < until:
            async with asyncio.timeout(READ_TIMEOUT_S):
                pings += (await anext(lines)).startswith(": ping")
        assert pings >= 2
        produced = await client.post("/v1/topics/quiet/records", json={"records": [{"value": 8}]})
        assert produced.status_code == 200, produced.text
        async with asyncio.timeout(READ_TIMEOUT_S):
            async for line in lines:
                if line.startswith("data: "):
                    assert json.loads(line[6:])["value"] == 8
                    return
    raise AssertionError("the stream ended before the record arrived")
