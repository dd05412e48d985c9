"""The one catalog of problem types (RFC 9457) and the one place exceptions become responses.

Every error the API returns is `application/problem+json` with a stable `type` URI from
`CATALOG`. The same catalog is written into `openapi/openapi.yaml` (components.schemas
.ProblemType and the `x-problem-types` list) and a test checks the two agree both ways, so
clients can rebuild typed errors from `type` alone.

Routes raise `Problem` (or let a `storage.errors.StorageError` escape); `EXCEPTION_HANDLERS`
turns them, and Starlette's own 404/405, into responses. Nothing else builds an error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.groups import errors as group_errors
from storage import errors

PROBLEM_BASE = "https://logway.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


def _catalog(*types: ProblemType) -> dict[str, ProblemType]:
    return {t.slug: t for t in types}


CATALOG: Mapping[str, ProblemType] = _catalog(
    ProblemType("bad-json", 400, "Malformed JSON"),
    ProblemType("invalid-topic-name", 400, "Invalid topic name"),
    ProblemType("bad-cursor", 400, "Invalid stream cursor"),
    ProblemType("incomplete-body", 400, "Request body incomplete"),
    ProblemType("cors-rejected", 400, "Cross-origin request not allowed"),
    ProblemType("invalid-group-name", 400, "Invalid consumer group name"),
    ProblemType("invalid-member-id", 400, "Invalid member id"),
    ProblemType("invalid-offsets", 400, "Invalid offsets"),
    ProblemType("unauthorized", 401, "Authentication required"),
    ProblemType("forbidden", 403, "Not allowed"),
    ProblemType("not-found", 404, "Not found"),
    ProblemType("unknown-topic", 404, "Unknown topic"),
    ProblemType("unknown-partition", 404, "Unknown partition"),
    ProblemType("unknown-group", 404, "Unknown consumer group"),
    ProblemType("unknown-member", 404, "Unknown group member"),
    ProblemType("unknown-schema-version", 404, "Unknown schema version"),
    ProblemType("method-not-allowed", 405, "Method not allowed"),
    ProblemType("not-acceptable", 406, "Not acceptable"),
    ProblemType("topic-exists", 409, "Topic exists with other settings"),
    ProblemType("fenced-generation", 409, "Generation fenced"),
    ProblemType("not-partition-owner", 409, "Partition not owned by the member"),
    ProblemType("group-not-empty", 409, "Consumer group not empty"),
    ProblemType("incompatible-schema", 409, "Schema incompatible under the topic's rule"),
    ProblemType("schema-version-conflict", 409, "Schema version conflict"),
    ProblemType("group-protocol-conflict", 409, "Consumer group has members of another protocol"),
    ProblemType(
        "idempotent-records-deleted", 409, "Idempotency-Key's records deleted by retention"
    ),
    ProblemType("body-too-large", 413, "Request body too large"),
    ProblemType("record-too-large", 413, "Record too large"),
    ProblemType("too-many-records", 413, "Too many records in one request"),
    ProblemType("unsupported-media-type", 415, "Unsupported media type"),
    ProblemType("offset-out-of-range", 416, "Offset out of range"),
    ProblemType("validation-error", 422, "Invalid request"),
    ProblemType("idempotency-key-reused", 422, "Idempotency-Key reused with another request"),
    ProblemType("invalid-schema", 422, "Invalid JSON Schema"),
    ProblemType("schema-violation", 422, "Record does not match the topic's schema"),
    ProblemType("rate-limited", 429, "Too many requests"),
    ProblemType("too-many-streams", 429, "Too many open streams for this client"),
    ProblemType("internal-error", 500, "Internal server error"),
    ProblemType("storage-write-error", 500, "Storage write failed"),
    ProblemType("corrupt-record", 500, "Stored record is corrupt"),
    ProblemType("storage-unavailable", 503, "Storage unavailable"),
    ProblemType("shutting-down", 503, "Server shutting down"),
    ProblemType("stream-capacity", 503, "Server stream capacity reached"),
    ProblemType("produce-capacity", 503, "Server produce capacity reached"),
    ProblemType("disk-full", 507, "Disk full"),
)


class Problem(Exception):
    """An error the client gets as problem+json: a catalog type, a detail, extension members."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.type = CATALOG[slug]
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    def body(self) -> dict[str, Any]:
        """The problem document (also used for SSE `event: error` payloads)."""
        return {
            "type": self.type.uri,
            "title": self.type.title,
            "status": self.type.status,
            "detail": self.detail,
            **self.extensions,
        }

    def to_response(self) -> Response:
        try:
            body = orjson.dumps(self.body())
        except TypeError:  # an extension member JSON cannot carry: keep the problem itself
            self.extensions = {}
            body = orjson.dumps(self.body())
        return Response(
            body,
            status_code=self.type.status,
            headers=self.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )


def validation_error(pointer: str, detail: str) -> Problem:
    """A 422 naming the offending member by JSON pointer (RFC 6901), e.g. `/records/3/key`."""
    return Problem(
        "validation-error",
        f"{pointer or '/'}: {detail}",
        errors=[{"pointer": pointer, "detail": detail}],
    )


def from_storage_error(exc: errors.StorageError) -> Problem:
    """Map the storage layer's error tree onto the catalog."""
    detail = str(exc)
    match exc:
        case errors.InvalidTopicName():
            return Problem("invalid-topic-name", detail)
        case errors.TopicNotFound():
            return Problem("unknown-topic", detail, topic=exc.topic)
        case errors.TopicExists():
            return Problem("topic-exists", detail, existing_partitions=exc.existing.partitions)
        case errors.PartitionNotFound():
            return Problem("unknown-partition", detail, topic=exc.topic, partition=exc.partition)
        case errors.OffsetOutOfRange():
            return offset_out_of_range(exc.offset, exc.log_start_offset, exc.end_offset)
        case errors.AppendTooLarge():
            return Problem("too-many-records", detail, max_records_per_request=exc.max_records)
        case errors.GroupNotFound():
            return Problem("unknown-group", detail, group=exc.group)
        case errors.SchemaVersionNotFound():
            return Problem("unknown-schema-version", detail, topic=exc.topic, version=exc.version)
        case errors.SchemaVersionConflict():
            return Problem(
                "schema-version-conflict", detail, topic=exc.topic, latest_version=exc.latest
            )
        case errors.ProduceTagConflict():
            return Problem("idempotency-key-reused", detail)
        case errors.CorruptRecord():
            return Problem("corrupt-record", detail)
        case errors.DiskFull():
            return Problem("disk-full", detail)
        case errors.StorageWriteError():
            return Problem("storage-write-error", detail)
        case errors.StorageClosed() | errors.StorageUnavailable():
            return Problem("storage-unavailable", detail, headers={"Retry-After": "1"})
    return Problem("internal-error", detail)


def from_group_error(exc: group_errors.GroupError) -> Problem:
    """Map a consumer-group error onto the catalog (its `code` is the problem's slug)."""
    extensions: dict[str, Any] = {}
    for name in ("group", "member_id", "generation", "current_generation"):
        if hasattr(exc, name):
            extensions[name] = getattr(exc, name)
    if isinstance(exc, group_errors.NotPartitionOwner):
        extensions["partitions"] = [
            {"topic": tp.topic, "partition": tp.partition} for tp in exc.partitions
        ]
    return Problem(exc.code, str(exc), **extensions)


def offset_out_of_range(offset: int, log_start_offset: int, end_offset: int) -> Problem:
    return Problem(
        "offset-out-of-range",
        f"offset {offset} is outside the log [{log_start_offset}, {end_offset}]",
        offset=offset,
        log_start_offset=log_start_offset,
        end_offset=end_offset,
    )


async def _problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.to_response()


async def _storage_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.StorageError)
    return from_storage_error(exc).to_response()


async def _group_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, group_errors.GroupError)
    return from_group_error(exc).to_response()


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        problem = Problem(
            "method-not-allowed",
            f"{request.method} is not allowed on {request.url.path}",
            headers=exc.headers,
        )
    elif exc.status_code == 404:
        problem = Problem("not-found", f"no route for {request.url.path}")
    else:
        problem = Problem("internal-error", str(exc.detail))
    return problem.to_response()


async def _disconnect_handler(request: Request, exc: Exception) -> Response:
    # Nobody will read this; it exists so the server logs a 400 instead of a 500.
    return Problem("incomplete-body", "the client disconnected before the body ended").to_response()


async def _internal_handler(request: Request, exc: Exception) -> Response:
    return Problem("internal-error", "unexpected error; see the server log").to_response()


EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    Problem: _problem_handler,
    errors.StorageError: _storage_handler,
    group_errors.GroupError: _group_handler,
    HTTPException: _http_handler,
    ClientDisconnect: _disconnect_handler,
    Exception: _internal_handler,
}
