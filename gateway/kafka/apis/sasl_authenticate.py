"""SaslAuthenticate with PLAIN (RFC 4616): the password is an API key or a JWT, checked
by the gateway's own authenticator, so a Kafka client has exactly the permissions that
credential has over HTTP. The user name is only logged.

A JWT's expiry becomes the session lifetime (KIP-368): the client re-authenticates on the
same connection before it, and a request after it closes the connection, as Kafka does.
"""

from __future__ import annotations

import logging
import time

from gateway.http.problems import Problem
from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode

logger = logging.getLogger("logway.kafka")


def _plain(token: bytes) -> tuple[str, str]:
    """(user name, password) of a PLAIN message `authzid NUL authcid NUL passwd`."""
    parts = token.split(b"\x00")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ValueError("a SASL/PLAIN message is authzid NUL user NUL password")
    return parts[1].decode("utf-8"), parts[2].decode("utf-8")


def authenticate_plain(broker: Broker, session: Session, token: bytes) -> str | None:
    """Authenticate the session with a PLAIN message; the reason when that fails."""
    if session.mechanism is None or broker.authenticator is None:
        return "SaslHandshake must come first"
    try:
        user, password = _plain(token)
        principal = broker.authenticator.authenticate(password)
    except (ValueError, Problem) as exc:
        detail = exc.detail if isinstance(exc, Problem) else str(exc)
        logger.info("SASL/PLAIN from %s refused: %s", session.peer, detail)
        return detail
    session.principal = principal
    session.mechanism = None
    logger.debug("%s authenticated as %r (user %r)", session.peer, principal.name, user)
    return None


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    if session.mechanism is None:
        return refuse(request, ErrorCode.ILLEGAL_SASL_STATE, "SaslHandshake must come first")
    failure = authenticate_plain(broker, session, request.body["auth_bytes"])
    if failure is not None:
        return refuse(request, ErrorCode.SASL_AUTHENTICATION_FAILED, failure)
    lifetime_ms = 0
    expires_at = session.principal.expires_at if session.principal is not None else None
    if expires_at is not None:
        lifetime_ms = max(1, int((expires_at - time.time()) * 1000))
    return {"error_code": ErrorCode.NONE, "auth_bytes": b"", "session_lifetime_ms": lifetime_ms}


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {"error_code": error, "error_message": message, "auth_bytes": b""}


API = Api(ApiKey.SASL_AUTHENTICATE, "SaslAuthenticate", 0, 2, handle, refuse, before_auth=True)
