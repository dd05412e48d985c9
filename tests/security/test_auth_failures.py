"""Failed authentication is rate-limited per client address (issue 18, item 8).

Authentication ran before the request-rate limiter, so the outside probe sent 20 bad keys
in a row and got 20 401s, while a valid key was limited after 3. Now every 401 takes a
token from its address's bucket (`auth_failure_burst` 10, refilled at
`auth_failure_limit_per_s` 0.2/s); an address with an empty bucket gets 429 with
Retry-After before its credentials are looked at, and other addresses are not affected.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import pytest

from gateway.http.limits import TokenBuckets, client_key
from gateway.settings import Settings
from tests.e2e.conftest import SERVERS, GatewayFactory, start_gateway  # noqa: F401 (a fixture)
from tests.security.transport import API_KEY, auth_config

BURST = Settings().auth_failure_burst
ATTACKER, USER = "127.0.0.2", "127.0.0.1"


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _client(url: str, source: str, key: str | None) -> httpx.Client:
    """A client whose connections come from `source` (any 127/8 address is loopback)."""
    return httpx.Client(
        base_url=url,
        transport=httpx.HTTPTransport(local_address=source),
        headers={"X-API-Key": key} if key is not None else {},
        timeout=10.0,
    )


@pytest.mark.e2e
def test_bad_keys_get_429_after_a_few_and_a_valid_key_elsewhere_keeps_working(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    gateway = start_gateway("--config", str(auth_config(tmp_path)))
    with (
        _client(gateway.url, ATTACKER, "lw_guessed_key") as attacker,
        _client(gateway.url, ATTACKER, API_KEY) as attacker_with_the_key,
        _client(gateway.url, ATTACKER, None) as attacker_anonymous,
        _client(gateway.url, USER, API_KEY) as user,
    ):
        assert user.put("/v1/topics/t", json={"partitions": 1}).status_code == 201
        statuses = []
        for _ in range(20):
            response = attacker.get("/v1/topics")
            statuses.append(response.status_code)
            if response.status_code == 429:
                problem = response.json()
                assert response.headers["content-type"] == "application/problem+json"
                assert problem["type"].endswith("/rate-limited")
                retry_after = int(response.headers["Retry-After"])
                assert 1 <= retry_after <= math.ceil(1 / Settings().auth_failure_limit_per_s)
            # meanwhile the valid key from another address is never held back
            assert user.get("/v1/topics").status_code == 200
        assert statuses == [401] * BURST + [429] * (20 - BURST)

        # From the blocked address nothing is checked, so nothing is learnt or written:
        # a valid key gets the same 429, and its produce writes nothing.
        record = {"records": [{"value": "x"}]}
        response = attacker_with_the_key.post("/v1/topics/t/records", json=record)
        assert response.status_code == 429
        assert attacker_anonymous.get("/v1/topics").status_code == 429
        end_offset = user.get("/v1/topics/t").json()["partitions"][0]["end_offset"]
        assert end_offset == 0
        # the paths anyone may reach stay open to it
        assert attacker.get("/healthz").status_code == 200


@pytest.mark.e2e
def test_the_limit_can_be_turned_off(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    gateway = start_gateway(
        "--config", str(auth_config(tmp_path)), "--auth-failure-limit-per-s", "0"
    )
    with _client(gateway.url, ATTACKER, "lw_guessed_key") as attacker:
        assert {attacker.get("/v1/topics").status_code for _ in range(2 * BURST)} == {401}


def test_a_bucket_refills_at_its_rate() -> None:
    buckets = TokenBuckets(rate_per_s=0.2, burst=2)
    now = time.monotonic()
    assert buckets.wait_s("a", now) == 0
    buckets.take("a", now)
    buckets.take("a", now)
    assert buckets.wait_s("a", now) == pytest.approx(5.0)
    assert buckets.wait_s("a", now + 5.0) == 0
    assert buckets.wait_s("b", now) == 0  # another address


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same host's other address
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(address: str, key: str) -> None:
    assert client_key(address) == key
