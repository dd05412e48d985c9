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
- With the Kafka listener on, its connections come out of the same budget: it holds at
  most `kafka_connection_share` of them (`kafka_max_connections`, and never more than
  half of what the limit leaves after `reserved_fds`; gateway/kafka/admission.py resets
  the rest), and HTTP gets what remains, so a Kafka flood leaves HTTP its connections
  (/healthz) and the log its descriptors. The share depends on the settings and the
  limit only, so the listener, which opens before the budget is measured, knows it.
- `ConnectionGuard`, a task on the server's loop, reads the kernel's counters of this
  process's accepted sockets (TCP_INFO) every second or so and shuts down (shutdown(2):
  the server reads an end of stream and cleans up as for a client that left):
  1. a connection that has received fewer bytes than any request has (24, the HTTP/2
     preface; an HTTP/1.1 request with its Host header is longer) for
     `request_head_timeout_s`;
  2. one with no data in either direction for `connection_idle_timeout_s`, and none
     waiting to go out (streams send heartbeats; long polls wait at most 60 s; a stream
     whose client stopped reading is `stream_send_timeout_s`'s to end);
  3. beyond `max_connections_per_client` from one address (IPv6: one /64; trusted
     proxies exempt), the newest quiet ones: no data either way for a second and none
     waiting to go out, so a request being answered is not cut in the middle.

The guard adds nothing to a request's path: it reads counters the kernel keeps anyway.
Its cost grows with the number of connections (a few microseconds each per scan, in
slices that yield to the loop), and its period stretches so that it uses at most
`_MAX_DUTY` of the loop's time. Linux only (/proc/self/fd, TCP_INFO); elsewhere it is off.
"""

from __future__ import annotations

import asyncio
import enum
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
from typing import Any, Self

from gateway.http.limits import client_key
from gateway.http.proxy import Network, is_trusted, parse_networks
from gateway.settings import Settings

logger = logging.getLogger("logway.connections")

REQUEST_MIN_BYTES = 24  # len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
_FD_DIR = Path("/proc/self/fd")
_NR_OPEN = Path("/proc/sys/fs/nr_open")
# struct tcp_info (linux/tcp.h): tcpi_unacked at byte 24, tcpi_last_data_sent and
# tcpi_last_data_recv (ms ago) at 44 and 52, tcpi_bytes_received (Linux 4.1+) at 128,
# tcpi_notsent_bytes (4.6+) at 144.
_TCP_INFO = struct.Struct("=24xI16xI4xI72xQ8xI")
_QUIET_MS = 1000  # over the per-client cap, only connections quiet this long are closed
_SCAN_SLICE = 128  # descriptors looked at between two yields to the loop (~1-2 ms)
_MIN_PERIOD_S = 1.0
_MAX_DUTY = 0.05  # of the loop's time
_WARN_EVERY_S = 10.0
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, no TIME_WAIT


@dataclass(frozen=True, slots=True)
class DescriptorBudget:
    """How many descriptors connections may take, decided once the log is open."""

    fd_limit: int  # the soft RLIMIT_NOFILE
    in_use: int  # open when the budget was made: the log's files, the loop, the listener
    connections: int  # at most this many HTTP connections at once
    kafka_connections: int = 0  # and this many Kafka ones (`kafka_connection_share`)

    @property
    def fd_ceiling(self) -> int:
        """The lowest descriptor number an HTTP connection may not have (Kafka's share
        below it: Linux numbers a new connection after the Kafka ones it already holds)."""
        return self.in_use + self.kafka_connections + self.connections


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
    """Descriptors open in this process now (the one listing them not counted)."""
    directory = _FD_DIR if _FD_DIR.is_dir() else Path("/dev/fd")  # /dev/fd: BSD, macOS
    return len(os.listdir(directory)) - 1


class DescriptorShortage(RuntimeError):
    """The open-files limit leaves no descriptor for connections; the message says why."""


def kafka_connection_share(settings: Settings, fd_limit: int) -> int:
    """How many Kafka connections may be open at once (0 with the listener off).

    `kafka_max_connections`, but at most half of what the open-files limit leaves after
    `reserved_fds`: the other half stays for HTTP, whatever Kafka clients do. When the
    limit leaves nothing, `descriptor_budget` refuses to serve anyway.
    """
    if settings.kafka_port is None:
        return 0
    half = (fd_limit - settings.reserved_fds) // 2
    return min(settings.kafka_max_connections, half) if half >= 1 else 0


def descriptor_budget(settings: Settings, fd_limit: int, in_use: int) -> DescriptorBudget:
    """The connection budget, or DescriptorShortage when nothing is left for connections."""
    kafka = kafka_connection_share(settings, fd_limit)
    room = fd_limit - in_use - settings.reserved_fds - kafka
    if room < 1:
        kafka_part = f", {kafka} are kept for Kafka connections" if kafka else ""
        raise DescriptorShortage(
            f"the open-files limit ({fd_limit}) leaves no descriptor for connections: "
            f"{in_use} are open (the log's files among them){kafka_part} and reserved_fds "
            f"is {settings.reserved_fds}; raise the limit (ulimit -n, LimitNOFILE=) or lower "
            "reserved_fds" + (" or kafka_max_connections" if kafka else "")
        )
    return DescriptorBudget(fd_limit, in_use, min(settings.max_connections, room), kafka)


def measure_budget(settings: Settings) -> DescriptorBudget:
    """The budget from this process's limit and open descriptors (call once the log is open)."""
    fd_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = descriptor_budget(settings, fd_limit, open_fd_count())
    logger.info(
        "file descriptors: limit %d, %d open (the log's files among them), %d reserved: "
        "at most %d HTTP connections and %d Kafka connections",
        budget.fd_limit,
        budget.in_use,
        settings.reserved_fds,
        budget.connections,
        budget.kafka_connections,
    )
    return budget


class ResettingListener(socket.socket):
    """A listening socket that resets (RST), as soon as it is accepted, a connection for
    which `refusal` gives a reason; asyncio calls `accept` on it (Hypercorn's listeners,
    the Kafka listener), in batches, before any connection's task runs.

    A reset is what a client sees at once and costs the gateway no state, not even a
    descriptor for longer than the accept; asyncio then goes on accepting the next one.
    """

    refused = 0  # since the last warning
    _warned_at = -_WARN_EVERY_S

    @classmethod
    def adopt(cls, listener: socket.socket) -> Self:
        """This kind of socket in place of `listener` (which gives its descriptor up)."""
        return cls(listener.family, listener.type, listener.proto, fileno=listener.detach())

    def refusal(self, connection: socket.socket, address: Any) -> str | None:
        """Why a just-accepted connection is reset, or None to serve it."""
        raise NotImplementedError

    def accept(self) -> tuple[socket.socket, Any]:
        while True:  # until a connection is let in; BlockingIOError ends asyncio's batch
            connection, address = super().accept()
            reason = self.refusal(connection, address)
            if reason is None:
                return connection, address
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            connection.close()
            self.refused += 1
            if time.monotonic() - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = time.monotonic()
                logger.warning("reset %d new connections: %s", self.refused, reason)
                self.refused = 0


class GuardedListener(ResettingListener):
    """Resets a connection whose descriptor is at or above `fd_ceiling` (Hypercorn)."""

    fd_ceiling: int = 1 << 62

    @classmethod
    def wrap(cls, listener: socket.socket, fd_ceiling: int) -> GuardedListener:
        guarded = cls.adopt(listener)
        guarded.fd_ceiling = fd_ceiling
        return guarded

    def refusal(self, connection: socket.socket, address: Any) -> str | None:
        if connection.fileno() < self.fd_ceiling:
            return None
        return (
            "the connection limit is reached (max_connections, the open-files limit less "
            "reserved_fds)"
        )


@dataclass(frozen=True, slots=True)
class Peer:
    """One accepted connection, as the kernel counts it."""

    fd: int
    address: tuple[Any, ...]  # the client's (host, port, ...): unique among live connections
    last_sent_ms: int
    last_received_ms: int
    received_bytes: int
    queued: bool = False  # data waiting to be sent or acknowledged: a stream the client stalls

    def quiet(self, quiet_ms: int) -> bool:
        """No data either way for `quiet_ms`, and none waiting to go out."""
        return (
            self.last_sent_ms >= quiet_ms and self.last_received_ms >= quiet_ms and not self.queued
        )

    @property
    def asked(self) -> bool:
        """Whether it has sent enough for a request (it may still be incomplete)."""
        return self.received_bytes >= REQUEST_MIN_BYTES


class Reason(enum.Enum):
    NO_REQUEST = "sent no request"
    IDLE = "idle"
    OVER_CAP = "beyond max_connections_per_client"


class ConnectionRules:
    """The guard's three rules, as a function of what the kernel reports (no I/O).

    It remembers when it first saw each connection that has not asked anything yet, to
    date connections that trickle a byte now and then.
    """

    def __init__(
        self,
        head_timeout_s: float,
        idle_timeout_s: float,
        per_client: int,
        trusted: tuple[Network, ...] = (),
    ) -> None:
        self.head_timeout_s = head_timeout_s
        self.idle_timeout_ms = round(idle_timeout_s * 1000)
        self.per_client = per_client
        self.trusted = trusted
        self._first_seen: dict[tuple[int, tuple[Any, ...]], float] = {}

    def decide(self, peers: Iterable[Peer], now: float) -> list[tuple[Peer, Reason]]:
        """The connections to close now (monotonic `now`, seconds), and why."""
        closing: list[tuple[Peer, Reason]] = []
        first_seen: dict[tuple[int, tuple[Any, ...]], float] = {}
        by_client: defaultdict[str, list[Peer]] = defaultdict(list)
        for peer in peers:
            if not peer.asked:
                key = (peer.fd, peer.address)
                # for a connection that sent nothing, the last-received time is its age
                seen = self._first_seen.get(key, now - peer.last_received_ms / 1000)
                first_seen[key] = seen
                if now - seen >= self.head_timeout_s:
                    closing.append((peer, Reason.NO_REQUEST))
                    continue
            elif peer.quiet(self.idle_timeout_ms):
                closing.append((peer, Reason.IDLE))
                continue
            if self.per_client and not is_trusted(peer.address[0], self.trusted):
                by_client[client_key(peer.address[0])].append(peer)
        self._first_seen = first_seen
        for mine in by_client.values():
            excess = len(mine) - self.per_client
            if excess > 0:
                closing += [(peer, Reason.OVER_CAP) for peer in _closing_order(mine)[:excess]]
        return closing


def _closing_order(peers: list[Peer]) -> list[Peer]:
    """Which of a client's connections go first when it holds too many: those that never
    sent a request, newest first (for them the kernel's last-received time is their age),
    then those quiet the longest. Connections with traffic in the last second are kept,
    so no request is cut in the middle."""
    silent = sorted((p for p in peers if not p.asked), key=lambda p: p.last_received_ms)
    quiet = [p for p in peers if p.asked and p.quiet(_QUIET_MS)]
    quiet.sort(key=lambda p: p.last_received_ms, reverse=True)
    return silent + quiet


@dataclass(frozen=True, slots=True)
class ScanResult:
    connections: int
    closed: Counter[Reason]
    over_cap: Counter[str]  # client key: connections closed beyond the cap
    busy_s: float  # what the scan took of the loop's time


class ConnectionGuard:
    """Applies `ConnectionRules` to this process's accepted connections; see `run`."""

    def __init__(self, settings: Settings, family: socket.AddressFamily) -> None:
        self.port = settings.port
        self.family = family
        self.rules = ConnectionRules(
            settings.request_head_timeout_s,
            settings.connection_idle_timeout_s,
            settings.max_connections_per_client,
            parse_networks(settings.trusted_proxies),
        )
        self.budget: DescriptorBudget | None = None  # set once the server has made it
        self.reserved_fds = settings.reserved_fds
        self._warned_at = -_WARN_EVERY_S
        self._over_cap: Counter[str] = Counter()  # closed since the last warning

    @staticmethod
    def supported() -> bool:
        return _FD_DIR.is_dir() and hasattr(socket, "TCP_INFO")

    async def run(self) -> None:
        """Scan forever, at most `_MAX_DUTY` of the time and at least every `_MIN_PERIOD_S`."""
        while True:
            try:
                result = await self.scan()
            except OSError:
                logger.exception("the connection guard's scan failed; trying again")
                await asyncio.sleep(_MIN_PERIOD_S)
                continue
            await asyncio.sleep(max(_MIN_PERIOD_S, result.busy_s / _MAX_DUTY))

    async def scan(self) -> ScanResult:
        """Look at every accepted connection once, close what the rules say; report it.

        Works in slices between which the loop serves requests; `busy_s` is the time spent
        in the slices only.
        """
        started = time.perf_counter()
        names = os.listdir(_FD_DIR)
        peers: list[Peer] = []
        busy_s = 0.0
        for start in range(0, len(names), _SCAN_SLICE):
            peers += filter(None, map(self._inspect, names[start : start + _SCAN_SLICE]))
            busy_s += time.perf_counter() - started
            await asyncio.sleep(0)
            started = time.perf_counter()
        closed: Counter[Reason] = Counter()
        over_cap: Counter[str] = Counter()
        for peer, reason in self.rules.decide(peers, time.monotonic()):
            if self._close(peer):
                closed[reason] += 1
                if reason is Reason.OVER_CAP:
                    over_cap[client_key(peer.address[0])] += 1
        busy_s += time.perf_counter() - started
        result = ScanResult(len(peers), closed, over_cap, busy_s)
        self._report(result, len(names))
        return result

    def _inspect(self, name: str) -> Peer | None:
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
        unacked, last_sent_ms, last_received_ms, received_bytes, not_sent = _TCP_INFO.unpack(info)
        queued = bool(unacked or not_sent)
        return Peer(fd, address, last_sent_ms, last_received_ms, received_bytes, queued)

    def _close(self, peer: Peer) -> bool:
        """Shut a connection down for its server to close; False if it is gone already.

        The server's threads may have closed the descriptor and reused it since the scan
        looked at it; the peer address (unique among live connections) tells.
        """
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM, 0, fileno=peer.fd)
        except OSError:
            return False
        try:
            if sock.getpeername() != peer.address:
                return False
            sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            if exc.errno not in (errno.ENOTCONN, errno.EBADF, errno.ENOTSOCK):
                raise
            return False
        finally:
            sock.detach()
        return True

    def _report(self, result: ScanResult, open_fds: int) -> None:
        if result.closed[Reason.NO_REQUEST] or result.closed[Reason.IDLE]:
            logger.debug(
                "closed %d connections that sent no request within %g s, %d idle for %g s",
                result.closed[Reason.NO_REQUEST],
                self.rules.head_timeout_s,
                result.closed[Reason.IDLE],
                self.rules.idle_timeout_ms / 1000,
            )
        self._over_cap += result.over_cap
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY_S:
            return
        warnings = []
        if self._over_cap:
            warnings.append(
                f"closed {self._over_cap.total()} connections beyond "
                f"max_connections_per_client={self.rules.per_client} (from "
                + ", ".join(f"{client}: {n}" for client, n in self._over_cap.most_common(3))
                + ")"
            )
            self._over_cap = Counter()
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
