"""Lists, group descriptions and /metrics show a principal only what it may see.

The probe's finding: a principal refused `GET /v1/groups/payments` read that group's lag
and committed offsets, and every topic's end offsets and sizes, from /metrics, and the
lists named every topic and group.
"""

from __future__ import annotations

import pytest

from tests.gateway.conftest import check_response, problem_type
from tests.security.conftest import SecureGateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _commit_everywhere(secured: SecureGateway) -> None:
    """`payments` has committed offsets on `secret`, `b-team` on `b1` and on `secret`."""
    with secured.client("admin") as admin:
        for group, topic in (("payments", "secret"), ("b-team", "b1"), ("b-team", "secret")):
            response = admin.post(f"/v1/groups/{group}/seek", json={"topic": topic, "to": "latest"})
            assert response.status_code == 200, response.text


def test_lists_name_only_what_the_principal_may_see(secure_gateway: SecureGateway) -> None:
    _commit_everywhere(secure_gateway)
    with secure_gateway.client("admin") as admin:
        assert admin.put("/v1/topics/a-log", json={"partitions": 1}).status_code == 201
        topics = admin.get("/v1/topics").json()["topics"]
        assert [t["name"] for t in topics] == ["a-log", "b1", "secret"]
        assert [g["group"] for g in admin.get("/v1/groups").json()["groups"]] == [
            "b-team",
            "payments",
        ]
    with secure_gateway.client("attacker") as attacker:  # produce a*, consume b*, no group
        response = attacker.get("/v1/topics")
        assert [t["name"] for t in check_response(response, "/v1/topics")["topics"]] == [
            "a-log",
            "b1",
        ]
        response = attacker.get("/v1/groups")
        assert check_response(response, "/v1/groups")["groups"] == []
    with secure_gateway.client("analyst") as analyst:  # b* topics and groups
        assert [t["name"] for t in analyst.get("/v1/topics").json()["topics"]] == ["b1"]
        assert [g["group"] for g in analyst.get("/v1/groups").json()["groups"]] == ["b-team"]
    with secure_gateway.client("payments") as victim:
        assert [t["name"] for t in victim.get("/v1/topics").json()["topics"]] == ["secret"]
        assert [g["group"] for g in victim.get("/v1/groups").json()["groups"]] == ["payments"]


def test_a_group_description_hides_topics_the_principal_may_not_read(
    secure_gateway: SecureGateway,
) -> None:
    _commit_everywhere(secure_gateway)
    with secure_gateway.client("analyst") as analyst:
        joined = analyst.post("/v1/groups/b-team/members", json={"topic": "b1"})
        assert joined.status_code == 201, joined.text
    with secure_gateway.client("admin") as admin:
        shown = admin.get("/v1/groups/b-team").json()
        assert {p["topic"] for p in shown["partitions"]} == {"b1", "secret"}
    with secure_gateway.client("analyst") as analyst:
        response = analyst.get("/v1/groups/b-team")
        body = check_response(response, "/v1/groups/{group}")
    assert {p["topic"] for p in body["partitions"]} == {"b1"}
    assert [m["topic"] for m in body["members"]] == ["b1"]


def test_metrics_need_their_own_right(secure_gateway: SecureGateway) -> None:
    _commit_everywhere(secure_gateway)
    for principal in ("attacker", "analyst", "admin"):  # admin of topics and groups only
        with secure_gateway.client(principal) as client:
            response = client.get("/metrics")
            assert response.status_code == 403, (principal, response.text)
            assert problem_type(response) == "forbidden"
            check_response(response, "/metrics")
            assert "secret" not in response.text
    with secure_gateway.client() as anonymous:
        response = anonymous.get("/metrics")
        assert response.status_code == 401
        check_response(response, "/metrics")
    with secure_gateway.client("scraper") as scraper:
        response = scraper.get("/metrics")
        assert response.status_code == 200, response.text
        assert 'topic="secret"' in response.text
        assert 'group="payments"' in response.text
        # the right to scrape is no right to the API
        assert scraper.get("/v1/topics").json()["topics"] == []
        assert scraper.get("/v1/topics/secret").status_code == 403
