"""Run the ASGI app under Granian or Hypercorn, in this one process, until SIGTERM/SIGINT.

One process owns the embedded log, so there is exactly one worker: this process. The app
is created here and both servers run it on this process's asyncio loop (Granian through
its embedded server, Hypercorn through `hypercorn.asyncio.serve`). Both serve HTTP/1.1 and
cleartext HTTP/2 with prior knowledge on the same port, and h2 over TLS via ALPN when a
certificate is given.

Shutdown on the first SIGTERM or SIGINT, bounded by `settings.shutdown_timeout_s`:

1. stop accepting connections and call `begin_shutdown`, which ends every open SSE/NDJSON
   stream with a clean end of response, so clients reconnect and resume from their cursor;
2. let in-flight requests (produces waiting for their fsync) finish, for at most
   `_DRAIN_SHARE` of the bound; neither server would ever end an infinite stream itself
   (Granian waits for it forever, Hypercorn until its graceful timeout);
3. run the app's lifespan shutdown, which closes the backend (flush, fsync) — only after
   the last in-flight request has finished (`_DrainBeforeLifespanShutdown`). Hypercorn
   runs it after its graceful timeout; under Granian we run the lifespan ourselves as soon
   as it stops accepting, because Granian would wait for every connection to close first;
4. exit 0. A watchdog exits 1 if the bound passes first, and a second signal exits 1 at
   once. With `--fsync always` every acknowledged record is durable before its answer, so
   even a hard exit loses none; with `interval` or `never` step 3 is what saves the tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.connections import (
    ConnectionGuard,
    DescriptorShortage,
    GuardedListener,
    measure_budget,
    raise_fd_limit,
)
from gateway.process import tune_for_serving
from gateway.settings import Settings

logger = logging.getLogger("logway.server")

SERVERS = ("granian", "hypercorn")
LISTEN_BACKLOG = 1024  # accept bursts: thousands of EventSources reconnecting after a restart
# Granian allocates with jemalloc, which pads every allocation of 16 KiB or more with a page
# to start it at a random cache line ("cache-oblivious" layout). hyper's read buffer of each
# HTTP/1.1 connection is one (http=auto reads the first 24 bytes apart, then grows the 8 KiB
# buffer to 16 KiB): 4 KB more RSS per idle HTTP/1.1 stream (bench/RESULTS.md, memory).
# jemalloc reads this when Granian's Rust code first allocates, so it is set before Granian
# is imported; a value the operator set wins.
GRANIAN_MALLOC_CONF = ("_RJEM_MALLOC_CONF", "cache_oblivious:false")
# Once the log is closed, how long Granian may go on closing connections (flushing the
# last answers) before the process leaves; idle HTTP/2 clients would hold it to the bound.
_CONNECTION_CLOSE_GRACE_S = 1.0
_DRAIN_SHARE = 0.7
_TICK_S = 0.25
_STREAM_END_GRACE_S = 0.5  # Granian: between ending the streams and refusing connections
_FLUSH_S = 0.05  # of shutdown_timeout_s for in-flight requests; the rest closes the log

ShutdownTrigger = Callable[[], Coroutine[Any, Any, None]]


def run(app: ASGIApp, settings: Settings, begin_shutdown: Callable[[], None]) -> int:
    """Serve any ASGI app with the shutdown sequence above (also used by bench baselines).

    Returns the exit code; under Granian the process exits with it instead (see below).
    """
    if settings.server not in SERVERS:
        raise ValueError(f"unknown server {settings.server!r}; expected one of {SERVERS}")
    try:
        _check_can_listen(settings.host, settings.port)
    except OSError as error:
        logger.error(
            "cannot listen on %s port %d: %s", settings.host, settings.port, error.strerror
        )
        return 1
    scheme = "https" if settings.certfile is not None else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    h2 = "HTTP/2 over TLS" if settings.certfile is not None else "cleartext HTTP/2 (h2c)"
    logger.info(
        "listening on %s://%s:%d (%s: HTTP/1.1 and %s)",
        scheme,
        host,
        settings.port,
        settings.server.capitalize(),
        h2,
    )
    before, after = raise_fd_limit()
    if after != before:
        logger.info("raised the open-files limit from %d to %d", before, after)
    tune_for_serving()
    returncode = asyncio.run(_run(app, settings, begin_shutdown))
    if settings.server == "granian":
        _leave_process(returncode)
    return returncode


def _check_can_listen(host: str, port: int) -> None:
    """Fail before the log is opened: Hypercorn binds only after the lifespan startup."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def _leave_process(returncode: int) -> NoReturn:
    """Exit without interpreter finalization, once everything of ours is closed.

    Granian's Rust runtime threads can still be winding down while Python finalizes; one
    of 12 TLS shutdowns died there with a Rust "panic in a function that cannot unwind".
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(returncode)


class _DrainBeforeLifespanShutdown:
    """Hold the app's lifespan shutdown back until no HTTP request is in flight.

    The lifespan shutdown closes the backend; a produce still waiting for its fsync must
    get its answer first. The wait ends at `deadline` (monotonic) at the latest.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0
        self.deadline = float("inf")
        self._idle: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._receive_after_drain(receive), send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()

    def _receive_after_drain(self, receive: Receive) -> Receive:
        async def receive_lifespan() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.wait_idle(self.deadline)
                if self.in_flight:
                    logger.warning("closing the log with %d requests running", self.in_flight)
            return message

        return receive_lifespan

    async def wait_idle(self, deadline: float) -> None:
        """Until no request is in flight, or the monotonic `deadline`."""
        self._idle = asyncio.Event()
        while self.in_flight > 0:
            self._idle.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), remaining)


def _exit_now(reason: str) -> None:
    logger.error("%s: exiting now, without closing the log", reason)
    logging.shutdown()
    os._exit(1)


class _Shutdown:
    """The stop request and its deadlines, shared by the signal handler and the runners."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.requested = asyncio.Event()
        self.exit_deadline = float("inf")  # monotonic; the watchdog fires at it

    def request(self, reason: str) -> None:
        logger.info("%s: shutting down within %.1f s", reason, self.timeout_s)
        self.exit_deadline = time.monotonic() + self.timeout_s
        watchdog = threading.Timer(
            self.timeout_s, _exit_now, (f"shutdown took longer than {self.timeout_s} s",)
        )
        watchdog.daemon = True
        watchdog.start()
        self.requested.set()

    def remaining_s(self, margin_s: float = 0.0) -> float:
        return max(0.0, self.exit_deadline - margin_s - time.monotonic())


async def _run(app: ASGIApp, settings: Settings, begin_shutdown: Callable[[], None]) -> int:
    loop = asyncio.get_running_loop()
    shutdown = _Shutdown(settings.shutdown_timeout_s)
    drained_app = _DrainBeforeLifespanShutdown(app)

    def on_signal(signum: signal.Signals) -> None:
        if shutdown.requested.is_set():
            _exit_now(f"second {signum.name}")
        drained_app.deadline = time.monotonic() + _DRAIN_SHARE * settings.shutdown_timeout_s
        shutdown.request(signum.name)

    _install_signal_handlers(loop, on_signal)
    ticker = asyncio.create_task(_tick())
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    guard = ConnectionGuard(settings, family)
    guarding = asyncio.create_task(guard.run()) if ConnectionGuard.supported() else None

    async def shutdown_trigger() -> None:
        await shutdown.requested.wait()
        try:
            begin_shutdown()
        except Exception:
            logger.exception("ending open streams failed; they end when the server stops")

    try:
        if settings.server == "granian":
            await _serve_granian(drained_app, settings, shutdown_trigger, shutdown, guard)
        else:
            await _serve_hypercorn(drained_app, settings, shutdown_trigger, guard)
    except DescriptorShortage as exc:
        logger.error("%s", exc)
        return 1
    except Exception:
        logger.exception("the %s server failed", settings.server)
        return 1
    finally:
        ticker.cancel()
        if guarding is not None:
            guarding.cancel()
    if not shutdown.requested.is_set():
        logger.error("the %s server stopped without being asked to", settings.server)
        return 1
    logger.info("stopped cleanly")
    return 0


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, on_signal: Callable[[signal.Signals], None]
) -> None:
    """SIGTERM/SIGINT handlers that cannot be lost under load.

    Not `loop.add_signal_handler`: asyncio dispatches signals through its self-pipe, which
    Granian's threads fill with `call_soon_threadsafe` wake-ups under load; a signal that
    arrives then is dropped ("Exception ignored when trying to write to the signal wakeup
    fd: BlockingIOError", seen with 1,000 SSE streams) and the process never stops. A
    Python-level handler instead runs on the main thread at its next bytecode: at once if
    the signal interrupts the loop's wait, within `_TICK_S` otherwise (see `_tick`).
    """

    def handler(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(on_signal, signal.Signals(signum))

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


async def _tick() -> None:
    """Wake the main thread now and then, so a pending signal handler always gets to run."""
    while True:  # noqa: ASYNC110  # waking up is the point; there is no event to wait for
        await asyncio.sleep(_TICK_S)


class Lifespan:
    """Runs an ASGI app's lifespan protocol (startup, later shutdown) as a task of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        self._task = asyncio.create_task(self._run_app({**scope, "state": {}}))
        await self._exchange("lifespan.startup")

    async def shutdown(self) -> None:
        await self._exchange("lifespan.shutdown")

    async def _run_app(self, scope: Scope) -> None:
        await self.app(scope, self._to_app.get, self._from_app.put)

    async def _exchange(self, message_type: str) -> None:
        assert self._task is not None
        await self._to_app.put({"type": message_type})
        answer = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({answer, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            self._task.result()  # raises what ended the lifespan
            raise RuntimeError(f"the app's lifespan ended before answering {message_type}")
        reply = answer.result()
        if reply["type"] != f"{message_type}.complete":
            raise RuntimeError(f"{message_type} failed: {reply.get('message', '')}")


async def _serve_granian(
    app: _DrainBeforeLifespanShutdown,
    settings: Settings,
    shutdown_trigger: ShutdownTrigger,
    shutdown: _Shutdown,
    guard: ConnectionGuard,
) -> None:
    """Granian's embedded server: its Rust HTTP stack on this process's asyncio loop.

    `http=auto` answers HTTP/1.1 and detects the h2 preface (prior knowledge) on the same
    cleartext port; with a certificate it negotiates h2 or http/1.1 by ALPN.

    The lifespan is run here, not by Granian: Granian would start the lifespan shutdown
    only once every connection has closed, and its HTTP/2 graceful close waits for the
    client to answer a PING after GOAWAY, which an idle client (httpx, a dead peer) never
    does. So: stop accepting, drain requests, close the log, then give the connections
    a moment (at most what is left of the bound) and leave.

    Connections are capped in total by `backpressure`, a semaphore each connection holds
    for its life (not per request, whatever its name says): set once the log is open, to
    the descriptors left for connections (gateway/connections.py).
    """
    os.environ.setdefault(*GRANIAN_MALLOC_CONF)
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings, HTTP2Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    lifespan = Lifespan(app)
    await lifespan.startup()
    try:
        guard.budget = measure_budget(settings)
    except DescriptorShortage:
        await lifespan.shutdown()
        raise
    # Granian's own INFO lines (start, bind, worker spawn) repeat what `run` logged; they
    # show with --log-level debug.
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    server = Server(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGINL,  # no lifespan: see above
        http=HTTPModes.auto,
        websockets=False,
        backlog=LISTEN_BACKLOG,
        backpressure=guard.budget.connections,
        # hyper's HTTP/1.1 read buffer keeps Granian's 408 KiB: it holds bodies too, and
        # at 64 KiB batch produce took 10% more CPU (bench/RESULTS.md, security); an
        # HTTP/1.1 head costs what was sent, so there is nothing to amplify.
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.request_head_timeout_s * 1000)
        ),
        http2_settings=HTTP2Settings(
            max_concurrent_streams=settings.h2_max_concurrent_streams,
            max_headers_size=settings.max_request_head_bytes,
        ),
        ssl_cert=settings.certfile,
        ssl_key=settings.keyfile,
        ssl_protocol_min=SSLProtocols.tls12,
        log_level=LogLevels.debug if debug else LogLevels.warning,
    )
    logging.getLogger("_granian").addFilter(_drop_embedded_notice)  # Server() set its logging up
    serving = asyncio.create_task(server.serve())
    triggered = asyncio.create_task(shutdown_trigger())
    try:
        await asyncio.wait({serving, triggered}, return_when=asyncio.FIRST_COMPLETED)
        # Let the streams begin_shutdown ended send their last frame before Granian's GOAWAY
        # (and the PING after it, which python-hyper/h2 clients reject, h2 issue #1199).
        await app.wait_idle(time.monotonic() + _STREAM_END_GRACE_S)
        await asyncio.sleep(_FLUSH_S)  # the last frames are written by Granian's own threads
        server.stop()  # type: ignore[no-untyped-call]  # granian leaves it unannotated
    finally:
        triggered.cancel()
        await lifespan.shutdown()  # waits for in-flight requests, then closes the log
    if not serving.done():
        grace_s = min(_CONNECTION_CLOSE_GRACE_S, shutdown.remaining_s(margin_s=0.5))
        done, _ = await asyncio.wait({serving}, timeout=grace_s)
        if not done:
            logger.info("closing the connections still open (idle HTTP/2 clients)")
            return
    serving.result()


def _drop_embedded_notice(record: logging.LogRecord) -> bool:
    """Granian warns "Embedded server is experimental!" at every start, unconditionally.

    The embedded server is how one process serves HTTP on the same asyncio loop that owns the
    log (README, "Why Granian's embedded server"); the warning alarms users about a choice
    that is ours, so this one line is dropped and every other Granian message is kept.
    """
    return record.getMessage() != "Embedded server is experimental!"


async def _serve_hypercorn(
    app: ASGIApp, settings: Settings, shutdown_trigger: ShutdownTrigger, guard: ConnectionGuard
) -> None:
    """Hypercorn on this loop. Its h11 protocol switches to h2 on the prior-knowledge preface.

    Hypercorn creates its listening sockets after the lifespan startup (the log is open
    then), through `Config.create_sockets`: there the budget is measured and the sockets
    become `GuardedListener`s, which reset connections beyond it.
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config, Sockets
    from hypercorn.typing import ASGIFramework

    class GuardedConfig(Config):
        def create_sockets(self) -> Sockets:
            sockets = super().create_sockets()
            guard.budget = measure_budget(settings)
            ceiling = guard.budget.fd_ceiling
            return Sockets(
                [GuardedListener.wrap(s, ceiling) for s in sockets.secure_sockets],
                [GuardedListener.wrap(s, ceiling) for s in sockets.insecure_sockets],
                sockets.quic_sockets,
            )

    config = GuardedConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    if settings.certfile is not None and settings.keyfile is not None:
        config.certfile = str(settings.certfile)
        config.keyfile = str(settings.keyfile)
    config.h2_max_concurrent_streams = settings.h2_max_concurrent_streams
    config.h2_max_header_list_size = settings.max_request_head_bytes
    config.h11_max_incomplete_size = settings.max_request_head_bytes
    # Hypercorn's idle timer runs from a connection's start and between its requests, over
    # a partial head too: the same bound as Granian's header_read_timeout.
    config.keep_alive_timeout = settings.request_head_timeout_s
    config.ssl_handshake_timeout = settings.request_head_timeout_s
    config.backlog = LISTEN_BACKLOG
    # Hypercorn closes a connection after 1,000 requests by default; Granian never does, and
    # a producer or a page's h2 connection gains nothing from being cut periodically.
    config.keep_alive_max_requests = 1_000_000
    config.graceful_timeout = _DRAIN_SHARE * settings.shutdown_timeout_s
    config.shutdown_timeout = (1 - _DRAIN_SHARE) * settings.shutdown_timeout_s
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    await hypercorn_serve(
        cast(ASGIFramework, app), config, shutdown_trigger=shutdown_trigger, mode="asgi"
    )
