"""A `backend` fixture parametrized over both backends, so the behaviour tests run
against each:

- `backend` (function): `embedded` is an EmbeddedBackend in tmp_path; `jetstream` is a
  JetStreamBackend with R3 on the shared cluster (`nats_cluster`, tests/conftest.py), in
  a namespace of its own, so tests sharing the cluster never see each other's topics,
  groups or idempotency keys.
- `reopen_backend`: closes the test's backend and opens a new one on the same data
  (data dir, or cluster namespace), for persistence tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from storage.embedded import EmbeddedBackend
from storage.jetstream import JetStreamBackend
from storage.types import DurabilityPolicy
from tests.nats_cluster import NatsCluster, fresh_namespace

# The jetstream half needs nats-server: `-m "not nats"` runs the embedded half alone.
BACKENDS = ("embedded", pytest.param("jetstream", marks=pytest.mark.nats))
AnyBackend = EmbeddedBackend | JetStreamBackend


class BackendFactory:
    """Opens backends of one kind on the same data, and closes them all at teardown."""

    def __init__(self, kind: str, tmp_path: Path, cluster: NatsCluster | None) -> None:
        self.kind = kind
        self.data_dir = tmp_path / "data"
        self.cluster = cluster
        self.namespace = fresh_namespace()
        self.opened: list[AnyBackend] = []

    async def open(self) -> AnyBackend:
        backend: AnyBackend
        if self.kind == "embedded":
            backend = await EmbeddedBackend.open(self.data_dir, DurabilityPolicy())
        else:
            assert self.cluster is not None
            backend = await JetStreamBackend.open(
                self.cluster.urls, replicas=3, namespace=self.namespace
            )
        self.opened.append(backend)
        return backend

    async def close_all(self) -> None:
        for backend in self.opened:
            await backend.close()


@pytest.fixture(params=BACKENDS)
async def backend_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    kind: str = request.param
    cluster = request.getfixturevalue("nats_cluster") if kind == "jetstream" else None
    factory = BackendFactory(kind, tmp_path, cluster)
    try:
        yield factory
    finally:
        await factory.close_all()


@pytest.fixture
async def backend(backend_factory: BackendFactory) -> AnyBackend:
    return await backend_factory.open()


@pytest.fixture
def reopen_backend(
    backend_factory: BackendFactory, backend: AnyBackend
) -> Callable[[], Awaitable[AnyBackend]]:
    async def reopen() -> AnyBackend:
        await backend.close()
        return await backend_factory.open()

    return reopen
