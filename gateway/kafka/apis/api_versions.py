"""ApiVersions: which APIs, at which versions, this broker serves (from the registry)."""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode


def supported(broker: Broker) -> list[Body]:
    return [
        {"api_key": key, "min_version": r.api.min_version, "max_version": r.api.max_version}
        for key, r in sorted(broker.apis.items())
    ]


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    return {"error_code": ErrorCode.NONE, "api_keys": supported(broker)}


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {"error_code": error}


API = Api(ApiKey.API_VERSIONS, "ApiVersions", 0, 4, handle, refuse, before_auth=True)
