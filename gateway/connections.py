"""What a TCP connection may cost `logway serve`: descriptors kept for the log, connections
that never ask for anything, and how many one client address may hold.

Neither server closes every connection that sends no request (measured, Granian 2.8 and
Hypercorn 0.18, `tests/security/test_transport_connections.py`):

- Granian (hyper) closes an HTTP/1.1 connection whose head is still incomplete after
  `header_read_timeout`, also between keep-alive requests; but with `http=auto` it first
  waits for 24 bytes to tell the HTTP/2 preface from HTTP/1.1, with no timeout, so a
  connection that sends nothing (or "P", or half the preface) is held forever, and so is
  an HTTP/2 connection that never opens a stream or has none open any more.
- Hypercorn closes an HTTP/1.1 connection after `keep_alive_timeout` without a request,
  but holds HTTP/2 connections with no stream open forever.

Neither caps connections per client address, and only Granian caps them in total (its
`backpressure` is a semaphore held by each connection: beyond it, new connections wait in
the kernel's listen backlog and take no descriptor). So, around the servers:

- At start, the soft RLIMIT_NOFILE is raised to the hard one, and what is left after the
  log's open files and `reserved_fds` is the connection budget: Granian's backpressure,
  and for Hypercorn the descriptor number above which `GuardedListener` resets a new
  connection at once (Linux hands out the lowest free descriptor, so one at or above the
  ceiling means every one below it is taken). Connections then never take the
  descriptors the log needs to open a new segment.
- `ConnectionGuard`, a task on the server's loop, reads the kernel's counters of this
  process's accepted sockets (TCP_INFO) every second or so and shuts down (shutdown(2):
  the server reads an end of stream and cleans up as for a client that left):
  1. a connection that has received fewer bytes than any request has (24, the HTTP/2
     preface; an HTTP/1.1 request with its Host header is longer) for
     `request_head_timeout_s`;
  2. one with no data in either direction for `connection_idle_timeout_s` (streams send
     heartbeats; long polls wait at most 60 s);
  3. beyond `max_connections_per_client` from one address (IPv6: one /64; trusted
     proxies exempt), the newest quiet ones: no data either way for a second, so a
     request being answered is not cut in the middle.

The guard adds nothing to a request's path: it reads counters the kernel keeps anyway.
Its cost grows with the number of connections (a few microseconds each per scan, in
slices that yield to the loop), and its period stretches so that it uses at most
`_MAX_DUTY` of the loop's time. Linux only (/proc/self/fd, TCP_INFO); elsewhere it is off.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.http.limits import client_key
from gateway.http.proxy import Network, is_trusted, parse_networks
from gateway.settings import Settings

logger = logging.getLogger("logway.connections")

REQUEST_MIN_BYTES = 24  # len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
_FD_DIR = Path("/proc/self/fd")
_NR_OPEN = Path("/proc/sys/fs/nr_open")
# struct tcp_info (linux/tcp.h): tcpi_last_data_sent and tcpi_last_data_recv (ms ago) at
# byte 44 and 52, tcpi_bytes_received (Linux 4.1+) at byte 128.
_TCP_INFO = struct.Struct("=44xI4xI72xQ")
_QUIET_MS = 1000  # over the per-client cap, only connections quiet this long are closed
_SCAN_SLICE = 256  # descriptors looked at between two yields to the loop
_MIN_PERIOD_S = 1.0
_MAX_DUTY = 0.05  # of the loop's time
_WARN_EVERY_S = 10.0
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, no TIME_WAIT


@dataclass(frozen=True, slots=True)
class DescriptorBudget:
    """How many descriptors connections may take, decided once the log is open."""

    fd_limit: int  # the soft RLIMIT_NOFILE
    in_use: int  # open when the budget was made: the log's files, the loop, the listener
    connections: int  # at most this many connections at once

    @property
    def fd_ceiling(self) -> int:
        """The lowest descriptor number a connection may not have."""
        return self.in_use + self.connections


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one (as far as the kernel allows).

    Returns (before, after). Every connection costs a descriptor; a default soft limit of
    1,024 would cap the gateway far below `max_connections` for no reason.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(_NR_OPEN.read_text())
        except (OSError, ValueError):
            return soft, soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            logger.warning(
                "could not raise the open-files limit from %d to %d: %s", soft, target, exc
            )
            return soft, soft
        return soft, target
    return soft, soft


def open_fd_count() -> int:
    """Descriptors open in this process now (the one listing /proc/self/fd not counted)."""
    return len(os.listdir(_FD_DIR)) - 1


class DescriptorShortage(RuntimeError):
    """The open-files limit leaves no descriptor for connections; the message says why."""


def descriptor_budget(settings: Settings, fd_limit: int, in_use: int) -> DescriptorBudget:
    """The connection budget, or DescriptorShortage when nothing is left for connections."""
    room = fd_limit - in_use - settings.reserved_fds
    if room < 1:
        raise DescriptorShortage(
            f"the open-files limit ({fd_limit}) leaves no descriptor for connections: "
            f"{in_use} are open (the log's files among them) and reserved_fds is "
            f"{settings.reserved_fds}; raise the limit (ulimit -n, LimitNOFILE=) or lower "
            "reserved_fds"
        )
    return DescriptorBudget(fd_limit, in_use, min(settings.max_connections, room))


def measure_budget(settings: Settings) -> DescriptorBudget:
    """The budget from this process's limit and open descriptors (call once the log is open)."""
    fd_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = descriptor_budget(settings, fd_limit, open_fd_count())
    logger.info(
        "file descriptors: limit %d, %d open (the log's files among them), %d reserved: "
        "at most %d connections",
        budget.fd_limit,
        budget.in_use,
        settings.reserved_fds,
        budget.connections,
    )
    return budget


class GuardedListener(socket.socket):
    """A listening socket that resets, as soon as it is accepted, a connection whose
    descriptor is at or above `fd_ceiling` (Hypercorn: asyncio calls `accept` on it).

    A reset (RST) is what a client sees at once and costs the gateway no state; asyncio
    then goes on accepting the next one.
    """

    fd_ceiling: int = 1 << 62
    refused = 0

    @classmethod
    def wrap(cls, listener: socket.socket, fd_ceiling: int) -> GuardedListener:
        guarded = cls(listener.family, listener.type, listener.proto, fileno=listener.detach())
        guarded.fd_ceiling = fd_ceiling
        return guarded

    def accept(self) -> tuple[socket.socket, Any]:
        while True:  # until a connection fits; BlockingIOError ends asyncio's accept batch
            connection, address = super().accept()
            if connection.fileno() < self.fd_ceiling:
                return connection, address
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            connection.close()
            self.refused += 1


@dataclass(frozen=True, slots=True)
class _Peer:
    """One accepted connection, as the kernel counts it."""

    fd: int
    address: tuple[Any, ...]  # the client's (host, port, ...): unique among live connections
    last_sent_ms: int
    last_received_ms: int
    received_bytes: int

    def quiet(self, quiet_ms: int) -> bool:
        return self.last_sent_ms >= quiet_ms and self.last_received_ms >= quiet_ms


@dataclass(frozen=True, slots=True)
class ScanResult:
    connections: int
    no_request: int
    idle: int
    over_cap: dict[str, int]  # client key: connections closed

    @property
    def closed(self) -> int:
        return self.no_request + self.idle + sum(self.over_cap.values())


def _closing_order(peers: list[_Peer]) -> list[_Peer]:
    """Which of a client's connections go first when it holds too many: those that never
    sent a request, newest first (for them the kernel's last-received time is their age),
    then those quiet the longest. Connections with traffic in the last second are kept."""
    silent = [p for p in peers if p.received_bytes < REQUEST_MIN_BYTES]
    quiet = [p for p in peers if p.received_bytes >= REQUEST_MIN_BYTES and p.quiet(_QUIET_MS)]
    silent.sort(key=lambda p: p.last_received_ms)
    quiet.sort(key=lambda p: -p.last_received_ms)
    return silent + quiet


class ConnectionGuard:
    """Closes the connections described in the module docstring; see `run`."""

    def __init__(self, settings: Settings, family: socket.AddressFamily) -> None:
        self.port = settings.port
        self.family = family
        self.head_timeout_s = settings.request_head_timeout_s
        self.idle_timeout_ms = round(settings.connection_idle_timeout_s * 1000)
        self.per_client = settings.max_connections_per_client
        self.trusted: tuple[Network, ...] = parse_networks(settings.trusted_proxies)
        self.budget: DescriptorBudget | None = None  # set once the server has made it
        self.reserved_fds = settings.reserved_fds
        # connections that have not sent a request yet: when they were first seen
        self._first_seen: dict[tuple[int, tuple[Any, ...]], float] = {}
        self._warned_at = -_WARN_EVERY_S

    @staticmethod
    def supported() -> bool:
        return _FD_DIR.is_dir() and hasattr(socket, "TCP_INFO")

    async def run(self) -> None:
        """Scan forever, at most `_MAX_DUTY` of the time and at least every `_MIN_PERIOD_S`."""
        while True:
            started = time.perf_counter()
            try:
                await self.scan()
            except OSError:
                logger.exception("the connection guard's scan failed; trying again")
            elapsed_s = time.perf_counter() - started
            await asyncio.sleep(max(_MIN_PERIOD_S, elapsed_s / _MAX_DUTY))

    async def scan(self) -> ScanResult:
        """Look at every accepted connection once, close what the rules say; report it."""
        names = os.listdir(_FD_DIR)
        peers: list[_Peer] = []
        for start in range(0, len(names), _SCAN_SLICE):
            peers += filter(None, map(self._inspect, names[start : start + _SCAN_SLICE]))
            await asyncio.sleep(0)
        result = self._enforce(peers, time.monotonic())
        self._report(result, len(names))
        return result

    def _inspect(self, name: str) -> _Peer | None:
        fd = int(name)
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM, 0, fileno=fd)
        except OSError:
            return None  # not a socket (the log's files), or closed since the listing
        try:
            local = sock.getsockname()
            if not isinstance(local, tuple) or local[1] != self.port:
                return None  # not a connection to our port (a file, the log, a client socket)
            address = sock.getpeername()  # the listener itself raises ENOTCONN
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
        except OSError:
            return None
        finally:
            sock.detach()
        if len(info) < _TCP_INFO.size:
            return None
        last_sent_ms, last_received_ms, received_bytes = _TCP_INFO.unpack(info)
        return _Peer(fd, address, last_sent_ms, last_received_ms, received_bytes)

    def _enforce(self, peers: Iterable[_Peer], now: float) -> ScanResult:
        connections = no_request = idle = 0
        first_seen: dict[tuple[int, tuple[Any, ...]], float] = {}
        by_client: defaultdict[str, list[_Peer]] = defaultdict(list)
        for peer in peers:
            connections += 1
            if peer.received_bytes < REQUEST_MIN_BYTES:
                key = (peer.fd, peer.address)
                # the kernel's last-received time dates a connection that sent nothing
                seen = self._first_seen.get(key, now - peer.last_received_ms / 1000)
                first_seen[key] = seen
                if now - seen >= self.head_timeout_s:
                    no_request += self._close(peer)
                    continue
            elif peer.quiet(self.idle_timeout_ms):
                idle += self._close(peer)
                continue
            if self.per_client and not is_trusted(peer.address[0], self.trusted):
                by_client[client_key(peer.address[0])].append(peer)
        self._first_seen = first_seen
        over_cap: dict[str, int] = {}
        for client, mine in by_client.items():
            excess = len(mine) - self.per_client
            if excess <= 0:
                continue
            over_cap[client] = sum(self._close(p) for p in _closing_order(mine)[:excess])
        return ScanResult(connections, no_request, idle, over_cap)

    def _close(self, peer: _Peer) -> int:
        """Shut a connection down for its server to close; 1 if it was still the one seen.

        The server's threads may have closed the descriptor and reused it since the scan
        looked at it; the peer address (unique among live connections) tells.
        """
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM, 0, fileno=peer.fd)
        except OSError:
            return 0
        try:
            if sock.getpeername() != peer.address:
                return 0
            sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            if exc.errno not in (errno.ENOTCONN, errno.EBADF, errno.ENOTSOCK):
                raise
            return 0
        finally:
            sock.detach()
        return 1

    def _report(self, result: ScanResult, open_fds: int) -> None:
        if result.no_request or result.idle:
            logger.debug(
                "closed %d connections that sent no request within %g s, %d idle for %g s",
                result.no_request,
                self.head_timeout_s,
                result.idle,
                self.idle_timeout_ms / 1000,
            )
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY_S:
            return
        warnings = []
        if result.over_cap:
            top = Counter(result.over_cap).most_common(3)
            warnings.append(
                f"closed {sum(result.over_cap.values())} connections beyond "
                f"max_connections_per_client={self.per_client} (from "
                + ", ".join(f"{client}: {count}" for client, count in top)
                + ")"
            )
        budget = self.budget
        if budget is not None:
            if result.connections >= budget.connections:
                warnings.append(
                    f"{result.connections} connections open, the limit: new ones wait in "
                    "the listen backlog (max_connections, the open-files limit)"
                )
            if budget.fd_limit - open_fds < self.reserved_fds // 2:
                warnings.append(
                    f"{open_fds} of {budget.fd_limit} file descriptors open: the log's "
                    "files are eating into reserved_fds; raise the open-files limit"
                )
        for warning in warnings:
            logger.warning("%s", warning)
        if warnings:
            self._warned_at = now
