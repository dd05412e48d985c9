"""What the routes of one app share (`Context`), and how a handler finds it."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request

from gateway.groups.service import ConsumerGroups
from gateway.http.observe import Metrics
from gateway.http.problems import Problem
from gateway.produce.idempotency import KeyedLocks
from gateway.produce.partitioner import Partitioner
from gateway.schemas.registry import SchemaCache
from gateway.settings import Settings
from gateway.streams.formats import ChunkCache
from gateway.streams.log_stream import StreamRegistry
from storage.backend import Backend


@dataclass(slots=True)
class Context:
    """Settings, the backend, the consumer groups, open streams, caches (stream chunks,
    compiled schemas) and metrics."""

    settings: Settings
    backend: Backend
    groups: ConsumerGroups
    metrics: Metrics
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    partitioner: Partitioner = field(default_factory=Partitioner)
    idempotency_locks: KeyedLocks = field(default_factory=KeyedLocks)
    chunks: ChunkCache = field(default_factory=ChunkCache)
    schemas: SchemaCache = field(default_factory=SchemaCache)


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
