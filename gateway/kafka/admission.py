"""What one client may cost the Kafka listener, decided without I/O (sockets are
server.py's).

- `ConnectionCaps`: connections per client address (`kafka_max_connections_per_client`;
  IPv6: one /64; trusted proxies exempt) and in total (`kafka_connection_share` of the
  descriptor budget, gateway/connections.py). A connection beyond either is reset as soon
  as it is accepted (see below): it holds no descriptor and no buffer, and HTTP keeps its
  share.
- `SaslFailures`: failed SASL/PLAIN authentications per client address, in token
  buckets like those HTTP's 401s take from, with the same settings
  (`auth_failure_limit_per_s`, `auth_failure_burst`, gateway/http/limits.py) but buckets
  of their own. While an address's bucket is empty its SaslAuthenticate is refused
  before the credential is looked at, so guessing costs time and tells nothing.
- A connection beyond the caps is reset in the listening socket's `accept`
  (gateway/kafka/server.py), before asyncio accepts the next one of its batch.
- `FrameLimits`: the size of a request frame a connection may send now: small before
  SASL completes (when auth is on), `kafka_max_request_bytes` after. The size prefix is
  checked before a byte of the frame is read, so a prefix of 2 GiB allocates nothing.
  `FramesInFlight`: a connection that pipelines holds at most that many bytes of frames.
- `Deadline`: when a connection that sends no whole request is closed: the setup timeout
  from its opening until its first request (with auth on: until it has authenticated),
  then the idle timeout from its last request or answer; never while an answer is being
  made (a Fetch waiting for data, a JoinGroup waiting for the group). A partial frame is
  no request, so a client that trickles bytes (slowloris) is closed like a silent one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from gateway.http.limits import TokenBuckets, client_key
from gateway.http.proxy import Network, is_trusted, parse_networks
from gateway.settings import Settings


class ConnectionCaps:
    """Counts open connections per client and in total; `admit` says why not, or counts."""

    def __init__(self, total: int, per_client: int, trusted: tuple[Network, ...] = ()) -> None:
        self.total = total
        self.per_client = per_client  # 0: no cap
        self.trusted = trusted
        self.open = 0
        self._by_client: Counter[str] = Counter()

    def admit(self, host: str) -> str | None:
        """Count a new connection from `host`, or the reason it is refused (not counted)."""
        if self.open >= self.total:
            return f"{self.open} Kafka connections are open, the limit (kafka_max_connections)"
        client = self._client(host)
        if client is not None:
            if self._by_client[client] >= self.per_client:
                return (
                    f"{client} holds {self.per_client} Kafka connections, the limit "
                    "(kafka_max_connections_per_client)"
                )
            self._by_client[client] += 1
        self.open += 1
        return None

    def release(self, host: str) -> None:
        """An admitted connection from `host` has closed."""
        self.open -= 1
        client = self._client(host)
        if client is not None:
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]

    def _client(self, host: str) -> str | None:
        """The key `host` is counted under, None when it is not capped."""
        if not self.per_client or is_trusted(host, self.trusted):
            return None
        return client_key(host)


class SaslFailures:
    """Failed SASL authentications per client address (off with a rate of 0)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._buckets = TokenBuckets(rate_per_s, burst) if rate_per_s > 0 else None

    def wait_s(self, host: str, now: float) -> float:
        """Seconds until `host` may try again (0: now); `now` is monotonic."""
        return 0.0 if self._buckets is None else self._buckets.wait_s(client_key(host), now)

    def failed(self, host: str, now: float) -> None:
        if self._buckets is not None:
            self._buckets.take(client_key(host), now)


@dataclass(frozen=True, slots=True)
class FrameLimits:
    authenticated_bytes: int  # kafka_max_request_bytes
    unauthenticated_bytes: int  # kafka_sasl_max_receive_bytes (with auth on)

    def refusal(self, size: int, authenticated: bool) -> str | None:
        """Why a frame of `size` bytes (its prefix, signed) is refused now, or None."""
        limit, name = (
            (self.authenticated_bytes, "kafka_max_request_bytes")
            if authenticated
            else (self.unauthenticated_bytes, "kafka_sasl_max_receive_bytes, before SASL")
        )
        if not 0 < size <= limit:
            return f"a request of {size} bytes (at most {limit}: {name})"
        return None


class FramesInFlight:
    """Bytes of the frames one connection has read whose answers are still being made.

    At most `limit` (kafka_max_request_bytes) at once, whatever the pipelining: reading the
    next frame waits until answers make room, so a connection holds at most one largest
    request's worth of frames (pipelining alone would let it hold MAX_IN_FLIGHT of them).
    One frame always fits, so a connection never waits on itself.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> None:
        while self.held and self.held + size > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size
        self._freed.set()


@dataclass(slots=True)
class Deadline:
    """One connection's clock; times are monotonic seconds."""

    setup_s: float
    idle_s: float
    opened_at: float
    set_up: bool = False  # a whole request came (with auth on: the session is authenticated)
    last_active_at: float = 0.0  # a whole request came, or an answer went out
    answering: int = 0  # answers being made or waiting to go out

    def active(self, now: float, set_up: bool) -> None:
        """A whole request came or an answer went out; `set_up` as the session is now."""
        self.last_active_at = now
        self.set_up = self.set_up or set_up

    def answered(self, now: float) -> None:
        """An answer went out (or a request needed none)."""
        self.answering -= 1
        self.last_active_at = now

    def expires_at(self) -> float | None:
        """When the connection is closed if nothing happens; None while answering."""
        if self.answering:
            return None
        if not self.set_up:
            return self.opened_at + self.setup_s
        return self.last_active_at + self.idle_s

    def reason(self) -> str:
        if not self.set_up:
            return (
                f"no whole request (with auth on: no authentication) within "
                f"{self.setup_s:g} s of connecting (kafka_connection_setup_timeout_ms)"
            )
        return f"no whole request for {self.idle_s:g} s (kafka_connections_max_idle_ms)"


@dataclass(frozen=True, slots=True)
class Admission:
    """The listener's limits, from the settings once at start."""

    caps: ConnectionCaps
    sasl_failures: SaslFailures
    frames: FrameLimits
    setup_s: float
    idle_s: float

    @classmethod
    def from_settings(cls, settings: Settings, total: int) -> Admission:
        """`total`: the Kafka share of the descriptor budget (gateway/connections.py)."""
        return cls(
            ConnectionCaps(
                total,
                settings.kafka_max_connections_per_client,
                parse_networks(settings.trusted_proxies),
            ),
            SaslFailures(settings.auth_failure_limit_per_s, settings.auth_failure_burst),
            FrameLimits(settings.kafka_max_request_bytes, settings.kafka_sasl_max_receive_bytes),
            settings.kafka_connection_setup_timeout_ms / 1000,
            settings.kafka_connections_max_idle_ms / 1000,
        )

    def deadline(self, now: float) -> Deadline:
        return Deadline(self.setup_s, self.idle_s, opened_at=now, last_active_at=now)
