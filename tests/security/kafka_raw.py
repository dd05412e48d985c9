"""A blocking Kafka connection from a chosen loopback address, for the Kafka listener's
attack tests: frames are built with the listener's own codec (gateway.kafka.schema), so a
test can send a well-formed request, a bare size prefix, or a frame cut anywhere."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from gateway.kafka.dispatch import ApiKey
from gateway.kafka.errors import ErrorCode
from tests.gateway.kafka.frames import request_frame, response_body
from tests.security.transport import GUARD_S, closed_by_server


class KafkaSocket:
    """One connection; `call` sends a request and decodes its answer."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), GUARD_S, (source, 0))
        self.correlation_id = 0

    def frame(self, key: ApiKey, version: int, body: dict[str, Any]) -> bytes:
        self.correlation_id += 1
        return request_frame(key, version, self.correlation_id, body, "attack")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed by the server")
            data += chunk
        return data

    def read_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._read_exactly(4))
        return self._read_exactly(size)

    def call(self, key: ApiKey, version: int, body: dict[str, Any]) -> dict[str, Any]:
        self.send(self.frame(key, version, body))
        correlation_id, answer = response_body(key, version, self.read_frame())
        assert correlation_id == self.correlation_id
        return answer

    def api_versions(self) -> dict[str, Any]:
        return self.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "attack"})

    def login(self, password: str) -> dict[str, Any]:
        """SASL/PLAIN as a v1 client does it; the SaslAuthenticate answer."""
        handshake = self.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
        assert handshake["error_code"] == ErrorCode.NONE
        token = b"\x00someone\x00" + password.encode()
        return self.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": token})

    def closed_by_server(self) -> bool:
        """Whether the server has closed (or reset) the connection, without waiting."""
        self.sock.settimeout(0.0)  # a socket with a timeout waits in recv, MSG_DONTWAIT or not
        try:
            return closed_by_server(self.sock)
        finally:
            self.sock.settimeout(GUARD_S)

    def wait_until_closed(self) -> bool:
        """Whether the server closes the connection within GUARD_S (a guard, not a timing)."""
        deadline = time.monotonic() + GUARD_S
        while not self.closed_by_server():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        self.sock.close()
