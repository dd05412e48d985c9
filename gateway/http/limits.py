"""Admission limits checked before a request reaches its route: request rate and open streams.

- Rate: a token bucket per client (`rate_limit_per_s` refill, `rate_limit_burst` size);
  a request finding the bucket empty gets a 429 `rate-limited` problem with `Retry-After`
  (whole seconds until a token is back). The client is its address — after
  gateway/proxy.py, the address a trusted proxy forwarded. Operations endpoints
  (/healthz, /readyz, /metrics) are never limited, so probes and scrapes always get in.
- Streams: `GET .../events` requests count while they run; beyond `max_streams` in total
  a 503 `stream-capacity` (another gateway may have room), beyond `max_streams_per_client`
  (when set) for one client a 429 `too-many-streams`.

Rejections are answered here, before the body is read or storage is touched.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from starlette.types import ASGIApp, Receive, Scope, Send

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


def _client(scope: Scope) -> str:
    """The authenticated principal (gateway/auth.py) if any, else the client address."""
    principal = scope.get("logway.principal")
    if principal is not None:
        return f"principal:{principal}"
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _is_stream(scope: Scope) -> bool:
    return scope["method"] in ("GET", "HEAD") and scope["path"].endswith("/events")


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
                retry_after = max(1, math.ceil(wait_s))
                problem = Problem(
                    "rate-limited",
                    f"more than {self.buckets.rate_per_s:g} requests per second; "
                    f"retry in {retry_after} s",
                    headers={"Retry-After": str(retry_after)},
                )
                await problem.to_response()(scope, receive, send)
                return
        if not _is_stream(scope):
            await self.app(scope, receive, send)
            return
        refusal = self._admit_stream(client)
        if refusal is not None:
            await refusal.to_response()(scope, receive, send)
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
