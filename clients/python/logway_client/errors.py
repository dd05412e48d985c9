"""Typed errors, rebuilt from the problem+json `type` the gateway answers with.

    LogwayError                      every error this package raises
    ├── ConnectionFailed             no HTTP answer: refused, reset, timed out (retriable)
    ├── ProtocolViolation            an answer this client cannot read (not JSON, no SSE)
    └── one class per problem type   e.g. UnknownTopic (404, .../unknown-topic)

A problem whose `type` this client does not know becomes a plain `LogwayError` with the
same status, title, detail and extension members, so a newer gateway never breaks an
older client. `retriable` says whether sending the same request again may succeed (a
producer retries those with the same Idempotency-Key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

PROBLEM_BASE = "https://logway.dev/problems/"


class LogwayError(Exception):
    """Root of every error; `slug` is the problem type's last path segment."""

    slug: ClassVar[str] = ""
    retriable: bool = False

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        type: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.title = title
        self.type = type or (PROBLEM_BASE + self.slug if self.slug else "about:blank")
        self.extensions: Mapping[str, Any] = dict(extensions or {})
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        prefix = f"{self.status} " if self.status is not None else ""
        title = f"{self.title}: " if self.title else ""
        return f"{prefix}{title}{self.detail}"


_BY_SLUG: dict[str, type[LogwayError]] = {}


def _problem(slug: str, *, retriable: bool = False) -> Any:
    """Class decorator: register a problem type's class under its slug."""

    def register(cls: type[LogwayError]) -> type[LogwayError]:
        cls.slug = slug
        cls.retriable = retriable
        _BY_SLUG[slug] = cls
        return cls

    return register


class ConnectionFailed(LogwayError):
    """The request got no HTTP answer (refused, reset, timed out). It may have been applied."""

    retriable = True


class ProtocolViolation(LogwayError):
    """The gateway answered something this client cannot read."""


# -- 4xx (the 429s are retriable) ----------------------------------------------------------


@_problem("bad-json")
class BadJson(LogwayError):
    pass


@_problem("invalid-topic-name")
class InvalidTopicName(LogwayError):
    pass


@_problem("bad-cursor")
class BadCursor(LogwayError):
    pass


@_problem("incomplete-body")
class IncompleteBody(LogwayError):
    pass


@_problem("cors-rejected")
class CorsRejected(LogwayError):
    pass


@_problem("unauthorized")
class Unauthorized(LogwayError):
    """No valid credentials: pass them with `headers={"Authorization": ...}`."""


@_problem("forbidden")
class Forbidden(LogwayError):
    """The credentials do not allow this operation."""


@_problem("not-found")
class NotFound(LogwayError):
    pass


@_problem("unknown-topic")
class UnknownTopic(LogwayError):
    @property
    def topic(self) -> str | None:
        value = self.extensions.get("topic")
        return value if isinstance(value, str) else None


@_problem("unknown-partition")
class UnknownPartition(LogwayError):
    pass


@_problem("unknown-group")
class UnknownGroup(LogwayError):
    pass


@_problem("unknown-member")
class UnknownMember(LogwayError):
    """The member left, expired or the gateway restarted since it joined: join again."""


@_problem("method-not-allowed")
class MethodNotAllowed(LogwayError):
    pass


@_problem("not-acceptable")
class NotAcceptable(LogwayError):
    pass


@_problem("topic-exists")
class TopicExists(LogwayError):
    pass


@_problem("fenced-generation")
class FencedGeneration(LogwayError):
    """A commit named a generation that a rebalance has replaced."""


@_problem("not-partition-owner")
class NotPartitionOwner(LogwayError):
    pass


@_problem("group-not-empty")
class GroupNotEmpty(LogwayError):
    pass


@_problem("group-protocol-conflict")
class GroupProtocolConflict(LogwayError):
    """The group has Kafka members: a group has members of one protocol at a time."""


@_problem("invalid-group-name")
class InvalidGroupName(LogwayError):
    pass


@_problem("invalid-member-id")
class InvalidMemberId(LogwayError):
    pass


@_problem("invalid-offsets")
class InvalidOffsets(LogwayError):
    pass


@_problem("body-too-large")
class BodyTooLarge(LogwayError):
    pass


@_problem("record-too-large")
class RecordTooLarge(LogwayError):
    pass


@_problem("too-many-records")
class TooManyRecords(LogwayError):
    pass


@_problem("unsupported-media-type")
class UnsupportedMediaType(LogwayError):
    pass


@_problem("offset-out-of-range")
class OffsetOutOfRange(LogwayError):
    """The offset is outside [log_start_offset, end_offset] (retention or a recreated topic)."""

    def _int(self, name: str) -> int | None:
        value = self.extensions.get(name)
        return value if isinstance(value, int) else None

    @property
    def log_start_offset(self) -> int | None:
        return self._int("log_start_offset")

    @property
    def end_offset(self) -> int | None:
        return self._int("end_offset")


@_problem("unknown-schema-version")
class UnknownSchemaVersion(LogwayError):
    """The topic keeps no such schema version (or has no schema, for `latest`)."""


@_problem("incompatible-schema")
class IncompatibleSchema(LogwayError):
    """The new schema breaks the topic's compatibility rule; `extensions["incompatibilities"]`
    says which change breaks it and why."""


@_problem("schema-version-conflict")
class SchemaVersionConflict(LogwayError):
    """Not the newest schema version (only the newest can be deleted)."""


@_problem("invalid-schema")
class InvalidSchema(LogwayError):
    """Not a usable draft 2020-12 JSON Schema; `extensions["errors"]` points at each error."""


@_problem("schema-violation")
class SchemaViolation(LogwayError):
    """A record does not match the topic's schema; nothing was written.
    `extensions["errors"]`: pointer into the request, failing keyword, detail."""


@_problem("validation-error")
class ValidationError(LogwayError):
    pass


@_problem("idempotency-key-reused")
class IdempotencyKeyReused(LogwayError):
    pass


@_problem("idempotent-records-deleted")
class IdempotentRecordsDeleted(LogwayError):
    """The key's request was written, but retention has since deleted its records; the
    retry wrote nothing (extensions: partition, offset, log_start_offset)."""


@_problem("rate-limited", retriable=True)
class RateLimited(LogwayError):
    """Too many requests from this client; `retry_after_s` says when to try again."""


@_problem("too-many-streams", retriable=True)
class TooManyStreams(LogwayError):
    """This client holds the most streams a gateway allows one client."""


# -- 5xx ------------------------------------------------------------------------------------


@_problem("internal-error", retriable=True)
class InternalError(LogwayError):
    pass


@_problem("storage-write-error", retriable=True)
class StorageWriteError(LogwayError):
    pass


@_problem("corrupt-record")
class CorruptRecord(LogwayError):
    pass


@_problem("storage-unavailable", retriable=True)
class StorageUnavailable(LogwayError):
    pass


@_problem("shutting-down", retriable=True)
class ShuttingDown(LogwayError):
    pass


@_problem("stream-capacity", retriable=True)
class StreamCapacity(LogwayError):
    """The gateway holds all the streams it can; another one (or later) may have room."""


@_problem("produce-capacity", retriable=True)
class ProduceCapacity(LogwayError):
    """The gateway holds all the produce bytes it admits at once; retry after `retry_after_s`."""


@_problem("disk-full")
class DiskFull(LogwayError):
    pass


PROBLEM_TYPES: Mapping[str, type[LogwayError]] = _BY_SLUG
"""Every problem type this client knows, by slug."""


def error_from_problem(
    status: int, problem: Mapping[str, Any], retry_after_s: float | None = None
) -> LogwayError:
    """The typed error for a problem document; unknown types give the root class.

    A 5xx without a known type is retriable (a proxy's 502/503/504), other unknowns are not.
    """
    type_uri = problem.get("type")
    type_uri = type_uri if isinstance(type_uri, str) else None
    slug = type_uri.removeprefix(PROBLEM_BASE) if type_uri else ""
    cls = _BY_SLUG.get(slug) if type_uri and type_uri.startswith(PROBLEM_BASE) else None
    title = problem.get("title")
    detail = problem.get("detail")
    raw_status = problem.get("status")
    extensions = {
        k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail")
    }
    error = (cls or LogwayError)(
        detail if isinstance(detail, str) else (title if isinstance(title, str) else ""),
        status=raw_status if isinstance(raw_status, int) else status,
        title=title if isinstance(title, str) else None,
        type=type_uri,
        extensions=extensions,
        retry_after_s=retry_after_s,
    )
    if cls is None and status >= 500 and status not in (501, 505, 507):
        error.retriable = True
    return error
