"""SaslAuthenticate with PLAIN (RFC 4616): the password is an API key or a JWT, checked
by the gateway's own authenticator, so a Kafka client has exactly the permissions that
credential has over HTTP. The user name is only logged.

A JWT's expiry becomes the session lifetime (KIP-368): the client re-authenticates on the
same connection before it, and a request after it closes the connection, as Kafka does.
A failed authentication is answered, then the connection is closed (Kafka does the same),
and it counts against the client's address (gateway/kafka/admission.py, `SaslFailures`).
"""

from __future__ import annotations

import logging
import math
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
    """Authenticate the session with a PLAIN message; the reason when that fails.

    A failure ends the connection once answered, as in Kafka, and counts against the
    client's address; while its address has failed too often, the credential is not even
    looked at.
    """
    if session.mechanism is None or broker.authenticator is None:
        return "SaslHandshake must come first"
    now = time.monotonic()
    wait_s = broker.sasl_failures.wait_s(session.host, now)
    if wait_s > 0:
        session.authentication_failed = True
        logger.info("SASL/PLAIN from %s refused: too many failures", session.peer)
        return (
            "too many failed authentications from this address; "
            f"retry in {max(1, math.ceil(wait_s))} s"
        )
    try:
        user, password = _plain(token)
        principal = broker.authenticator.authenticate(password)
    except (ValueError, Problem) as exc:
        detail = exc.detail if isinstance(exc, Problem) else str(exc)
        logger.info("SASL/PLAIN from %s refused: %s", session.peer, detail)
        broker.sasl_failures.failed(session.host, now)
        session.authentication_failed = True
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
