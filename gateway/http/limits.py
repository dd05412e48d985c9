"""Admission limits checked before a request reaches its route: failed authentication,
request rate and open streams.

- Failed authentication: a token bucket per client address (`auth_failure_limit_per_s`
  refill, `auth_failure_burst` size) that every 401 takes a token from; while it is empty,
  every request from that address is a 429 `rate-limited` with `Retry-After`, before its
  credentials are looked at, so guessing keys or tokens costs time and tells nothing.
  Another address with a valid key is not affected. Addresses are those after
  gateway/http/proxy.py; an IPv6 client is its /64, as one host usually holds a whole one.
  The unauthenticated paths (/healthz, the console's files...) are never refused.
- Rate: a token bucket per client (`rate_limit_per_s` refill, `rate_limit_burst` size);
  a request finding the bucket empty gets a 429 `rate-limited` problem with `Retry-After`
  (whole seconds until a token is back). The client is its address — after
  gateway/proxy.py, the address a trusted proxy forwarded. Operations endpoints
  (/healthz, /readyz, /metrics) are never limited, so probes and scrapes always get in.
- Streams: `GET .../events` requests count while they run; beyond `max_streams` in total
  a 503 `stream-capacity` (another gateway may have room), beyond `max_streams_per_client`
  (when set) for one client a 429 `too-many-streams`.

Rejections of a stream asked for by an EventSource are a 200 that tells it when to come
back (gateway/http/event_source.py): an EventSource gives up for good on any other status.
Rejections are answered here, before the body is read or storage is touched.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.auth import PUBLIC_PATHS, PUBLIC_PREFIXES
from gateway.http.event_source import retry_later
from gateway.http.media import names_sse
from gateway.http.problems import Problem
from gateway.settings import Settings

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_TRACKED_CLIENTS = 100_000  # buckets kept; the least recently seen are dropped beyond


class TokenBuckets:
    """One token bucket per key; `take` answers 0 when admitted, else seconds to wait."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_s(self, key: str, now: float) -> float:
        """Like `take`, without taking: 0 when a token is there."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate_per_s

    def take(self, key: str, now: float) -> float:
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        if tokens >= 1:
            tokens -= 1
            wait_s = 0.0
        else:
            wait_s = (1 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
        return wait_s


def client_key(address: str) -> str:
    """The client an address stands for: itself for IPv4 (also IPv4-mapped IPv6), its /64
    for IPv6 (a host is usually given a whole /64), the text itself if it is no address."""
    if ":" not in address:  # IPv4 (or a name): as it is, without parsing on every request
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def _is_public(scope: Scope) -> bool:
    """A path authentication lets anyone reach (gateway/http/auth.py)."""
    path: str = scope["path"].removeprefix(scope.get("root_path", ""))
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


class AuthFailureLimitMiddleware:
    """Counts 401s per client address and refuses an address whose bucket is empty.

    Sits just outside AuthMiddleware (gateway/http/middleware.py), so it sees every 401
    that authentication gives and can refuse before credentials are checked.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.buckets = TokenBuckets(settings.auth_failure_limit_per_s, settings.auth_failure_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = client_key(str(client[0])) if client else "unknown"
        wait_s = self.buckets.wait_s(key, time.monotonic())
        if wait_s > 0 and not _is_public(scope):
            retry_after = _retry_after(wait_s)
            problem = Problem(
                "rate-limited",
                f"too many failed authentications from this address; retry in {retry_after} s",
                headers={"Retry-After": retry_after},
            )
            await problem.to_response()(scope, receive, send)
            return

        async def count_failure(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.buckets.take(key, time.monotonic())
            await send(message)

        await self.app(scope, receive, count_failure)


def _client(scope: Scope) -> str:
    """The authenticated principal (gateway/auth.py) if any, else the client address."""
    principal = scope.get("logway.principal")
    if principal is not None:
        return f"principal:{principal}"
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _is_stream(scope: Scope) -> bool:
    return scope["method"] in ("GET", "HEAD") and scope["path"].endswith("/events")


async def _refuse(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    """The problem, or for an EventSource's stream the 200 that makes it retry later."""
    if _is_stream(scope) and names_sse(Headers(scope=scope).get("accept")):
        response = retry_later(problem)
    else:
        response = problem.to_response()
    await response(scope, receive, send)


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_streams = settings.max_streams
        self.max_streams_per_client = settings.max_streams_per_client
        self.buckets = (
            TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
            if settings.rate_limit_per_s > 0
            else None
        )
        self.open_streams = 0
        self.streams_by_client: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or (self.buckets is None and not _is_stream(scope))  # nothing to check
            or scope["path"].removeprefix(scope.get("root_path", "")) in UNLIMITED_PATHS
        ):
            await self.app(scope, receive, send)
            return
        client = _client(scope)
        if self.buckets is not None:
            wait_s = self.buckets.take(client, time.monotonic())
            if wait_s > 0:
                retry_after = _retry_after(wait_s)
                problem = Problem(
                    "rate-limited",
                    f"more than {self.buckets.rate_per_s:g} requests per second; "
                    f"retry in {retry_after} s",
                    headers={"Retry-After": retry_after},
                )
                await _refuse(problem, scope, receive, send)
                return
        if not _is_stream(scope):
            await self.app(scope, receive, send)
            return
        refusal = self._admit_stream(client)
        if refusal is not None:
            await _refuse(refusal, scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_streams -= 1
            left = self.streams_by_client[client] - 1
            if left:
                self.streams_by_client[client] = left
            else:
                del self.streams_by_client[client]

    def _admit_stream(self, client: str) -> Problem | None:
        if self.open_streams >= self.max_streams:
            return Problem(
                "stream-capacity",
                f"this gateway has {self.max_streams} streams open; try again or another one",
                headers={"Retry-After": "1"},
            )
        mine = self.streams_by_client.get(client, 0)
        if 0 < self.max_streams_per_client <= mine:
            return Problem(
                "too-many-streams",
                f"at most {self.max_streams_per_client} open streams per client",
                headers={"Retry-After": "1"},
            )
        self.open_streams += 1
        self.streams_by_client[client] = mine + 1
        return None
