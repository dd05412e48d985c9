"""Every token problem is a 401, and a weak HS256 secret stops the server at start.

The probe's finding: an RS256 token whose `kid` names an EC key made PyJWT raise a
TypeError, a 500 with a stack trace for an unauthenticated request. Each case below was a
500 (or a crash) before; the hypothesis tests throw arbitrary and hostile tokens at a real
gateway and want nothing but a 401 (or a 200 for a token that really is valid).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import LOGWAY, free_port
from tests.gateway.conftest import check_response, problem_type
from tests.security.conftest import SecureGateway, SecureGatewayFactory
from tests.security.tokens import CLAIMS, CREDENTIALS, HEADERS, hs256_raw

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def secure_gateway(secure_gateway_factory: SecureGatewayFactory) -> SecureGateway:
    """The suite's gateway without the limit on failed authentications per address
    (tests/security/test_auth_failures.py): every token here fails on purpose, hundreds of
    times from 127.0.0.1, and from the eleventh the answer would be a 429."""
    return secure_gateway_factory(extra="auth_failure_limit_per_s = 0\n")


def _assert_401(secured: SecureGateway, token: str, why: str) -> None:
    with secured.client() as client:
        for headers in (
            {"Authorization": f"Bearer {token}"},
            {"cookie": f"logway_token={token}"},
        ):
            response = client.get("/v1/topics", headers=headers)
            assert response.status_code == 401, (why, response.status_code, response.text)
            assert problem_type(response) == "unauthorized", why
            check_response(response, "/v1/topics")
            assert "Traceback" not in response.text


def test_a_token_signed_for_another_kind_of_key_is_a_401(secure_gateway: SecureGateway) -> None:
    s = secure_gateway
    future = int(time.time()) + 300
    cases = {
        "RS256 naming the EC key (PyJWT: TypeError)": s.rs256(kid="ec-1"),
        "ES256 naming the RSA key (PyJWT: TypeError)": s.es256(kid="rsa-1"),
        "exp beyond a float (OverflowError)": s.hs256({"sub": "u", "exp": 10**400}),
        "exp beyond a float, RS256": s.rs256({"sub": "u", "exp": 10**400}),
        "kid that is not a string": hs256_raw({"alg": "RS256", "kid": [1]}, "{}"),
        "alg that is an object": hs256_raw({"alg": {}}, json.dumps({"sub": "u", "exp": future})),
        "header that is a list": hs256_raw([1], "{}"),
        "payload that is not JSON": hs256_raw({"alg": "HS256"}, "not json"),
        "nested too deep": hs256_raw({"alg": "HS256"}, "[" * 10_000 + "]" * 10_000),
        "permissions that are not strings": s.hs256(
            {"sub": "u", "exp": future, "permissions": [{}]}
        ),
        "sub that is a number": s.hs256({"sub": 7, "exp": future}),
        "no exp": s.hs256({"sub": "u"}),
        "none algorithm": hs256_raw({"alg": "none"}, json.dumps({"sub": "u", "exp": future})),
    }
    for why, token in cases.items():
        _assert_401(secure_gateway, token, why)
    with secure_gateway.client() as client:  # what still works
        for token in (s.rs256(), s.es256(), s.hs256()):
            response = client.get("/v1/topics", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
    assert "Traceback" not in secure_gateway.gateway.log()


FUZZ = settings(
    max_examples=75,  # tests/gateway/http/test_auth.py fuzzes the same boundary in process
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(header=HEADERS, claims=CLAIMS)
def test_fuzzed_tokens_signed_with_the_real_secret_are_a_200_or_a_401(
    secure_gateway: SecureGateway, header: Any, claims: dict[str, Any]
) -> None:
    token = hs256_raw(header, json.dumps(claims))
    with secure_gateway.client() as client:
        response = client.get("/v1/topics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 401), (header, claims, response.text)
    if response.status_code == 401:
        assert problem_type(response) == "unauthorized"


@FUZZ
@given(token=CREDENTIALS, where=st.sampled_from(["bearer", "api-key", "cookie"]))
def test_fuzzed_credentials_are_a_401(
    secure_gateway: SecureGateway, token: str, where: str
) -> None:
    headers = {
        "bearer": {"Authorization": f"Bearer {token}"},
        "api-key": {"X-API-Key": token},
        "cookie": {"cookie": f"logway_token={token}"},
    }[where]
    encoded = {k.encode(): v.encode("latin-1") for k, v in headers.items()}
    with httpx.Client(base_url=secure_gateway.url, timeout=10.0) as client:
        response = client.get("/v1/topics", headers=encoded)
    assert response.status_code == 401, (token, where, response.text)
    assert problem_type(response) == "unauthorized"


@pytest.mark.parametrize("secret", ["x" * 31, "short", "ü" * 15])
def test_an_hs256_secret_shorter_than_32_bytes_stops_the_server_at_start(
    tmp_path: Path, secret: str
) -> None:
    """RFC 7518 §3.2: an HS256 key is at least as long as the hash (256 bits)."""
    port = free_port()
    env = {**os.environ, "LOGWAY_JWT_HS256_SECRET": secret}
    args = ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    try:
        result = subprocess.run(
            [str(LOGWAY), *args], env=env, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"logway serve started with a {len(secret.encode())}-byte HS256 secret")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()  # one line, no usage text
    assert line.startswith("logway serve: auth: jwt_hs256_secret must be at least 32 bytes")
    assert secret not in result.stderr
    assert not (tmp_path / "data").exists()


def test_an_hs256_secret_of_32_bytes_is_enough(tmp_path: Path) -> None:
    env = {**os.environ, "LOGWAY_JWT_HS256_SECRET": "x" * 32}
    result = subprocess.run(
        [str(LOGWAY), "serve", "--print-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
