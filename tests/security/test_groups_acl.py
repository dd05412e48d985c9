"""Consumer groups with auth on: who may join, and whose member a member id is.

The probe's attack: a principal allowed only `produce:topic:a*` and `consume:topic:b*`
joined group `payments` on topic `secret` (201), took partitions from the real member,
and, joining with the victim's member id, moved the victim off `secret`. Joining now
needs the consume right on the topic and on the group, a member id belongs to the
principal that created it, and a principal without rights cannot tell whether a topic or
group exists (403 comes before 404).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.gateway.conftest import check_response, problem_type
from tests.security.conftest import PARTITIONS, SecureGateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

MEMBERS = "/v1/groups/{group}/members"


def _join(client: httpx.Client, group: str, topic: str, **body: str) -> httpx.Response:
    return client.post(f"/v1/groups/{group}/members", json={"topic": topic, **body})


def _describe(secured: SecureGateway, group: str) -> dict[str, Any]:
    with secured.client("admin") as admin:
        response = admin.get(f"/v1/groups/{group}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _refused(response: httpx.Response, path: str) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    assert problem_type(response) == "forbidden"
    body: dict[str, Any] = check_response(response, path)
    return body


def test_joining_needs_the_consume_right_on_the_group_and_on_the_topic(
    secure_gateway: SecureGateway,
) -> None:
    with secure_gateway.client("payments") as victim:
        joined = _join(victim, "payments", "secret")
        assert joined.status_code == 201, joined.text
    victim_member = joined.json()
    assert victim_member["partitions"] == list(range(PARTITIONS))

    with secure_gateway.client("attacker") as attacker:
        # no right on the group nor on the topic (the probe's exact request)
        _refused(_join(attacker, "payments", "secret"), MEMBERS)
        # its own topic is not enough: it has no right on any group
        _refused(_join(attacker, "payments", "b1"), MEMBERS)
        _refused(_join(attacker, "b-team", "b1"), MEMBERS)
    with secure_gateway.client("analyst") as analyst:
        # a right on the group is not enough: the topic is not its own
        body = _refused(_join(analyst, "b-team", "secret"), MEMBERS)
        assert (body["kind"], body["name"]) == ("topic", "secret")
        # nor the topic without the group
        body = _refused(_join(analyst, "payments", "b1"), MEMBERS)
        assert (body["kind"], body["name"]) == ("group", "payments")
        # with both rights it joins
        assert _join(analyst, "b-team", "b1").status_code == 201

    # the victim still owns every partition in the generation it joined; no group was made
    group = _describe(secure_gateway, "payments")
    assert group["generation"] == victim_member["generation"]
    assert [(m["member_id"], m["partitions"]) for m in group["members"]] == [
        (victim_member["member_id"], list(range(PARTITIONS)))
    ]
    with secure_gateway.client("admin") as admin:
        assert [g["group"] for g in admin.get("/v1/groups").json()["groups"]] == [
            "b-team",
            "payments",
        ]


def test_a_principal_without_rights_cannot_tell_what_exists(
    secure_gateway: SecureGateway,
) -> None:
    """The same 403 for a topic or group that exists and for one that does not."""
    with secure_gateway.client("payments") as victim:
        assert _join(victim, "payments", "secret").status_code == 201
    with secure_gateway.client("attacker") as attacker:
        answers = {
            "join an existing group and topic": _join(attacker, "payments", "secret"),
            "join a missing group and topic": _join(attacker, "no-such-group", "no-such-topic"),
            "describe an existing group": attacker.get("/v1/groups/payments"),
            "describe a missing group": attacker.get("/v1/groups/no-such-group"),
            "seek an existing group": attacker.post(
                "/v1/groups/payments/seek", json={"topic": "secret", "to": "earliest"}
            ),
            "stream an existing topic": attacker.get("/v1/topics/secret/events"),
            "stream a missing topic": attacker.get("/v1/topics/no-such-topic/events"),
        }
    for what, response in answers.items():
        assert response.status_code == 403, (what, response.text)
        assert problem_type(response) == "forbidden", what
    with secure_gateway.client("analyst") as analyst:
        # may use b* groups, not the topic: the seek must not say whether `secret` exists
        for topic in ("secret", "no-such-topic"):
            response = analyst.post("/v1/groups/b-team/seek", json={"topic": topic, "to": "latest"})
            body = _refused(response, "/v1/groups/{group}/seek")
            assert (body["kind"], body["name"]) == ("topic", topic)
    with secure_gateway.client("admin") as admin:
        assert admin.get("/v1/groups/b-team").status_code == 404  # the seeks made nothing


def test_streaming_in_a_group_needs_the_group_right(secure_gateway: SecureGateway) -> None:
    with secure_gateway.client("attacker") as attacker:
        for params in ({"group": "payments"}, {"group": "b-team", "commit": "auto"}):
            response = attacker.get("/v1/topics/b1/events", params=params)
            body = _refused(response, "/v1/topics/{topic}/events")
            assert (body["kind"], body["name"]) == ("group", params["group"])
        # a second group= cannot smuggle a group past the check
        response = attacker.get(
            "/v1/topics/b1/events?group=payments&group=b-team", headers={"accept": "*/*"}
        )
        assert response.status_code == 403
    with secure_gateway.client("admin") as admin:
        assert admin.get("/v1/groups").json()["groups"] == []


def test_a_member_id_belongs_to_the_principal_that_joined(secure_gateway: SecureGateway) -> None:
    """Another principal with the same rights can neither join as, leave, pull as nor
    commit as the victim's member, and its answers are those for an id nobody has."""
    with secure_gateway.client("payments") as victim:
        joined = _join(victim, "payments", "secret")
        assert joined.status_code == 201, joined.text
    member = joined.json()
    member_id, generation = member["member_id"], member["generation"]

    def attempts(client: httpx.Client, target: str) -> dict[str, httpx.Response]:
        commit = {
            "member_id": target,
            "generation": generation,
            "offsets": [{"topic": "secret", "partition": 0, "offset": 1}],
        }
        pull = {"group": "payments", "member_id": target}
        return {
            "join as": _join(client, "payments", "secret", member_id=target),
            "pull as": client.get("/v1/topics/secret/partitions/0/records", params=pull),
            "commit as": client.post("/v1/groups/payments/offsets", json=commit),
            "leave as": client.delete(f"/v1/groups/payments/members/{target}"),
        }

    with secure_gateway.client("auditor") as auditor:
        hijack = attempts(auditor, member_id)
        unknown = attempts(auditor, "nobody-has-this-id")
    for what, response in hijack.items():
        assert response.status_code == 404, (what, response.text)
        assert problem_type(response) == "unknown-member", what
        other = unknown[what]
        assert (other.status_code, problem_type(other)) == (404, "unknown-member"), what
        # the same words, but for the id: nothing tells the two apart
        assert response.json()["detail"].replace(member_id, "ID") == other.json()["detail"].replace(
            "nobody-has-this-id", "ID"
        ), what

    # the victim is untouched: same generation, every partition, nothing committed
    group = _describe(secure_gateway, "payments")
    assert group["generation"] == generation
    assert [(m["member_id"], m["topic"], m["partitions"]) for m in group["members"]] == [
        (member_id, "secret", list(range(PARTITIONS)))
    ]
    assert all(p["committed_offset"] is None for p in group["partitions"])
    with secure_gateway.client("payments") as victim:
        pulled = victim.get(
            "/v1/topics/secret/partitions/0/records",
            params={"group": "payments", "member_id": member_id},
        )
        assert pulled.status_code == 200, pulled.text
        assert pulled.json()["assignment"]["generation"] == generation
        again = _join(victim, "payments", "secret", member_id=member_id)
        assert again.status_code == 200, again.text
