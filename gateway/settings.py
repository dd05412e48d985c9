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
    # Octal mode of the directories the embedded log creates; its files get the same less
    # the execute bits (0700: 0600). "0750" lets the group read (backups); others may never write.
    data_mode: str = "0700"
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
    # Produce request bytes admitted and not yet answered, all clients (503 produce-capacity
    # beyond; gateway/http/admission.py). Each byte holds 4-16 of memory until answered.
    max_inflight_produce_bytes: int = 32 * MiB
    heartbeat_s: float = 15.0  # SSE/NDJSON keep-alive comment interval
    sse_retry_ms: int = 2000
    stream_send_timeout_s: float = 30.0  # a stream whose client stops reading is closed after this
    # Idempotency-Key: answers are kept this long, and the log's produce tags are read back
    # at startup and honoured for this long, at most idempotency_max_keys per partition.
    idempotency_ttl_ms: int = 24 * 3600 * 1000
    idempotency_max_keys: int = 100_000
    # How often the embedded log deletes segments past retention.ms / retention.bytes
    # (Kafka: log.retention.check.interval.ms); a deleted segment's records go then.
    retention_check_interval_ms: int = 30_000
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
    # Failed authentication (401) per client address (IPv6: per /64), a token bucket: beyond
    # the burst every request from it is a 429 until a token is back; 0 = off.
    auth_failure_limit_per_s: float = 0.2
    auth_failure_burst: int = 10
    # Connections (gateway/server.py, gateway/connections.py). A request's decoded HTTP/2
    # header list (HPACK lets 4 KB on the wire decode to megabytes), and under Hypercorn
    # its HTTP/1.1 head: 431 beyond. 16 KiB heads (long cursors, cookies) pass. Granian
    # reads HTTP/1.1 through its own 408 KiB buffer (see gateway/server.py).
    max_request_head_bytes: int = 64 * KiB
    h2_max_concurrent_streams: int = 100  # per HTTP/2 connection (RFC 9113's floor)
    request_head_timeout_s: float = 10.0  # a new or idle connection must send a request head
    connection_idle_timeout_s: float = 75.0  # no data either way: closed (above long polls)
    max_connections: int = 100_000  # all clients; beyond, new ones wait in the listen backlog
    # Per client address (IPv6: per /64); trusted_proxies are exempt; 0 = no cap.
    max_connections_per_client: int = 1000
    reserved_fds: int = 1024  # file descriptors no connection may take: the log's files
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
    # What one Kafka connection may cost (gateway/kafka/admission.py, server.py). A frame
    # (a request) beyond kafka_max_request_bytes closes the connection; before SASL
    # completes, when auth is on, beyond kafka_sasl_max_receive_bytes (Kafka's
    # sasl.server.max.receive.size). The default matches max_body_bytes's.
    kafka_max_request_bytes: int = 64 * MiB
    kafka_sasl_max_receive_bytes: int = 64 * KiB
    # A new connection must send a whole first request, and with auth on authenticate,
    # within this; then each next request within kafka_connections_max_idle_ms of the last
    # one or its answer (Kafka's connections.max.idle.ms), a partial frame counting as none.
    kafka_connection_setup_timeout_ms: int = 10_000
    kafka_connections_max_idle_ms: int = 600_000
    # Kafka connections in total (also at most half of what the open-files limit leaves
    # after reserved_fds, taken from the HTTP connections' share) and per client address
    # (IPv6: per /64; trusted_proxies are exempt; 0 = no cap).
    kafka_max_connections: int = 10_000
    kafka_max_connections_per_client: int = 1000
