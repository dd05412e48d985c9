"""How a Kafka request reaches its handler: a registry of API key -> `Api`.

Each API is one module under `gateway/kafka/apis/` that defines `API = Api(...)`: its key,
the versions it serves (a range inside the vendored definition's valid versions), the
handler, and `refuse`, which builds the answer that gives every part of a request one
error code (authorization failures, a request before SASL, an unsupported version, a
handler that failed). `apis/__init__.py` lists the modules; ApiVersions answers from the
registry, so adding an API is adding a module and one line there.

A handler gets the `Broker` (what every connection of the listener shares), the
connection's `Session` and the decoded `Request`, and returns the response body as a dict
(keys in snake_case, see `gateway.kafka.schema`), or None for a produce with acks=0,
which Kafka never answers. Handlers of one connection run one at a time, in order, as a
Kafka broker runs them; a handler may return `Later(awaitable)` once its order-sensitive
part is done (produce: its appends are queued), so the next request is read while the
answer is completed. Answers always leave in request order.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.context import Context
from gateway.http.auth import Authenticator, Principal
from gateway.kafka.admission import SaslFailures
from gateway.kafka.batches import BatchCache
from gateway.kafka.errors import ErrorCode
from gateway.kafka.groups.service import KafkaGroups
from gateway.kafka.producers import ProducerStates
from gateway.kafka.schema import MessageSchema, load_schema

Body = dict[str, Any]


class ApiKey(enum.IntEnum):
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    INIT_PRODUCER_ID = 22
    SASL_AUTHENTICATE = 36


@dataclass(frozen=True, slots=True)
class Request:
    api_key: int
    version: int
    correlation_id: int
    client_id: str | None
    body: Body


@dataclass(slots=True)
class Session:
    """One connection: who it is (after SASL) and what it negotiated."""

    peer: str
    host: str  # the client's address, which limits count by
    principal: Principal | None = None
    mechanism: str | None = None  # chosen by SaslHandshake, consumed by SaslAuthenticate
    raw_sasl: bool = False  # after SaslHandshake v0: the next frame is a bare token
    warned_unauthenticated: bool = False
    authentication_failed: bool = False  # the connection closes once this is answered


@dataclass(frozen=True, slots=True)
class Later:
    """A handler's answer that is still being made (a produce waiting for its fsync): the
    connection reads its next request meanwhile, and the answers still leave in order."""

    answer: Awaitable[Body | None]


Handler = Callable[["Broker", Session, Request], Awaitable[Body | Later | None]]
Refuse = Callable[[Request, ErrorCode, str | None], Body]


@dataclass(frozen=True, slots=True)
class Api:
    """One API as this broker serves it. `name` is the stem of its definition files."""

    key: ApiKey
    name: str
    min_version: int
    max_version: int
    handle: Handler
    refuse: Refuse
    before_auth: bool = False  # may run before SASL authentication (ApiVersions, SASL)


@dataclass(frozen=True, slots=True)
class Registered:
    """An Api with the definitions of its request and response."""

    api: Api
    request: MessageSchema
    response: MessageSchema


def registry(apis: Iterable[Api]) -> dict[int, Registered]:
    """Load each API's definitions; a version range outside them is a programming error."""
    out: dict[int, Registered] = {}
    for api in apis:
        request = load_schema(f"{api.name}Request")
        response = load_schema(f"{api.name}Response")
        for schema in (request, response):
            if schema.api_key != api.key or not (
                api.min_version in schema.valid and api.max_version in schema.valid
            ):
                raise ValueError(f"{api.name} {api.min_version}-{api.max_version} vs {schema}")
        if api.key in out:
            raise ValueError(f"two handlers for API key {api.key}")
        out[api.key] = Registered(api, request, response)
    return out


@dataclass(slots=True)
class Broker:
    """What every connection of one Kafka listener shares."""

    ctx: Context
    apis: Mapping[int, Registered]
    node_id: int
    host: str  # advertised in Metadata and FindCoordinator
    port: int
    cluster_id: str
    authenticator: Authenticator | None  # None when auth is off
    groups: KafkaGroups  # the consumer groups this broker coordinates (every one)
    sasl_failures: SaslFailures  # per client address, as HTTP's failed authentications
    producers: ProducerStates = field(default_factory=ProducerStates)
    batches: BatchCache = field(default_factory=BatchCache)

    def allows(self, session: Session, action: str, kind: str, name: str) -> bool:
        """Whether the session may `action` the `kind` called `name` (always, auth off)."""
        if self.authenticator is None:
            return True
        principal = session.principal
        return principal is not None and principal.allows(action, kind, name)

    def may_see(self, session: Session, topic: str) -> bool:
        """Metadata shows a topic to whoever has any right on it (as HTTP lists do)."""
        if self.authenticator is None:
            return True
        principal = session.principal
        return principal is not None and principal.sees("topic", topic)

    def node(self) -> Body:
        return {"node_id": self.node_id, "host": self.host, "port": self.port, "rack": None}
