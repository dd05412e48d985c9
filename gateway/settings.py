"""One typed settings object for the server. Unknown settings are an error, never ignored."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from storage.types import DurabilityPolicy

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("logway-data")
    backend: str = "embedded"  # or nats://h1:4222,h2:4222
    server: str = "granian"  # or "hypercorn"; see bench/RESULTS.md for why
    durability: DurabilityPolicy = field(default_factory=DurabilityPolicy)
    certfile: Path | None = None
    keyfile: Path | None = None
    auto_create_topics: bool = False
    default_partitions: int = 3  # for auto-created topics and PUT without "partitions"
    max_body_bytes: int = 64 * MiB  # JSON produce bodies; NDJSON bodies use max_ndjson_bytes
    max_record_bytes: int = 1 * MiB  # key + value + headers of one record
    max_records_per_request: int = 100_000
    # NDJSON produce bodies: parsed as they stream, buffered for all-or-nothing
    max_ndjson_bytes: int = 256 * MiB
    heartbeat_s: float = 15.0  # SSE/NDJSON keep-alive comment interval
    sse_retry_ms: int = 2000
    stream_send_timeout_s: float = 30.0  # a stream whose client stops reading is closed after this
    idempotency_ttl_ms: int = 24 * 3600 * 1000
    shutdown_timeout_s: float = 10.0
    root_path: str = ""  # set when mounted under a path prefix behind a proxy
    group_session_timeout_s: float = 30.0  # a group member not heard from for this long is removed
    group_assignor: str = "sticky"  # or "range", "roundrobin" (gateway/assignors.py)
    # Deployment (gateway/proxy.py, observe.py, limits.py): X-Forwarded-* are believed only
    # from these addresses/CIDRs; empty means from nobody.
    trusted_proxies: tuple[str, ...] = ()
    access_log_json: bool = False  # one JSON line per request on the logway.access logger
    max_streams: int = 100_000  # open SSE/NDJSON streams, all clients (503 beyond)
    # Per client address or principal (429 beyond); 0 = no cap. Off by default: behind a
    # proxy that is not in trusted_proxies every client has the proxy's address.
    max_streams_per_client: int = 0
    rate_limit_per_s: float = 0.0  # requests per second per API key or client address; 0 = off
    rate_limit_burst: int = 100  # token bucket size for rate_limit_per_s
    cors_origins: tuple[str, ...] = ()  # exact browser origins let in; "*" = any (no credentials)
    cors_allow_credentials: bool = False  # only with an explicit cors_origins list
    # Auth (gateway/auth.py): on when any credential source is set.
    auth_api_keys_file: Path | None = None  # TOML: [keys.<name>] sha256 = "...", permissions
    jwt_hs256_secret: str | None = None
    jwt_jwks_file: Path | None = None  # public keys for RS256/ES256 tokens, chosen by kid
    jwt_issuer: str | None = None  # checked when set
    jwt_audience: str | None = None  # checked when set
    auth_cookie: str = "logway_token"  # HttpOnly cookie carrying a token (EventSource)
    auth_query_token: bool = False  # accept ?access_token= (leaks into logs): opt in
    # Kafka protocol listener (gateway/kafka/, the `kafka` extra): off unless a port is set.
    # It binds `host`; Metadata advertises kafka_advertised_host (default: host).
    kafka_port: int | None = None
    kafka_advertised_host: str | None = None
    # Kafka consumer groups (gateway/kafka/groups/): Kafka's broker settings of the same names
    kafka_group_initial_rebalance_delay_ms: int = (
        3000  # a new group waits this long for more members
    )
    kafka_group_min_session_timeout_ms: int = 6000  # JoinGroup's session timeout range
    kafka_group_max_session_timeout_ms: int = 1_800_000
