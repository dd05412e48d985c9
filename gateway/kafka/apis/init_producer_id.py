"""InitProducerId: a producer id and epoch for an idempotent producer (KIP-98).

A request that names its current id and epoch (v3+, KIP-360: after a fatal sequence error)
gets the same id with the next epoch, if it is the session's (gateway.kafka.producers). A
transactional id is refused: no transactions yet.
"""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode
from gateway.kafka.producers import MAX_EPOCH


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    body = request.body
    if body["transactional_id"] is not None:
        return refuse(request, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, None)
    producer_id = body["producer_id"]
    epoch = body["producer_epoch"]
    owner = session.principal.identity if session.principal is not None else None
    if producer_id >= 0 and 0 <= epoch < MAX_EPOCH:
        if owner is not None and not broker.producers.claim(producer_id, owner):
            return refuse(request, ErrorCode.INVALID_PRODUCER_ID_MAPPING, None)
        return {
            "error_code": ErrorCode.NONE,
            "producer_id": producer_id,
            "producer_epoch": epoch + 1,
        }
    return {
        "error_code": ErrorCode.NONE,
        "producer_id": broker.producers.new_producer_id(owner),
        "producer_epoch": 0,
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {"error_code": error, "producer_id": -1, "producer_epoch": -1}


API = Api(ApiKey.INIT_PRODUCER_ID, "InitProducerId", 0, 4, handle, refuse)
