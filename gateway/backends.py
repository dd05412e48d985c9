"""Which storage backend `settings.backend` names, and opening it.

    embedded                                   the data dir on local disk (default)
    nats://h1:4222,h2:4222,h3:4222             a JetStream cluster; R3 when 3 or more
    nats://h1:4222?replicas=3&namespace=prod   servers are listed, else R1; `namespace`
                                               prefixes every stream and bucket (default
                                               "logway")

Parsed once at startup (the CLI calls `parse_backend` so a bad URL is a usage error, not
a failed lifespan).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from gateway.settings import Settings
from storage.backend import Backend

NATS_SCHEMES = ("nats://", "tls://")
DEFAULT_NAMESPACE = "logway"


@dataclass(frozen=True, slots=True)
class JetStreamTarget:
    servers: tuple[str, ...]
    replicas: int
    namespace: str = DEFAULT_NAMESPACE


def parse_backend(backend: str) -> JetStreamTarget | None:
    """None for `embedded`, the cluster for a nats:// list; ValueError for anything else."""
    if backend == "embedded":
        return None
    scheme = next((s for s in NATS_SCHEMES if backend.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"backend must be 'embedded' or nats://host:port,..., not {backend!r}")
    hosts, _, query = backend[len(scheme) :].partition("?")
    servers = tuple(scheme + host.strip() for host in hosts.split(",") if host.strip())
    if not servers:
        raise ValueError(f"backend {backend!r} names no server")
    params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    unknown = sorted(set(params) - {"replicas", "namespace"})
    if unknown:
        raise ValueError(f"unknown backend parameter {unknown[0]!r} (replicas, namespace)")
    replicas = (
        int(params["replicas"][-1]) if "replicas" in params else (3 if len(servers) >= 3 else 1)
    )
    if replicas not in (1, 3, 5):
        raise ValueError(f"replicas must be 1, 3 or 5, not {replicas}")
    namespace = params.get("namespace", [DEFAULT_NAMESPACE])[-1]
    return JetStreamTarget(servers, replicas, namespace)


async def open_backend(settings: Settings) -> Backend:
    """Open the backend the settings name (the caller closes it)."""
    target = parse_backend(settings.backend)
    if target is None:
        from storage.embedded import EmbeddedBackend

        return await EmbeddedBackend.open(settings.data_dir, settings.durability)
    from storage.jetstream import JetStreamBackend

    return await JetStreamBackend.open(
        list(target.servers), target.replicas, namespace=target.namespace
    )


def max_append_records(backend: Backend) -> int | None:
    """The most records the backend appends atomically (None: no limit of its own)."""
    limit = getattr(backend, "max_append_records", None)
    return limit if isinstance(limit, int) else None
