"""A keyed produce request that fails on one of its partitions: the retry with the same
Idempotency-Key completes it, and the log ends with exactly one copy of every record
(embedded backend, real files, a write error injected into one partition's segment)."""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from storage.segment import Batch, Segment
from tests.gateway.conftest import BASE_URL

TOPIC = "orders"
FAILING_PARTITION = 1
BODY = {
    "records": [{"value": i} for i in range(30)]
    + [{"key": f"customer-{i}", "value": 100 + i} for i in range(12)]
}


async def _pull_values(client: httpx.AsyncClient) -> list[tuple[int, int, Any]]:
    """(partition, offset, value) of every record of the topic."""
    found = []
    for partition in range(3):
        response = await client.get(
            f"/v1/topics/{TOPIC}/partitions/{partition}/records",
            params={"offset": 0, "max_records": 1000},
        )
        assert response.status_code == 200, response.text
        found += [(partition, r["offset"], r["value"]) for r in response.json()["records"]]
    return found


def _failing_write(original: Callable[..., None]) -> Callable[..., None]:
    def write_locked(
        self: Segment, data: bytes, batches: Sequence[Batch], sync: Callable[[int], None] | None
    ) -> None:
        if self.directory == self.directory.parent / str(FAILING_PARTITION):
            raise OSError(errno.EIO, "injected write error")
        original(self, data, batches, sync)

    return write_locked


async def test_a_request_failed_on_one_partition_is_completed_by_its_retry(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {"Idempotency-Key": "order-batch-7"}
    backend = await EmbeddedBackend.open(settings.data_dir, settings.durability)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(create_app(settings, backend)), base_url=BASE_URL
        ) as client:
            assert (
                await client.put(f"/v1/topics/{TOPIC}", json={"partitions": 3})
            ).status_code == 201
            with monkeypatch.context() as patch:
                patch.setattr(Segment, "write_locked", _failing_write(Segment.write_locked))
                failed = await client.post(
                    f"/v1/topics/{TOPIC}/records", json=BODY, headers=headers
                )
            assert failed.status_code == 500, failed.text
            written = await _pull_values(client)
            # the other partitions were written: the request is not atomic across partitions
            assert written
            assert all(p != FAILING_PARTITION for p, _o, _v in written)
    finally:
        await backend.close()

    # The failed partition refuses writes until reopened: a restart, then the retry.
    backend = await EmbeddedBackend.open(settings.data_dir, settings.durability)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(create_app(settings, backend)), base_url=BASE_URL
        ) as client:
            retried = await client.post(f"/v1/topics/{TOPIC}/records", json=BODY, headers=headers)
            assert retried.status_code == 200, retried.text
            again = await client.post(f"/v1/topics/{TOPIC}/records", json=BODY, headers=headers)
            assert again.json() == retried.json()
            stored = await _pull_values(client)
    finally:
        await backend.close()

    copies = Counter(value for _p, _o, value in stored)
    sent = [record["value"] for record in BODY["records"]]
    assert copies == Counter(sent), f"extra or missing copies: {copies - Counter(sent)}"
    where = {value: (p, o) for p, o, value in stored}
    answered = [(place["partition"], place["offset"]) for place in retried.json()["offsets"]]
    assert answered == [where[value] for value in sent]
