"""A real `logway serve` killed between the append and the answer (the test-only fault
point LOGWAY_TEST_FAULT=after-append, gateway/faults.py): the client's retry with the
same Idempotency-Key, to the restarted gateway, gets the offsets the records were written
at, marked Idempotent-Replayed as a replay from the answer table is, and the log holds one
copy of each. The same key with another request is refused before anything is written,
and a retry whose records retention deleted is told so (409) and writes nothing."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from gateway.faults import FAULT_ENV
from tests.e2e.conftest import Gateway, GatewayFactory, create_topic, pull_all
from tests.e2e.kafka_harness import granian_only

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
server = granian_only
TOPIC = "payments"
# retention runs every 0.1 s instead of every 30 s
RETENTION_EVERY = ("LOGWAY_RETENTION_CHECK_INTERVAL_MS", "100")
BODY = {
    "records": [{"value": i} for i in range(20)]
    + [{"key": f"account-{i}", "value": 100 + i} for i in range(10)]
    + [{"partition": 2, "value": 200}]
}


def test_a_retry_after_a_crash_between_append_and_answer_writes_nothing(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {"Idempotency-Key": "payment-run-42"}
    monkeypatch.setenv(FAULT_ENV, "after-append")
    doomed = start_gateway()
    with httpx.Client(base_url=doomed.url, timeout=30) as client:
        create_topic(client, TOPIC, 3)
        with pytest.raises(httpx.TransportError):
            client.post(f"/v1/topics/{TOPIC}/records", json=BODY, headers=headers)
    assert doomed.process.wait(10) == -9

    monkeypatch.delenv(FAULT_ENV)
    restarted = start_gateway(data_dir=doomed.data_dir)
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        stored_before = [pull_all(client, TOPIC, p) for p in range(3)]
        assert sum(map(len, stored_before)) == len(BODY["records"])  # the append was durable
        retried = client.post(f"/v1/topics/{TOPIC}/records", json=BODY, headers=headers)
        assert retried.status_code == 200, retried.text
        stored = [pull_all(client, TOPIC, p) for p in range(3)]

    assert stored == stored_before, "the retry wrote records again"
    sent = [record["value"] for record in BODY["records"]]
    assert Counter(r["value"] for records in stored for r in records) == Counter(sent)
    where = {r["value"]: (p, r["offset"]) for p, records in enumerate(stored) for r in records}
    offsets = retried.json()["offsets"]
    assert [(o["partition"], o["offset"]) for o in offsets] == [where[v] for v in sent]
    assert retried.headers.get("Idempotent-Replayed") == "true", "rebuilt from the log"
    again = httpx.post(f"{restarted.url}/v1/topics/{TOPIC}/records", json=BODY, headers=headers)
    assert (again.json(), again.headers.get("Idempotent-Replayed")) == (retried.json(), "true")


KEY = {"Idempotency-Key": "payment-run-43"}


def _crash_after_append(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, topic: dict[str, Any], body: Any
) -> Gateway:
    """A gateway killed after appending `body` (key KEY) to the topic it created, restarted."""
    monkeypatch.setenv(FAULT_ENV, "after-append")
    doomed = start_gateway()
    with httpx.Client(base_url=doomed.url, timeout=30) as client:
        created = client.put(f"/v1/topics/{TOPIC}", json=topic)
        assert created.status_code == 201, created.text
        with pytest.raises(httpx.TransportError):
            client.post(f"/v1/topics/{TOPIC}/records", json=body, headers=KEY)
    assert doomed.process.wait(10) == -9
    monkeypatch.delenv(FAULT_ENV)
    return start_gateway(data_dir=doomed.data_dir)


def test_a_key_reused_after_a_crash_is_refused_before_anything_is_written(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = {"records": [{"partition": 0, "value": "first"}]}
    restarted = _crash_after_append(start_gateway, monkeypatch, {"partitions": 3}, first)
    other = {"records": [{"partition": p, "value": f"other-{p}"} for p in (1, 2, 0)]}
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        stored_before = [pull_all(client, TOPIC, p) for p in range(3)]
        for body in (other, {"records": [{"partition": 2, "value": "elsewhere"}]}):
            reused = client.post(f"/v1/topics/{TOPIC}/records", json=body, headers=KEY)
            assert reused.status_code == 422, reused.text
            assert reused.headers["content-type"] == "application/problem+json"
            assert reused.json()["type"].endswith("/idempotency-key-reused")
        assert [pull_all(client, TOPIC, p) for p in range(3)] == stored_before


def _deleted_by_retention(client: httpx.Client) -> None:
    """Roll the partition with unkeyed batches until retention deleted offset 0."""
    filler = {"records": [{"value": "x" * 400} for _ in range(4)]}
    for _ in range(4):  # each batch is larger than segment.bytes: a segment of its own
        assert client.post(f"/v1/topics/{TOPIC}/records", json=filler).status_code == 200
    while _partitions(client)[0]["log_start_offset"] == 0:  # RETENTION_EVERY
        time.sleep(0.1)


def _partitions(client: httpx.Client) -> list[dict[str, int]]:
    described = client.get(f"/v1/topics/{TOPIC}")
    assert described.status_code == 200, described.text
    partitions: list[dict[str, int]] = described.json()["partitions"]
    return partitions


@pytest.mark.parametrize("crash", [False, True], ids=["answer-stored", "rebuilt-from-log"])
def test_a_retry_whose_records_retention_deleted_is_told_so_and_writes_nothing(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, crash: bool
) -> None:
    topic = {"partitions": 1, "config": {"segment.bytes": 1024, "retention.bytes": 1024}}
    first = {"records": [{"value": "first"}]}
    monkeypatch.setenv(*RETENTION_EVERY)
    if crash:
        gateway = _crash_after_append(start_gateway, monkeypatch, topic, first)
    else:
        gateway = start_gateway()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        if not crash:
            assert client.put(f"/v1/topics/{TOPIC}", json=topic).status_code == 201
            answered = client.post(f"/v1/topics/{TOPIC}/records", json=first, headers=KEY)
            assert answered.json()["offsets"][0]["offset"] == 0
        _deleted_by_retention(client)
        before = _partitions(client)
        retried = client.post(f"/v1/topics/{TOPIC}/records", json=first, headers=KEY)
        assert retried.status_code == 409, retried.text
        assert retried.headers["content-type"] == "application/problem+json"
        problem = retried.json()
        assert problem["type"].endswith("/idempotent-records-deleted")
        assert (problem["partition"], problem["offset"]) == (0, 0)
        assert problem["log_start_offset"] == before[0]["log_start_offset"] > 0
        assert _partitions(client) == before
