"""Idempotency-Key is scoped by principal and topic.

The probe's finding: the key was one namespace for everyone, so one principal's key made
another's produce a 422 for 24 hours and told it the key had been used.
"""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import problem_type
from tests.security.conftest import SecureGateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

KEY = {"Idempotency-Key": "order-1"}


def _produce(client: httpx.Client, topic: str, value: str) -> httpx.Response:
    return client.post(
        f"/v1/topics/{topic}/records",
        json={"records": [{"value": value, "partition": 0}]},
        headers=KEY,
    )


def _values(secured: SecureGateway, topic: str) -> list[object]:
    with secured.client("admin") as admin:
        response = admin.get(f"/v1/topics/{topic}/partitions/0/records", params={"offset": 2})
        assert response.status_code == 200, response.text
        return [r["value"] for r in response.json()["records"]]


def test_one_principals_key_neither_blocks_nor_informs_another(
    secure_gateway: SecureGateway,
) -> None:
    with secure_gateway.client("payments") as victim:
        first = _produce(victim, "secret", "victim's order")
        assert first.status_code == 200, first.text
    with secure_gateway.client("analyst") as other:
        mine = _produce(other, "b1", "another principal's order")
        assert mine.status_code == 200, mine.text
        assert "idempotent-replayed" not in mine.headers
        # its own retry replays its own answer
        retried = _produce(other, "b1", "another principal's order")
        assert retried.status_code == 200
        assert retried.headers["idempotent-replayed"] == "true"
        assert retried.json() == mine.json()
    with secure_gateway.client("payments") as victim:
        retried = _produce(victim, "secret", "victim's order")
        assert retried.headers["idempotent-replayed"] == "true"
        assert retried.json() == first.json()
        # the same principal reusing the key for another request is still told so
        reused = _produce(victim, "secret", "another order")
        assert (reused.status_code, problem_type(reused)) == (422, "idempotency-key-reused")
    assert _values(secure_gateway, "secret") == ["victim's order"]
    assert _values(secure_gateway, "b1") == ["another principal's order"]


def test_a_key_is_scoped_by_topic_too(secure_gateway: SecureGateway) -> None:
    with secure_gateway.client("admin") as admin:
        assert _produce(admin, "secret", "to secret").status_code == 200
        other_topic = _produce(admin, "b1", "to b1")
        assert other_topic.status_code == 200, other_topic.text
        assert "idempotent-replayed" not in other_topic.headers
    assert _values(secure_gateway, "secret") == ["to secret"]
    assert _values(secure_gateway, "b1") == ["to b1"]
