"""The ASGI app: `create_app(settings)` for servers, `begin_shutdown(app)` for their signals.

The app is server-agnostic (Granian and Hypercorn run it as is). Its lifespan opens the
backend the settings name (gateway/backends.py) unless one is passed in — then it uses that
one and leaves closing it to the caller — and on shutdown ends every open stream, then
closes the consumer groups (flushing their generations) before closing the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from starlette.applications import Starlette

from gateway.backends import membership_store, open_backend
from gateway.context import Context
from gateway.groups.service import ConsumerGroups
from gateway.http.middleware import middleware
from gateway.http.observe import Metrics
from gateway.http.problems import EXCEPTION_HANDLERS
from gateway.routes import routes
from gateway.routes.ops import openapi_document
from gateway.settings import Settings
from storage.backend import Backend

if TYPE_CHECKING:
    from gateway.kafka.server import KafkaListener


def create_app(settings: Settings, backend: Backend | None = None) -> Starlette:
    """The gateway app; with `backend` given it is ready at once (no lifespan needed)."""
    openapi_document()  # a missing or broken spec fails here, at startup, not as a 500 later

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned: Backend | None = None
        if backend is None:
            metrics = Metrics()
            owned = await open_backend(settings, on_fsync=metrics.observe_fsync)
            app.state.logway = _context(settings, owned, metrics)
        ctx: Context = app.state.logway
        kafka: KafkaListener | None = None
        try:
            if settings.kafka_port is not None:
                kafka = await start_kafka(ctx)
            yield
        finally:
            begin_shutdown(app)
            if kafka is not None:
                await kafka.close()
            await ctx.groups.close()
            if owned is not None:
                await owned.close()

    app = Starlette(
        routes=list(routes()),
        exception_handlers=dict(EXCEPTION_HANDLERS),
        middleware=middleware(settings),
        lifespan=lifespan,
    )
    if backend is not None:
        app.state.logway = _context(settings, backend)
    return app


async def start_kafka(ctx: Context) -> KafkaListener:
    """The Kafka listener (gateway.kafka, the kafka extra), loaded only when it is chosen."""
    from gateway.kafka.server import start_listener

    return await start_listener(ctx)


def _context(settings: Settings, backend: Backend, metrics: Metrics | None = None) -> Context:
    limit = backend.max_append_records
    if limit is not None and settings.max_records_per_request > limit:
        # A request is written whole or not at all, so it may not outgrow one atomic append.
        settings = replace(settings, max_records_per_request=limit)
    groups = ConsumerGroups(
        backend,
        membership_store(backend),
        session_timeout_s=settings.group_session_timeout_s,
        assignor=settings.group_assignor,
    )
    return Context(settings, backend, groups, metrics or Metrics())


def begin_shutdown(app: Starlette) -> None:
    """End every open stream and long poll now, cleanly; new ones are refused with a 503
    (an SSE client gets a stream that tells it when to come back: gateway/http/event_source.py).

    Synchronous and idempotent, so a signal handler can call it directly on the loop.
    """
    ctx: Context | None = getattr(app.state, "logway", None)
    if ctx is not None:
        ctx.streams.close_all()
