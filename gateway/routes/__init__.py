"""The HTTP API's routes, and the per-app state they share (`Context`).

Each module holds one resource: `topics`, `produce`, `pull`, `streams`, `groups`, `ops`,
`console` (the web console's static files).
Handlers get the `Context` from `context(request)` and raise `Problem`s or let storage
errors escape; `gateway.problems` turns those into responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.groups import ConsumerGroups
from gateway.observe import Metrics
from gateway.partitioner import Partitioner
from gateway.problems import Problem
from gateway.settings import Settings
from gateway.streaming import ChunkCache, StreamRegistry
from storage.backend import Backend


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(slots=True)
class Context:
    """What the routes of one app share: settings, the backend, open streams, locks."""

    settings: Settings
    backend: Backend
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    partitioner: Partitioner = field(default_factory=Partitioner)
    idempotency_locks: KeyedLocks = field(default_factory=KeyedLocks)
    chunks: ChunkCache = field(default_factory=ChunkCache)
    metrics: Metrics = field(default_factory=Metrics)
    groups: ConsumerGroups | None = None  # set by create_app; None only in hand-built contexts


def context(request: Request) -> Context:
    return app_context(request.app)


def app_context(app: Starlette) -> Context:
    """The app's Context, for handlers that get an ASGI scope (`scope["app"]`) and no Request."""
    ctx: Context | None = getattr(app.state, "logway", None)
    if ctx is None:
        raise Problem(
            "storage-unavailable", "the gateway is starting", headers={"Retry-After": "1"}
        )
    return ctx


Handler = Callable[[Request], Awaitable[Response]]


def resource(path: str, **handlers: Handler) -> Route:
    """One route per path with a handler per method, so a 405 lists every allowed method."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))


def routes() -> Iterator[BaseRoute]:
    """Every route of the API, in matching order."""
    from gateway.routes import console, groups, ops, produce, pull, streams, topics

    # produce first: it is the hot path, and the router tries routes in order
    for module in (produce, ops, topics, pull, streams, groups, console):
        yield from module.ROUTES
