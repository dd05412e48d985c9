"""Which storage backend `settings.backend` names, and opening it.

    embedded                                   the data dir on local disk (default)
    nats://h1:4222,h2:4222,h3:4222             a JetStream cluster; R3 when 3 or more
    nats://h1:4222?replicas=3&namespace=prod   servers are listed, else R1; `namespace`
                                               prefixes every stream and bucket (default
                                               "logway")

Parsed once at startup (the CLI calls `parse_backend` and `check_extra`, so a bad URL or
a missing extra is a usage error, not a failed lifespan). This is the one place that
knows which backends exist: it opens the one the settings name and picks the membership
store that fits it. The JetStream parts (nats-py, `storage.jetstream`,
`gateway.groups.jetstream_store`) are imported only when that backend is chosen, so the
plain install runs the embedded default without them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from gateway.groups.memory_store import InMemoryStore
from gateway.groups.store import MembershipStore
from gateway.settings import Settings
from storage.backend import Backend
from storage.embedded import EmbeddedBackend
from storage.files import LOCK_FILE, Files, lock_data_dir, parse_dir_mode
from storage.types import IdempotencyWindow

NATS_SCHEMES = ("nats://", "tls://")
DEFAULT_NAMESPACE = "logway"
JETSTREAM_EXTRA = "jetstream"
KAFKA_EXTRA = "kafka"
KAFKA_MODULES = ("crc32c", "cramjam")


class MissingExtra(RuntimeError):
    """The chosen backend or listener needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str, what: str = "backend") -> None:
        super().__init__(
            f"the {extra} {what} needs the {module!r} module: pip install 'logway[{extra}]'"
        )


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


def check_extra(target: JetStreamTarget | None) -> None:
    """Raise MissingExtra now if the chosen backend's library is not installed."""
    if target is not None and importlib.util.find_spec("nats") is None:
        raise MissingExtra(JETSTREAM_EXTRA, "nats")


def check_kafka_extra() -> None:
    """Raise MissingExtra now if the Kafka listener's libraries are not installed."""
    for module in KAFKA_MODULES:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(KAFKA_EXTRA, module, "listener")


def check_data_dir_free(settings: Settings) -> None:
    """Before the server starts: DataDirInUse when another process serves the embedded
    log's data dir (UnsafeEntry when its lock file is not ours), so `logway serve` says so
    in one line. Creates nothing: a data dir without a lock file has no server, and the
    backend takes the lock for good when it opens (storage.files.lock_data_dir)."""
    if parse_backend(settings.backend) is not None:
        return
    if not os.path.lexists(settings.data_dir / LOCK_FILE):
        return
    os.close(lock_data_dir(Files(parse_dir_mode(settings.data_mode)), settings.data_dir))


async def open_backend(
    settings: Settings, on_fsync: Callable[[float], None] | None = None
) -> Backend:
    """Open the backend the settings name (the caller closes it); `on_fsync` is told the
    duration of every local fsync an append waits for (the embedded backend's)."""
    target = parse_backend(settings.backend)
    window = IdempotencyWindow(settings.idempotency_ttl_ms, settings.idempotency_max_keys)
    if target is None:
        return await EmbeddedBackend.open(
            settings.data_dir,
            settings.durability,
            on_fsync=on_fsync,
            idempotency=window,
            data_mode=parse_dir_mode(settings.data_mode),
            retention_interval_s=settings.retention_check_interval_ms / 1000,
        )
    check_extra(target)
    from storage.jetstream import JetStreamBackend  # the optional extra, only when chosen

    return await JetStreamBackend.open(
        list(target.servers), target.replicas, namespace=target.namespace, idempotency=window
    )


def membership_store(backend: Backend) -> MembershipStore:
    """The membership store that fits the backend: in this process for the embedded log
    (one gateway owns it), shared through JetStream for any number of gateways."""
    if isinstance(backend, EmbeddedBackend):
        return InMemoryStore(backend)
    from gateway.groups.jetstream_store import JetStreamStore  # the optional extra
    from storage.jetstream import JetStreamBackend

    if not isinstance(backend, JetStreamBackend):
        raise TypeError(f"no membership store for {type(backend).__name__}")
    return JetStreamStore(backend)
