"""No JetStream to talk to: open fails fast, calls fail with a retriable StorageUnavailable
(which /readyz and the gateway's 503 rely on), and the backend serves again once a server
is back. Uses a one-node cluster of its own, so the shared cluster is never degraded."""

from __future__ import annotations

import asyncio
import time

import pytest

from storage.errors import StorageError, StorageUnavailable
from storage.jetstream import JetStreamBackend
from storage.types import NewRecord, TopicConfig
from tests.nats_cluster import NatsCluster, free_port

RECOVERY_DEADLINE_S = 30.0


async def test_open_without_a_server_fails_fast() -> None:
    with pytest.raises(StorageUnavailable) as exc_info:
        await JetStreamBackend.open([f"nats://127.0.0.1:{free_port()}"], connect_timeout_s=1)
    assert exc_info.value.retriable


@pytest.mark.nats
@pytest.mark.slow
async def test_a_lost_server_is_unavailable_then_serves_again(
    nats_single_node: NatsCluster,
) -> None:
    cluster = nats_single_node
    backend = await JetStreamBackend.open(cluster.urls, request_timeout_s=1)
    try:
        await backend.create_topic("t", 1, TopicConfig())
        await backend.append("t", 0, [NewRecord(b"before")])
        await asyncio.to_thread(cluster.kill, 0)
        with pytest.raises(StorageUnavailable):
            await backend.check_writable()
        with pytest.raises(StorageUnavailable) as exc_info:
            await backend.append("t", 0, [NewRecord(b"while down")])
        assert exc_info.value.retriable
        await asyncio.to_thread(cluster.restart, 0)
        await asyncio.to_thread(cluster.wait_ready)
        deadline = time.monotonic() + RECOVERY_DEADLINE_S
        while True:
            try:
                result = await backend.append("t", 0, [NewRecord(b"after")])
                break
            except StorageError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        await backend.check_writable()
        [record] = await backend.read("t", 0, result.base_offset, 1, 1024)
        assert record.value == b"after"
    finally:
        await backend.close()
