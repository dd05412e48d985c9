"""FindCoordinator: this broker coordinates every group (there is no other)."""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode

GROUP = 0


def _coordinator(broker: Broker, key: str, key_type: int) -> Body:
    if key_type != GROUP:
        return {
            "key": key,
            "node_id": -1,
            "host": "",
            "port": -1,
            "error_code": ErrorCode.INVALID_REQUEST,
            "error_message": "only group coordinators exist (no transactions yet)",
        }
    return {
        "key": key,
        "node_id": broker.node_id,
        "host": broker.host,
        "port": broker.port,
        "error_code": ErrorCode.NONE,
    }


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    key_type = body["key_type"]
    if request.version >= 4:
        return {
            "coordinators": [_coordinator(broker, k, key_type) for k in body["coordinator_keys"]]
        }
    answer = _coordinator(broker, body["key"], key_type)
    del answer["key"]
    return answer


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    if request.version >= 4:
        return {
            "coordinators": [
                {
                    "key": k,
                    "node_id": -1,
                    "host": "",
                    "port": -1,
                    "error_code": error,
                    "error_message": message,
                }
                for k in request.body.get("coordinator_keys", [])
            ]
        }
    return {"error_code": error, "error_message": message, "node_id": -1, "host": "", "port": -1}


API = Api(ApiKey.FIND_COORDINATOR, "FindCoordinator", 0, 4, handle, refuse)
