"""The async client: one httpx.AsyncClient (HTTP/2 when the server offers it) and the HTTP
API as typed methods. `AsyncProducer` and `AsyncConsumer` take a client and share its
connections.

Every non-2xx answer becomes the typed error of its problem `type` (see `errors`); an
exchange that gets no answer becomes `ConnectionFailed`. Nothing here retries: the
producer and consumer decide what is safe to send again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx

from logway_client.errors import ConnectionFailed, ProtocolViolation, error_from_problem
from logway_client.types import (
    GroupDescription,
    GroupSummary,
    NewRecord,
    PullResult,
    Record,
    RecordMetadata,
    SchemaVersion,
    TopicInfo,
    TopicSummary,
)

DEFAULT_TIMEOUT_S = 10.0
JSON = "application/json"

SeekTarget = Literal["earliest", "latest"] | int
"""Where a group seek moves: the log start, the end, or the first record at a time in ms."""


def path_segment(name: str) -> str:
    """A topic or group name as one URL path segment (names may hold `.`, `-`, `_`)."""
    return quote(name, safe="")


def _retry_after_s(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def raise_for_problem(response: httpx.Response, body: bytes) -> None:
    """Raise the typed error a non-2xx response carries."""
    if response.status_code < 400:
        return
    problem: Any = {}
    with contextlib.suppress(ValueError):
        problem = json.loads(body) if body else {}
    if not isinstance(problem, dict) or not problem:  # not problem+json (e.g. a proxy's page)
        problem = {"detail": body.decode(errors="replace")[:500]}
    problem.setdefault("title", response.reason_phrase)
    raise error_from_problem(response.status_code, problem, _retry_after_s(response))


def _schemas(topic: str) -> str:
    return f"/v1/topics/{path_segment(topic)}/schemas"


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ProtocolViolation(f"the gateway answered something that is not JSON: {exc}") from None


def records_body(encoded: Iterable[bytes]) -> bytes:
    """A produce request body of encoded records, built once so a retry sends the same bytes
    (the gateway matches a retried Idempotency-Key to the body)."""
    return b'{"records":[' + b",".join(encoded) + b"]}"


def offsets_from_json(topic: str, doc: Any, expected: int) -> list[RecordMetadata]:
    try:
        offsets = [
            RecordMetadata(topic, o["partition"], o["offset"], o["timestamp"])
            for o in doc["offsets"]
        ]
    except (KeyError, TypeError) as exc:
        raise ProtocolViolation(f"not a produce response: {exc!r}") from None
    if len(offsets) != expected:
        raise ProtocolViolation(f"{len(offsets)} offsets for {expected} records")
    return offsets


class AsyncLogwayClient:
    """The logway HTTP API, async. Use as `async with AsyncLogwayClient(url) as client:`.

    `headers` go on every request (e.g. `{"Authorization": "Bearer …"}`). `timeout` bounds
    each request; long polls add their `wait_ms`, and streams use `stream_read_timeout_s`
    between two events (the gateway sends a heartbeat every 15 s by default, so a silent
    connection is a dead one). `http2=True` negotiates HTTP/2 over TLS (ALPN); cleartext
    URLs use HTTP/1.1 unless `http1=False` (h2c with prior knowledge).
    """

    def __init__(
        self,
        base_url: str,
        *,
        http2: bool = True,
        http1: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
        stream_read_timeout_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
        verify: Any = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout
        self.stream_read_timeout_s = stream_read_timeout_s
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            http1=http1,
            http2=http2,
            timeout=timeout,
            headers=dict(headers or {}),
            verify=verify,
        )

    async def __aenter__(self) -> AsyncLogwayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- plumbing --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[httpx.Response, bytes]:
        """One exchange; a non-2xx answer raises its typed error."""
        send_headers = dict(headers or {})
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
        if content is not None:
            send_headers.setdefault("Content-Type", JSON)
        try:
            response = await self.http.request(
                method,
                path,
                content=content,
                params=params,
                headers=send_headers,
                timeout=timeout_s if timeout_s is not None else self.timeout_s,
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc
        except httpx.RequestError as exc:  # e.g. a body that does not decode
            raise ProtocolViolation(f"{method} {path}: {exc!r}") from exc
        body = response.content
        raise_for_problem(response, body)
        return response, body

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        _, body = await self.request(method, path, **kwargs)
        return parse_json(body)

    # -- topics ----------------------------------------------------------------------------

    async def create_topic(
        self, topic: str, partitions: int | None = None, config: Mapping[str, int] | None = None
    ) -> TopicInfo:
        """Create `topic`, or return it when it exists with the same settings (else TopicExists).

        `config` uses Kafka's names: retention.ms, retention.bytes, segment.bytes (-1: unlimited).
        """
        doc: dict[str, Any] = {}
        if partitions is not None:
            doc["partitions"] = partitions
        if config:
            doc["config"] = dict(config)
        return TopicInfo.from_json(
            await self._json("PUT", f"/v1/topics/{path_segment(topic)}", json_body=doc)
        )

    async def describe_topic(self, topic: str) -> TopicInfo:
        return TopicInfo.from_json(await self._json("GET", f"/v1/topics/{path_segment(topic)}"))

    async def list_topics(self) -> list[TopicSummary]:
        doc = await self._json("GET", "/v1/topics")
        return [TopicSummary(t["name"], t["partitions"]) for t in doc["topics"]]

    async def delete_topic(self, topic: str) -> None:
        await self.request("DELETE", f"/v1/topics/{path_segment(topic)}")

    # -- schemas ---------------------------------------------------------------------------

    async def register_schema(
        self,
        topic: str,
        schema: Any,
        *,
        key_schema: Any = None,
        headers_schema: Any = None,
    ) -> SchemaVersion:
        """Register JSON Schemas (draft 2020-12, as JSON) for the topic's values and, if
        given, keys and headers: a new version, or the newest when it has the same schemas.
        Raises IncompatibleSchema (the rule it breaks, and why) or InvalidSchema."""
        doc: dict[str, Any] = {"schema": schema}
        if key_schema is not None:
            doc["key_schema"] = key_schema
        if headers_schema is not None:
            doc["headers_schema"] = headers_schema
        answer = await self._json("POST", _schemas(topic), json_body=doc)
        return SchemaVersion.from_json(topic, answer)

    async def schema(self, topic: str, version: int | str = "latest") -> SchemaVersion:
        """One version (`latest`: the one produce checks records against)."""
        answer = await self._json("GET", f"{_schemas(topic)}/{version}")
        return SchemaVersion.from_json(topic, answer)

    async def schema_versions(self, topic: str) -> list[SchemaVersion]:
        """Every kept version, oldest first."""
        answer = await self._json("GET", _schemas(topic))
        return [SchemaVersion.from_json(topic, v) for v in answer["versions"]]

    async def delete_schema_version(self, topic: str, version: int | str = "latest") -> None:
        """Delete the newest version (SchemaVersionConflict for an older one)."""
        await self.request("DELETE", f"{_schemas(topic)}/{version}")

    async def schema_compatibility(self, topic: str) -> str:
        answer = await self._json("GET", f"{_schemas(topic)}/compatibility")
        return str(answer["compatibility"])

    async def set_schema_compatibility(self, topic: str, compatibility: str) -> str:
        """BACKWARD, FORWARD, FULL, their _TRANSITIVE variants, or NONE."""
        answer = await self._json(
            "PUT", f"{_schemas(topic)}/compatibility", json_body={"compatibility": compatibility}
        )
        return str(answer["compatibility"])

    # -- records ---------------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        records: Sequence[NewRecord | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[RecordMetadata]:
        """Write `records` in one request, all or nothing; offsets come back in request order.

        With `idempotency_key`, sending the same request again returns the first result and
        writes nothing twice (the `Producer` does that for you, with retries).
        """
        encoded = [(r if isinstance(r, NewRecord) else NewRecord(**r)).encode() for r in records]
        return await self.produce_encoded(
            topic, records_body(encoded), len(encoded), idempotency_key=idempotency_key
        )

    async def produce_encoded(
        self, topic: str, body: bytes, count: int, *, idempotency_key: str | None = None
    ) -> list[RecordMetadata]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        doc = await self._json(
            "POST", f"/v1/topics/{path_segment(topic)}/records", content=body, headers=headers
        )
        return offsets_from_json(topic, doc, count)

    async def pull(
        self,
        topic: str,
        partition: int,
        offset: int | None = None,
        *,
        max_records: int | None = None,
        max_bytes: int | None = None,
        wait_ms: int = 0,
    ) -> PullResult:
        """Records of one partition from `offset` (default: the log start). With `wait_ms`,
        waits that long for a record when `offset` is the end. Below the log start:
        OffsetOutOfRange, whose `log_start_offset` says where to go on."""
        params: dict[str, str | int] = {}
        if offset is not None:
            params["offset"] = offset
        if max_records is not None:
            params["max_records"] = max_records
        if max_bytes is not None:
            params["max_bytes"] = max_bytes
        if wait_ms:
            params["wait_ms"] = wait_ms
        doc = await self._json(
            "GET",
            f"/v1/topics/{path_segment(topic)}/partitions/{partition}/records",
            params=params,
            timeout_s=self.timeout_s + wait_ms / 1000,
        )
        try:
            return PullResult(
                tuple(Record.from_json(r) for r in doc["records"]),
                doc["next_offset"],
                doc["end_offset"],
            )
        except (KeyError, TypeError) as exc:
            raise ProtocolViolation(f"not a pull response: {exc!r}") from None

    # -- consumer groups -------------------------------------------------------------------

    async def list_groups(self) -> list[GroupSummary]:
        doc = await self._json("GET", "/v1/groups")
        try:
            return [
                GroupSummary(g["group"], g["state"], g["generation"], g["members"])
                for g in doc["groups"]
            ]
        except (KeyError, TypeError) as exc:
            raise ProtocolViolation(f"not a group list: {exc!r}") from None

    async def describe_group(self, group: str) -> GroupDescription:
        """Members, their partitions, committed offsets and lag."""
        return GroupDescription.from_json(
            await self._json("GET", f"/v1/groups/{path_segment(group)}")
        )

    async def seek_group(self, group: str, topic: str, to: SeekTarget) -> dict[int, int]:
        """Move the group's committed offsets of `topic` to the log start ("earliest"), the
        end ("latest") or the first record at or after a time in ms; live members restart
        from them in a new generation. Returns {partition: new committed offset}."""
        doc = await self._json(
            "POST",
            f"/v1/groups/{path_segment(group)}/seek",
            json_body={"topic": topic, "to": to},
        )
        try:
            return {o["partition"]: o["offset"] for o in doc["offsets"]}
        except (KeyError, TypeError) as exc:
            raise ProtocolViolation(f"not a seek response: {exc!r}") from None

    async def delete_group(self, group: str) -> None:
        await self.request("DELETE", f"/v1/groups/{path_segment(group)}")

    async def commit_offsets(
        self,
        group: str,
        member_id: str,
        generation: int,
        topic: str,
        offsets: Mapping[int, int],
    ) -> None:
        """Commit {partition: next offset to read} for a member of `generation`.

        FencedGeneration when a rebalance replaced it (the new owner reads from the last
        commit), NotPartitionOwner when the member does not own a partition.
        """
        await self.request(
            "POST",
            f"/v1/groups/{path_segment(group)}/offsets",
            json_body={
                "member_id": member_id,
                "generation": generation,
                "offsets": [
                    {"topic": topic, "partition": p, "offset": o}
                    for p, o in sorted(offsets.items())
                ],
            },
        )
