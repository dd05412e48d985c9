"""The streaming HTTP response that carries an SSE or NDJSON stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.streams.log_stream import Interruptible, StreamRegistry


def encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI response headers: lower-case names, latin-1."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class StreamResponse(Response):
    """A streaming response for SSE and NDJSON that costs no extra task per stream under
    Granian, one under Hypercorn.

    Against sse-starlette's EventSourceResponse (an anyio task group of four tasks per
    stream: body, ping, shutdown watcher, disconnect watcher: 35 KiB of app memory per idle
    stream) and against a watcher task of its own (bench/RESULTS.md, memory per idle
    stream). Heartbeats come from the stream itself (its wait on the log times out), server
    shutdown from `begin_shutdown` through `registry`, and the client going away from a
    callback on the pending `receive()`: Granian's receive returns a future, so nothing but
    that future waits; Hypercorn's is a coroutine and gets a task. A client that stops
    reading for `send_timeout_s` is dropped (the response ends without its final message,
    so the server resets the stream).
    """

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        *,
        raw_headers: list[tuple[bytes, bytes]],
        send_timeout_s: float,
        registry: StreamRegistry,
        stream: Interruptible,
        on_disconnect: Callable[[], None],
    ) -> None:
        self.chunks = chunks
        self.send_timeout_s = send_timeout_s
        self.registry = registry
        self.stream = stream
        self.on_disconnect = on_disconnect
        self.status_code = 200
        self.background = None
        self.raw_headers = raw_headers  # may be shared by many streams: sent as a copy
        self.disconnected = False
        self._receive: Receive | None = None
        self._pending: asyncio.Future[Message] | None = None

    def _watch(self) -> None:
        assert self._receive is not None
        self._pending = asyncio.ensure_future(self._receive())
        self._pending.add_done_callback(self._received)

    def _received(self, pending: asyncio.Future[Message]) -> None:
        if pending.cancelled():  # the response ended first
            return
        error = pending.exception()
        if error is None and pending.result()["type"] != "http.disconnect":
            self._watch()  # the (empty) request body: listen on
            return
        self.disconnected = True  # gone, or a receive that failed: nothing more to send
        self.on_disconnect()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = list(self.raw_headers)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            await self.chunks.aclose()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        self._receive = receive
        self._watch()
        self.registry.add(self.stream)
        try:
            async with aclosing(self.chunks) as chunks:
                async for chunk in chunks:
                    if self.disconnected:
                        return
                    try:
                        async with asyncio.timeout(self.send_timeout_s):
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                    except (TimeoutError, OSError):  # stalled, or gone (ASGI 2.4 servers)
                        return
            if not self.disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.registry.discard(self.stream)
            if self._pending is not None:
                self._pending.cancel()
