"""Raw JetStream API requests over one NATS connection, with NATS failures mapped to
storage errors. The only module here that calls nats-py's client.

- `call("STREAM.INFO.x", {...})`: a `$JS.API.*` request; an error reply raises ApiError,
  which callers turn into a public StorageError with `public_error` where they catch it.
- `request(subject, payload, headers)`: a core request (a publish that wants its PubAck,
  a KV write); no responders raises NoStream, since a stream's subject without a stream
  has no one listening.
- `publish_batch`: an ADR-50 atomic batch (nats-server 2.12+, streams with allow_atomic).
- `direct_get`: a batch direct get, answered on one inbox subscription shared by all
  requests (a status message ends each answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import ParseResult

import nats
import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy
from nats.nuid import NUID

from storage.errors import (
    DiskFull,
    StorageClosed,
    StorageError,
    StorageUnavailable,
    StorageWriteError,
)
from storage.jetstream.codec import batch_headers

log = logging.getLogger(__name__)

# ADR-50: the server refuses atomic batches of more than 1000 messages.
MAX_ATOMIC_BATCH = 1000
INITIAL_CONNECT_ATTEMPTS = 2  # per server
# A connection that stops answering PINGs (a half-open socket, or a nats-py read loop that
# died while the client still says "connected") is replaced after about three intervals,
# not after nats-py's default of six minutes.
PING_INTERVAL_S = 5
MAX_OUTSTANDING_PINGS = 2

# JetStream API error codes (server/errors.json).
ERR_STREAM_NOT_FOUND = 10059
ERR_NO_MESSAGE = 10037
ERR_WRONG_LAST_SEQUENCE = (10071, 10164)
ERR_INSUFFICIENT_RESOURCES = 10023
ERR_STORAGE_RESOURCES_EXCEEDED = 10047
ERR_BATCH_TOO_LARGE = 10199
ERR_BATCH_DUPLICATE_MSG_ID = 10201
ERR_MSG_ID_IN_PROCESS = 10158

Message = tuple[bytes, dict[str, str]]  # payload and headers


class ApiError(StorageError):
    """A JetStream API error reply; converted to a public StorageError where it is caught."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {err_code} ({code}): {description}")
        self.code = code
        self.err_code = err_code
        self.description = description


class NoStream(StorageError):
    """The partition's stream does not answer: deleted, or not created yet."""


def public_error(exc: ApiError) -> StorageError:
    """The StorageError an API error means to callers of the backend."""
    if exc.err_code in (ERR_INSUFFICIENT_RESOURCES, ERR_STORAGE_RESOURCES_EXCEEDED):
        return DiskFull(exc.description)
    if exc.code >= 500 or exc.code == 408:
        return StorageUnavailable(str(exc))
    return StorageWriteError(str(exc))


def pub_ack(reply: Msg) -> dict[str, Any]:
    """The PubAck of a publish request; an error reply raises ApiError."""
    response: dict[str, Any] = orjson.loads(reply.data)
    error = response.get("error")
    if error:
        raise ApiError(
            int(error.get("code", 500)), int(error.get("err_code", 0)), error.get("description", "")
        )
    return response


class JetStreamApi:
    """One NATS connection and the requests logway makes on it. Create with `await
    JetStreamApi.connect(...)`."""

    def __init__(self, nc: Client, timeout_s: float) -> None:
        self._nc = nc
        self._timeout_s = timeout_s
        self._inbox_prefix = nc.new_inbox()
        self._inbox_queues: dict[str, asyncio.Queue[Msg]] = {}
        self._inbox_tokens = itertools.count()
        self._nuid = NUID()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        servers: list[str],
        *,
        request_timeout_s: float,
        connect_timeout_s: float,
        on_reconnected: Callable[[], None],
    ) -> JetStreamApi:
        """Connect, failing fast if no server answers; once connected, reconnect forever
        and call `on_reconnected` after each reconnect."""

        async def reconnected() -> None:
            on_reconnected()

        async def on_error(exc: Exception) -> None:
            log.warning("NATS connection error: %r", exc)

        try:
            nc = await nats.connect(
                servers,
                name="logway",
                connect_timeout=connect_timeout_s,
                allow_reconnect=True,
                max_reconnect_attempts=INITIAL_CONNECT_ATTEMPTS,
                reconnect_time_wait=0.25,
                ping_interval=PING_INTERVAL_S,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                reconnected_cb=reconnected,
                error_cb=on_error,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"cannot connect to NATS at {servers}: {exc!r}") from exc
        # Give up on a first connect that fails, but once connected, reconnect forever.
        nc.options["max_reconnect_attempts"] = -1
        return cls(nc, request_timeout_s)

    async def start(self) -> None:
        """Subscribe the inbox that direct gets are answered on."""
        await self._nc.subscribe(self._inbox_prefix + ".*", cb=self._on_inbox)

    async def close(self) -> None:
        self._closed = True
        with contextlib.suppress(nats.errors.Error):
            await self._nc.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def is_connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def connected_url(self) -> ParseResult | None:
        """The server this connection talks to now (None while disconnected)."""
        url: ParseResult | None = self._nc.connected_url
        return url

    def check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the backend is closed")

    async def request(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> Msg:
        """A core request with NATS failures mapped: no responders means no such stream."""
        self.check_open()
        try:
            return await self._nc.request(
                subject, payload, timeout=self._timeout_s, headers=headers
            )
        except nats.errors.NoRespondersError as exc:
            raise NoStream(subject) from exc
        except nats.errors.MaxPayloadError as exc:
            raise StorageWriteError(f"a record exceeds the NATS max_payload: {exc}") from exc
        except nats.errors.TimeoutError as exc:
            raise StorageUnavailable(
                f"no reply from JetStream on {subject} (outcome unknown)"
            ) from exc
        except nats.errors.ConnectionClosedError as exc:
            raise StorageClosed("the NATS connection is closed") from exc
        except nats.errors.Error as exc:
            raise StorageUnavailable(f"NATS request on {subject} failed: {exc!r}") from exc

    async def call(
        self, operation: str, payload: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A JetStream API request; error replies raise ApiError."""
        subject = f"$JS.API.{operation}"
        try:
            reply = await self.request(subject, orjson.dumps(payload) if payload else b"")
        except NoStream as exc:
            raise StorageUnavailable("JetStream is not available (no responders)") from exc
        response: dict[str, Any] = orjson.loads(reply.data)
        error = response.get("error")
        if error:
            raise ApiError(
                int(error.get("code", 500)),
                int(error.get("err_code", 0)),
                error.get("description", ""),
            )
        return response

    async def publish_batch(self, subject: str, messages: Sequence[Message]) -> dict[str, Any]:
        """ADR-50: the first message is a request (the server starts the batch or refuses),
        the middle ones are plain publishes, the last commits and gets the PubAck."""
        batch_id = self._nuid.next().decode()
        count = len(messages)
        payload, headers = messages[0]
        reply = await self.request(subject, payload, headers | batch_headers(batch_id, 0, count))
        if reply.data:
            pub_ack(reply)  # an error reply refuses the batch
        try:
            for index in range(1, count - 1):
                payload, headers = messages[index]
                await self._nc.publish(
                    subject, payload, headers=headers | batch_headers(batch_id, index, count)
                )
        except nats.errors.MaxPayloadError as exc:
            raise StorageWriteError(f"a record exceeds the NATS max_payload: {exc}") from exc
        except nats.errors.Error as exc:
            raise StorageUnavailable(f"batch publish failed, nothing written: {exc!r}") from exc
        payload, headers = messages[-1]
        reply = await self.request(
            subject, payload, headers | batch_headers(batch_id, count - 1, count)
        )
        return pub_ack(reply)

    async def direct_get(self, stream: str, request: Mapping[str, Any]) -> list[Msg]:
        """A batch direct get: messages stream to our shared inbox, ending in a status.
        A stream without a leader or replica to answer (503) raises NoStream."""
        self.check_open()
        token = str(next(self._inbox_tokens))
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._inbox_queues[token] = queue
        messages: list[Msg] = []
        try:
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{stream}",
                orjson.dumps(request),
                reply=f"{self._inbox_prefix}.{token}",
            )
            async with asyncio.timeout(self._timeout_s):
                while True:
                    msg = await queue.get()
                    status = (msg.headers or {}).get("Status")
                    if status is None:
                        messages.append(msg)
                        continue
                    if status in ("204", "404"):
                        return messages
                    if status == "503":
                        raise NoStream(stream)
                    raise StorageUnavailable(f"direct get on {stream} answered {status}")
        except TimeoutError as exc:
            raise StorageUnavailable(f"no reply to a direct get on {stream}") from exc
        except nats.errors.Error as exc:
            raise StorageUnavailable(f"direct get on {stream} failed: {exc!r}") from exc
        finally:
            del self._inbox_queues[token]

    async def _on_inbox(self, msg: Msg) -> None:
        queue = self._inbox_queues.get(msg.subject.rsplit(".", 1)[-1])
        if queue is not None:
            queue.put_nowait(msg)

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> Subscription:
        """A core subscription: `cb` gets each message published on `subject`."""
        return await self._nc.subscribe(subject, cb=cb)

    async def subscribe_new(
        self, subject: str, stream: str, cb: Callable[[Msg], Awaitable[None]]
    ) -> Subscription:
        """Messages `stream` stores on `subject` from now on, in order: an ordered push
        consumer (the server pushes, and after a reconnect the client resumes it)."""
        try:
            return await self._nc.jetstream().subscribe(
                subject,
                stream=stream,
                cb=cb,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                idle_heartbeat=2.0,
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise StorageUnavailable(f"cannot watch {subject}: {exc!r}") from exc


async def unsubscribe(subscription: Subscription) -> None:
    """Unsubscribe; a connection already gone has nothing left to unsubscribe."""
    with contextlib.suppress(nats.errors.Error):
        await subscription.unsubscribe()
