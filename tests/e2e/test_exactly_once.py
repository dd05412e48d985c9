"""A real `logway serve` killed between the append and the answer (the test-only fault
point LOGWAY_TEST_FAULT=after-append, gateway/faults.py): the client's retry with the
same Idempotency-Key, to the restarted gateway, gets the offsets the records were written
at, and the log holds one copy of each."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from gateway.faults import FAULT_ENV
from tests.e2e.conftest import GatewayFactory, create_topic, pull_all
from tests.e2e.kafka_harness import granian_only

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
server = granian_only
TOPIC = "payments"
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
