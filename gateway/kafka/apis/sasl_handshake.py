"""SaslHandshake: PLAIN is the one mechanism, offered only when the gateway has auth on
(with auth off there is nothing to authenticate against, and a client configured for SASL
is told so rather than let in).

After a v1 handshake the token comes in a SaslAuthenticate request; after v0 (which
librdkafka requires the broker to offer) it comes as one bare frame, `size(4) token`,
answered by an empty frame (`Session.raw_sasl`, handled by the server).
"""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode

PLAIN = "PLAIN"


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    mechanisms = [PLAIN] if broker.authenticator is not None else []
    if request.body["mechanism"] not in mechanisms:
        return {"error_code": ErrorCode.UNSUPPORTED_SASL_MECHANISM, "mechanisms": mechanisms}
    session.mechanism = PLAIN
    session.raw_sasl = request.version == 0
    return {"error_code": ErrorCode.NONE, "mechanisms": mechanisms}


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {"error_code": error, "mechanisms": []}


API = Api(ApiKey.SASL_HANDSHAKE, "SaslHandshake", 0, 1, handle, refuse, before_auth=True)
