"""Produce admission: one byte budget for the produce requests in flight, all clients.

A produce request holds memory from its first body byte until its answer: the body as it
arrives, the parsed records, then the encoded batch in its partition's write queue (on
JetStream, waiting for one of a partition's publish slots). Without a bound, a flood of
large batches under `fsync always` grows the gateway by 4-16 times the bytes of every
request waiting for the disk (bench/RESULTS.md, overload). So a produce request is admitted
only while the bytes of all admitted ones fit in `max_inflight_produce_bytes`:

- with a Content-Length, the request takes its declared length before a byte is read (the
  servers enforce the length, so the body cannot outgrow it);
- without one (chunked HTTP/1.1, HTTP/2 without the header) it takes its bytes as they
  arrive, and is refused at the chunk that does not fit;
- a request alone is always admitted, so a body larger than the budget (within
  max_body_bytes / max_ndjson_bytes) still goes through, by itself;
- a declared length beyond the body limits is passed to the route, whose answer is 413.

A refused request gets a 503 `produce-capacity` with Retry-After and changes nothing; its
body is read and dropped first (at most the body limits), so an HTTP/1.1 client still
writing it reads the answer instead of a reset connection. Its bytes come back when its
answer is sent (or it fails): the budget counts requests, not records in the log, so an
append a cancelled request left queued is not counted while it finishes.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.problems import Problem
from gateway.settings import Settings

RETRY_AFTER_S = 1  # a full budget drains in about one group commit per partition


class ByteBudget:
    """Bytes taken and given back; a taker that holds everything taken may always take."""

    __slots__ = ("in_use_bytes", "limit_bytes")

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError("the budget must be at least one byte")
        self.limit_bytes = limit_bytes
        self.in_use_bytes = 0

    def try_take(self, size: int, held: int = 0) -> bool:
        """Take `size` more bytes for a taker that holds `held`; False when they do not fit."""
        if self.in_use_bytes + size > self.limit_bytes and self.in_use_bytes != held:
            return False
        self.in_use_bytes += size
        return True

    def give_back(self, size: int) -> None:
        self.in_use_bytes -= size


def _is_produce(scope: Scope) -> bool:
    """POST /v1/topics/{topic}/records (after any root_path)."""
    if scope["method"] != "POST":
        return False
    path: str = scope["path"].removeprefix(scope.get("root_path", ""))
    return path.startswith("/v1/topics/") and path.endswith("/records") and path.count("/") == 4


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class ProduceAdmissionMiddleware:
    """Admits produce requests within the budget (module docstring); others pass."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.budget = ByteBudget(settings.max_inflight_produce_bytes)
        self.max_body_bytes = max(settings.max_body_bytes, settings.max_ndjson_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_produce(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_body_bytes:  # the route refuses it unread (413)
                await self.app(scope, receive, send)
                return
            if not self.budget.try_take(declared):
                await self._refuse(scope, receive, send)
                return
            try:
                await self.app(scope, receive, send)
            finally:
                self.budget.give_back(declared)
            return
        held = 0

        async def counted() -> Message:
            nonlocal held
            message = await receive()
            size = len(message.get("body", b""))
            if size:
                if not self.budget.try_take(size, held):
                    if message.get("more_body", False):
                        await self._drain(receive)
                    raise self._refusal()
                held += size
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            self.budget.give_back(held)

    def _refusal(self) -> Problem:
        return Problem(
            "produce-capacity",
            f"this gateway holds {self.budget.limit_bytes} bytes of produce requests in "
            f"flight (max_inflight_produce_bytes); retry after {RETRY_AFTER_S} s or use "
            "another gateway",
            headers={"Retry-After": str(RETRY_AFTER_S)},
            max_inflight_produce_bytes=self.budget.limit_bytes,
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._drain(receive)
        await self._refusal().to_response()(scope, receive, send)

    async def _drain(self, receive: Receive) -> None:
        """Read the rest of a refused body and drop it, at most max_body_bytes."""
        seen = 0
        while seen <= self.max_body_bytes:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            seen += len(message.get("body", b""))
