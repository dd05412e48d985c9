"""The Kafka listener: asyncio streams around the pure codec, on the gateway's own loop.

Each connection reads a frame (`size(4)` then the request) and runs its handler before
reading the next; a handler that answers `Later` (produce, once its appends are queued)
lets the next request in while its answer is made. A writer task sends the answers in
request order, as a Kafka broker does. What cannot be answered in the protocol's terms still gets a reason:

    a request the definitions cannot decode      answered INVALID_REQUEST when its
                                                 header is readable
    a version this broker does not serve         UNSUPPORTED_VERSION (ApiVersions: its
                                                 v0 answer listing what is served)
    a request before SASL when auth is on        the API's answer with
                                                 SASL_AUTHENTICATION_FAILED
    a handler that failed unexpectedly           UNKNOWN_SERVER_ERROR, logged
    a failed SASL authentication                 answered, then the connection is closed
    an API key nobody defines, a frame size      logged with the peer, then the
    beyond the limits, an expired session        connection is closed (there is no
                                                 answer a client could decode)

What a connection may cost is bounded (gateway/kafka/admission.py): connections per
client address and in total (reset at once beyond), the size of a frame (checked on its
size prefix, smaller before SASL), the time to a first request and between requests
(a watcher closes the connection), and failed SASL attempts per address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import resource
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

from gateway.connections import ResettingListener, kafka_connection_share
from gateway.context import Context
from gateway.http.auth import Authenticator, auth_enabled
from gateway.kafka.admission import Admission, ConnectionCaps, Deadline, FramesInFlight
from gateway.kafka.apis import APIS
from gateway.kafka.apis.api_versions import supported
from gateway.kafka.apis.sasl_authenticate import authenticate_plain
from gateway.kafka.dispatch import (
    ApiKey,
    Body,
    Broker,
    Later,
    Registered,
    Request,
    Session,
    registry,
)
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.service import GroupSettings, KafkaGroups
from gateway.kafka.protocol import UnknownApi, decode_request, encode_response, peek_head
from gateway.kafka.schema import MalformedMessage

logger = logging.getLogger("logway.kafka")

MAX_IN_FLIGHT = 16  # answers being made per connection (librdkafka sends up to 5 produces)
_FLUSH_S = 2.0  # a closing connection's answers in the making still go out within this
NODE_ID = 0
_SIZE_BYTES = 4
_BACKLOG = 1024


class _Close(Exception):
    """End the connection (after logging why)."""


class _AdmittingListener(ResettingListener):
    """Applies `ConnectionCaps` as connections are accepted: asyncio accepts up to the
    backlog of them before any connection's task runs, so caps checked in the task would
    let a burst hold that many descriptors for a moment. An admitted connection is
    remembered by descriptor until its task picks it up (`admitted`)."""

    caps: ConnectionCaps
    admitted: dict[int, str]  # descriptor -> the client address it was counted under

    @classmethod
    def wrap(cls, listener: socket.socket, caps: ConnectionCaps) -> _AdmittingListener:
        admitting = cls.adopt(listener)
        admitting.caps = caps
        admitting.admitted = {}
        return admitting

    def refusal(self, connection: socket.socket, address: Any) -> str | None:
        host = str(address[0])
        reason = self.caps.admit(host)
        if reason is None:
            self.admitted[connection.fileno()] = host
            return None
        return f"Kafka: {reason}"


class KafkaListener:
    """Serves the Kafka protocol for one gateway Context until `close`."""

    def __init__(self, broker: Broker, admission: Admission) -> None:
        self.broker = broker
        self.admission = admission
        self._server: asyncio.Server | None = None
        self._listener: _AdmittingListener | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self.broker.port

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as the HTTP side
        bound = socket.create_server((host, port), family=family, backlog=_BACKLOG)
        self._listener = _AdmittingListener.wrap(bound, self.admission.caps)
        self._server = await asyncio.start_server(
            self._serve, sock=self._listener, backlog=_BACKLOG
        )
        if port == 0:
            self.broker.port = self._server.sockets[0].getsockname()[1]
        logger.info("Kafka protocol listening on %s port %d", host, self.broker.port)

    async def close(self) -> None:
        """Stop accepting, let each connection finish the request it is running (bounded
        by the caller), and close every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.groups.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        assert self._listener is not None
        assert sock is not None
        # counted when accepted; a connection reset before its transport was made has no
        # peer name any more, so the address comes from the accept
        host = self._listener.admitted.pop(sock.fileno())
        try:
            await self._converse(reader, writer, writer.get_extra_info("peername"), host)
        finally:
            self.admission.caps.release(host)

    async def _converse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[object, ...] | None,
        host: str,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        session = Session(peer=f"{peer[0]}:{peer[1]}" if peer else host, host=host)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        deadline = self.admission.deadline(loop.time())
        watching = asyncio.ensure_future(_close_when_idle(deadline, session, writer))
        answers: asyncio.Queue[asyncio.Future[bytes | None]] = asyncio.Queue(MAX_IN_FLIGHT)
        sending = asyncio.ensure_future(_send_in_order(answers, writer, deadline))
        in_flight = FramesInFlight(self.admission.frames.authenticated_bytes)
        try:
            while not sending.done():
                size = int.from_bytes(await reader.readexactly(_SIZE_BYTES), "big", signed=True)
                refusal = self.admission.frames.refusal(size, self._authenticated(session))
                if refusal is not None:
                    raise _Close(refusal)
                await in_flight.take(size)
                frame = await reader.readexactly(size)
                deadline.answering += 1
                if session.raw_sasl:
                    answer = _done(self._raw_sasl(session, frame))
                else:
                    answer = await self.answer(session, frame)
                answer.add_done_callback(functools.partial(_give_back, in_flight, size))
                await answers.put(answer)
                deadline.active(loop.time(), set_up=self._authenticated(session))
                if session.authentication_failed:
                    raise _Close("SASL authentication failed")
        except _Close as reason:
            logger.warning("closing Kafka connection from %s: %s", session.peer, reason)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away, or the idle watcher closed the connection
        except asyncio.CancelledError:
            # `close` ends the connection: end normally, as asyncio's server callback (3.11)
            # logs a connection task that ends cancelled as an error
            pass
        finally:
            self._connections.discard(task)
            watching.cancel()
            # answers already being made (durable produces) still go out, briefly
            flushed = asyncio.ensure_future(answers.join())
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(
                    {flushed, sending}, timeout=_FLUSH_S, return_when=asyncio.FIRST_COMPLETED
                )
            flushed.cancel()
            sending.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def _authenticated(self, session: Session) -> bool:
        """Whether the session is past SASL (always, with auth off)."""
        return self.broker.authenticator is None or session.principal is not None

    async def answer(self, session: Session, frame: bytes) -> asyncio.Future[bytes | None]:
        """The answer frame to one request frame (None: a produce with acks=0), done or
        still being made (`Later`)."""
        answered = await self._answer(session, frame)
        return answered if isinstance(answered, asyncio.Future) else _done(answered)

    async def _answer(
        self, session: Session, frame: bytes
    ) -> bytes | asyncio.Future[bytes | None] | None:
        apis = self.broker.apis
        try:
            api_key, version, correlation_id = peek_head(frame)
        except MalformedMessage as exc:
            raise _Close(str(exc)) from None
        registered = apis.get(api_key)
        if registered is None:
            raise _Close(f"API key {api_key} is not one this broker knows")
        api = registered.api
        if not api.min_version <= version <= api.max_version:
            return self._unsupported(registered, frame, version, correlation_id)
        try:
            request = decode_request(frame, apis)
        except (MalformedMessage, UnknownApi) as exc:
            logger.info("malformed %s v%d from %s: %s", api.name, version, session.peer, exc)
            empty = Request(api_key, version, correlation_id, None, {})
            return self._encode(
                registered, empty, api.refuse(empty, ErrorCode.INVALID_REQUEST, str(exc))
            )
        principal = session.principal
        if self.broker.authenticator is not None and not api.before_auth:
            if principal is None:
                if not session.warned_unauthenticated:
                    session.warned_unauthenticated = True
                    logger.info(
                        "%s sent %s before authenticating: auth is on, the client needs SASL/PLAIN",
                        session.peer,
                        api.name,
                    )
                body = api.refuse(
                    request, ErrorCode.SASL_AUTHENTICATION_FAILED, "authenticate with SASL/PLAIN"
                )
                return self._encode(registered, request, body)
            if principal.expires_at is not None and principal.expires_at < time.time():
                raise _Close(f"the session of {principal.name!r} expired")
        try:
            answered = await api.handle(self.broker, session, request)
        except Exception as exc:
            logger.exception("%s v%d from %s failed", api.name, version, session.peer)
            answered = api.refuse(request, ErrorCode.UNKNOWN_SERVER_ERROR, str(exc))
        if isinstance(answered, Later):
            return asyncio.ensure_future(self._complete(registered, request, answered))
        if answered is None:
            return None
        return self._encode(registered, request, answered)

    async def _complete(
        self, registered: Registered, request: Request, later: Later
    ) -> bytes | None:
        api = registered.api
        try:
            body = await later.answer
        except Exception as exc:
            logger.exception("%s v%d failed", api.name, request.version)
            body = api.refuse(request, ErrorCode.UNKNOWN_SERVER_ERROR, str(exc))
        return None if body is None else self._encode(registered, request, body)

    def _raw_sasl(self, session: Session, token: bytes) -> bytes:
        """A bare SASL token after SaslHandshake v0: an empty frame when it is accepted;
        a refusal has no answer in this framing, so the connection is closed."""
        session.raw_sasl = False
        failure = authenticate_plain(self.broker, session, token)
        if failure is not None:
            raise _Close(f"SASL/PLAIN refused: {failure}")
        return b"\x00\x00\x00\x00"

    def _encode(self, registered: Registered, request: Request, body: Body) -> bytes:
        return encode_response(registered, request.version, request.correlation_id, body)

    def _unsupported(
        self, registered: Registered, frame: bytes, version: int, correlation_id: int
    ) -> bytes:
        """UNSUPPORTED_VERSION in a form the client can read. ApiVersions answers at v0 with
        the versions served (KIP-511), so a newer client can retry with one of them."""
        api = registered.api
        if api.key == ApiKey.API_VERSIONS:
            body = api.refuse(
                Request(api.key, 0, correlation_id, None, {}), ErrorCode.UNSUPPORTED_VERSION, None
            )
            body["api_keys"] = supported(self.broker)
            return encode_response(registered, 0, correlation_id, body)
        if version not in registered.response.valid:
            raise _Close(f"{api.name} v{version} is beyond every definition this broker has")
        try:
            request = decode_request(frame, self.broker.apis)
        except (MalformedMessage, UnknownApi):
            request = Request(api.key, version, correlation_id, None, {})
        message = f"{api.name} v{version}: this broker serves v{api.min_version}-v{api.max_version}"
        logger.info(message)
        return self._encode(
            registered, request, api.refuse(request, ErrorCode.UNSUPPORTED_VERSION, message)
        )


def _give_back(in_flight: FramesInFlight, size: int, _answer: asyncio.Future[bytes | None]) -> None:
    in_flight.give_back(size)


def _done(answer: bytes | None) -> asyncio.Future[bytes | None]:
    future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
    future.set_result(answer)
    return future


async def _send_in_order(
    answers: asyncio.Queue[asyncio.Future[bytes | None]],
    writer: asyncio.StreamWriter,
    deadline: Deadline,
) -> None:
    """Write each answer once it is made, in request order."""
    loop = asyncio.get_running_loop()
    while True:
        pending = await answers.get()
        try:
            answer = await pending
            if answer is not None:
                writer.write(answer)
                await writer.drain()
        finally:
            answers.task_done()
            deadline.answered(loop.time())


async def _close_when_idle(
    deadline: Deadline, session: Session, writer: asyncio.StreamWriter
) -> None:
    """Abort the connection once its deadline passes with no request (see `Deadline`).

    Aborting (not closing) drops what a client that stopped reading left unsent; the
    reader then sees the end of the stream and the connection ends as if the client left.
    """
    loop = asyncio.get_running_loop()
    while True:
        expires_at = deadline.expires_at()
        now = loop.time()
        if expires_at is not None and now >= expires_at:
            logger.info("closing Kafka connection from %s: %s", session.peer, deadline.reason())
            writer.transport.abort()
            return
        # while answering, look again after the shorter timeout (the answer restarts it)
        wait_s = min(deadline.setup_s, deadline.idle_s) if expires_at is None else expires_at - now
        await asyncio.sleep(wait_s)


def _cluster_id(backend: str) -> str:
    """A stable id in Kafka's form (22 characters of base64url) derived from the backend."""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f"logway:{backend}").bytes
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def advertised_host(ctx: Context) -> str:
    settings = ctx.settings
    if settings.kafka_advertised_host:
        return settings.kafka_advertised_host
    if settings.host in ("0.0.0.0", "::", ""):
        return socket.getfqdn()
    return settings.host


async def start_listener(
    ctx: Context, apis: Mapping[int, Registered] | None = None
) -> KafkaListener:
    """Open the Kafka listener the settings ask for (`kafka_port`) on this Context."""
    settings = ctx.settings
    assert settings.kafka_port is not None
    fd_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    admission = Admission.from_settings(settings, kafka_connection_share(settings, fd_limit))
    broker = Broker(
        ctx=ctx,
        apis=registry(APIS) if apis is None else apis,
        node_id=NODE_ID,
        host=advertised_host(ctx),
        port=settings.kafka_port,
        cluster_id=_cluster_id(settings.backend),
        authenticator=Authenticator(settings) if auth_enabled(settings) else None,
        sasl_failures=admission.sasl_failures,
        groups=KafkaGroups(
            ctx.groups,
            GroupSettings(
                settings.kafka_group_initial_rebalance_delay_ms,
                settings.kafka_group_min_session_timeout_ms,
                settings.kafka_group_max_session_timeout_ms,
            ),
        ),
    )
    listener = KafkaListener(broker, admission)
    await listener.start(settings.host, settings.kafka_port)
    return listener
