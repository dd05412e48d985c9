"""Attack tools for the transport tests: raw sockets from chosen loopback addresses, a raw
HTTP/2 client that crafts HPACK header blocks byte by byte, and the gateway's memory.

Linux routes all of 127.0.0.0/8 to the loopback interface, so an attacker binds to
127.0.0.2, 127.0.0.3... and the gateway sees distinct client addresses, while the
well-behaved client stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import resource
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hpack
import httpx
import pytest
from hyperframe.frame import (
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

API_KEY = "lw_transport_admin_0123456789abcdef"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GUARD_S = 30.0  # how long a test waits for something that must happen; never asserted


def auth_config(tmp_path: Path, extra: str = "") -> Path:
    """A settings file with auth on: one API key (`API_KEY`) allowed everything."""
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[keys.admin]\nsha256 = "{hashlib.sha256(API_KEY.encode()).hexdigest()}"\n'
        'permissions = ["admin:topic:*", "admin:group:*"]\n'
    )
    config = tmp_path / "logway.toml"
    config.write_text(f'auth_api_keys_file = "{keys}"\n{extra}')
    return config


def eventually(call: Callable[[], httpx.Response]) -> httpx.Response:
    """`call()` until it gets an answer: a connection beyond the gateway's limits waits in
    its listen backlog or is reset until the guard makes room (a scan, about a second)."""
    deadline = time.monotonic() + GUARD_S
    while True:
        try:
            return call()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def open_fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def raise_own_fd_limit(needed: int) -> None:
    """Let this test process hold `needed` sockets, or skip the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@contextlib.contextmanager
def silent_flood(port: int, addresses: int = 30, each: int = 70) -> Iterator[list[socket.socket]]:
    """`addresses` x `each` connections that send nothing, from 127.0.1.1, 127.0.1.2...
    (under every per-client cap), closed on leaving."""
    attack = [connect_many(port, f"127.0.1.{i}", each) for i in range(1, addresses + 1)]
    try:
        yield [sock for sockets in attack for sock in sockets]
    finally:
        for sockets in attack:
            for sock in sockets:
                sock.close()


def create_and_produce(client: httpx.Client, topics: int = 4, partitions: int = 8) -> None:
    """Create `topics` topics and produce to each of their partitions: the log opens
    a segment (a descriptor or more) per partition."""
    for n in range(1, topics + 1):
        response = client.put(f"/v1/topics/t{n}", json={"partitions": partitions})
        assert response.status_code == 201, response.text
        records = [{"value": i, "partition": i} for i in range(partitions)]
        response = client.post(f"/v1/topics/t{n}/records", json={"records": records})
        assert response.status_code == 200, response.text


def connect_many(port: int, source: str, count: int, payload: bytes = b"") -> list[socket.socket]:
    """`count` connections from `source`, each sending `payload` once connected, without
    waiting for the server to accept them (beyond its limit they wait in its listen
    backlog, or are reset; the kernel completes the handshake while the backlog has room)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setblocking(False)
            sock.bind((source, 0))
            code = sock.connect_ex(("127.0.0.1", port))
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, f"connect from {source}: {os.strerror(code)}")
        if payload:
            _send_when_connected(sockets, payload)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _send_when_connected(sockets: list[socket.socket], payload: bytes) -> None:
    by_fd = {sock.fileno(): sock for sock in sockets}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLOUT)
    deadline = time.monotonic() + GUARD_S
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            with contextlib.suppress(OSError):  # reset by the server: that is its answer
                by_fd[fd].send(payload)
            poller.unregister(fd)
            del by_fd[fd]


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed (or reset) this connection; reads what is waiting."""
    try:
        while True:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:  # ECONNRESET: reset by the server
        return True


def wait_until_closed(sockets: list[socket.socket], deadline_s: float = GUARD_S) -> list[bool]:
    """Until every socket is closed by the server or the deadline passes; which were closed."""
    deadline = time.monotonic() + deadline_s
    closed = [False] * len(sockets)
    while time.monotonic() < deadline and not all(closed):
        closed = [c or closed_by_server(s) for c, s in zip(closed, sockets, strict=True)]
        time.sleep(0.1)
    return closed


# -- HPACK and a raw HTTP/2 client ------------------------------------------------------------


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """An HPACK integer (RFC 7541 §5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = [flags | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name_index: int, value: bytes) -> bytes:
    """A literal header field without indexing, its name from the static table (§6.2.2)."""
    return _integer(name_index, 4, 0x00) + _integer(len(value), 7, 0) + value


def _indexed_literal(name: bytes, value: bytes) -> bytes:
    """A literal header field with incremental indexing, new name (§6.2.1)."""
    return b"\x40" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value


_STATIC_AUTHORITY, _STATIC_PATH, _STATIC_ACCEPT = 1, 4, 19
_GET, _HTTP = b"\x82", b"\x86"  # :method GET, :scheme http (static table entries 2 and 6)
_FIRST_DYNAMIC = 62


def header_block(path: str, headers: list[tuple[bytes, bytes]], bomb: bytes, refs: int) -> bytes:
    """A GET's header block whose header `x-bomb: <bomb>` appears `refs` times.

    The first occurrence on a connection inserts it into the HPACK dynamic table (the
    caller says which with `bomb`: empty once it is there); every other occurrence is one
    byte, a reference to dynamic entry 62. Nothing else is inserted, so it stays 62.
    """
    out = _GET + _HTTP + _literal(_STATIC_PATH, path.encode()) + _literal(_STATIC_AUTHORITY, b"a")
    out += _literal(_STATIC_ACCEPT, b"text/event-stream")
    for name, value in headers:
        out += b"\x00" + _integer(len(name), 7, 0) + name + _integer(len(value), 7, 0) + value
    if bomb:
        out += _indexed_literal(b"x-bomb", bomb)
        refs -= 1
    return out + _integer(_FIRST_DYNAMIC, 7, 0x80) * max(0, refs)


@dataclass
class RawH2:
    """One HTTP/2 connection (prior knowledge) that sends hand-made header blocks and
    counts what comes back: response statuses, stream resets, GOAWAY, closure."""

    sock: socket.socket
    outcomes: Counter[str] = field(default_factory=Counter)
    settings: dict[int, int] = field(default_factory=dict)
    closed: bool = False
    bomb_indexed: bool = False
    _next_stream: int = 1
    _buffer: bytes = b""
    _decoder: hpack.Decoder = field(default_factory=hpack.Decoder)

    @classmethod
    def connect(cls, port: int) -> RawH2:
        sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
        sock.sendall(
            H2_PREFACE
            + SettingsFrame(0).serialize()
            + WindowUpdateFrame(0, window_increment=1 << 30).serialize()
        )
        return cls(sock)

    def request(
        self, path: str, headers: list[tuple[bytes, bytes]], bomb: bytes, refs: int
    ) -> None:
        block = header_block(path, headers, b"" if self.bomb_indexed else bomb, refs)
        self.bomb_indexed = self.bomb_indexed or (bool(bomb) and refs > 0)
        frame = HeadersFrame(self._next_stream, data=block, flags=["END_HEADERS", "END_STREAM"])
        self._next_stream += 2
        try:
            self.sock.sendall(frame.serialize())
        except OSError:
            self.closed = True

    def pump(self, timeout_s: float = 0.0) -> None:
        """Read and answer (SETTINGS ack, PING ack) whatever the server has sent."""
        self.sock.settimeout(timeout_s)
        try:
            while not self.closed:
                data = self.sock.recv(1 << 20)
                if not data:
                    self.closed = True
                    break
                self._buffer += data
                self._frames()
        except (TimeoutError, BlockingIOError):
            pass
        except OSError:
            self.closed = True

    def _frames(self) -> None:
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                return
            frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
            self._buffer = self._buffer[9 + length :]
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                self.settings.update(frame.settings)
                self.sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
            elif isinstance(frame, HeadersFrame):
                status = dict(self._decoder.decode(frame.data, raw=True)).get(b":status", b"?")
                self.outcomes[f"status {status.decode()}"] += 1
            elif isinstance(frame, RstStreamFrame):
                self.outcomes["stream reset"] += 1
            elif isinstance(frame, GoAwayFrame):
                self.outcomes[f"goaway {frame.error_code}"] += 1
            elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                ack = PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"])
                self.sock.sendall(ack.serialize())

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def raw_h2_connections(port: int, count: int) -> Iterator[list[RawH2]]:
    connections = [RawH2.connect(port) for _ in range(count)]
    try:
        yield connections
    finally:
        for connection in connections:
            connection.close()
