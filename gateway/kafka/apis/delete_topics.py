"""DeleteTopics: by name (topic ids are not served, see Metadata)."""

from __future__ import annotations

from gateway.kafka.dispatch import Api, ApiKey, Body, Broker, Request, Session
from gateway.kafka.errors import ErrorCode, error_code_of
from storage import errors


async def _delete(broker: Broker, session: Session, name: str) -> Body:
    answer: Body = {"name": name, "error_code": ErrorCode.NONE}
    if not broker.allows(session, "admin", "topic", name):
        answer["error_code"] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
        return answer
    try:
        await broker.ctx.backend.delete_topic(name)
    except errors.StorageError as exc:
        answer["error_code"], answer["error_message"] = error_code_of(exc), str(exc)
        return answer
    broker.ctx.chunks.forget_topic(name)
    broker.producers.forget_topic(name)
    return answer


async def handle(broker: Broker, session: Session, request: Request) -> Body:
    return {
        "responses": [await _delete(broker, session, name) for name in request.body["topic_names"]]
    }


def refuse(request: Request, error: ErrorCode, message: str | None) -> Body:
    return {
        "responses": [
            {"name": name, "error_code": error, "error_message": message}
            for name in request.body.get("topic_names", [])
        ]
    }


API = Api(ApiKey.DELETE_TOPICS, "DeleteTopics", 1, 5, handle, refuse)
