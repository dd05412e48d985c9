"""Authentication and authorization: API keys, HS256/RS256/ES256 JWTs, cookies, the opt-in
query token, per-topic and per-group permissions, streams that end when their token expires."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.routing import Route

from gateway.app import create_app
from gateway.http.auth import (
    Authenticator,
    Principal,
    changes_state,
    cross_site_refusal,
    required_permissions,
)
from gateway.http.problems import Problem
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from storage.types import TopicConfig
from tests.gateway.conftest import BASE_URL, serve_app
from tests.security.tokens import CLAIMS, CREDENTIALS, HEADERS, HS256_SECRET, hs256_raw

SECRET = "a-test-secret-of-at-least-32-bytes!!"
WRITER_KEY = "lw_writer_0123456789"
ADMIN_KEY = "lw_admin_0123456789"


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + slug)
    return body


def _keys_file(tmp_path: Path) -> Path:
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    path = tmp_path / "keys.toml"
    path.write_text(
        f"""
[keys.orders-writer]
sha256 = "{digest(WRITER_KEY)}"
permissions = ["produce:topic:orders*", "consume:topic:orders*", "consume:group:billing-*"]

[keys.ops]
sha256 = "{digest(ADMIN_KEY)}"
permissions = ["admin:topic:*", "admin:group:*", "admin:metrics"]
"""
    )
    return path


def _b64url(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _token(permissions: list[str], *, exp_in_s: float = 300, **extra: Any) -> str:
    claims = {"sub": "user-1", "exp": int(time.time() + exp_in_s), "permissions": permissions}
    return jwt.encode({**claims, **extra}, SECRET, algorithm="HS256")


@pytest.fixture
def auth_settings(settings: Settings, tmp_path: Path) -> Settings:
    return replace(settings, auth_api_keys_file=_keys_file(tmp_path), jwt_hs256_secret=SECRET)


@contextlib.asynccontextmanager
async def _client(app: Starlette, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers) as c:
        yield c


async def test_api_keys_by_topic_pattern_and_nothing_written_when_refused(
    auth_settings: Settings, backend: EmbeddedBackend
) -> None:
    app = create_app(auth_settings, backend)
    one = {"records": [{"value": 1}]}
    async with _client(app) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/openapi.json")).status_code == 200
        refused = await anonymous.get("/v1/topics")
        _problem(refused, 401, "unauthorized")
        assert refused.headers["www-authenticate"].startswith("Bearer")
        _problem(await anonymous.get("/metrics"), 401, "unauthorized")
    async with _client(app, **{"X-API-Key": "lw_wrong"}) as wrong:
        _problem(await wrong.get("/v1/topics"), 401, "unauthorized")
    async with _client(app, authorization=f"Bearer {ADMIN_KEY}") as admin:
        for topic in ("orders", "payments"):
            assert (
                await admin.put(f"/v1/topics/{topic}", json={"partitions": 1})
            ).status_code == 201
        assert (await admin.get("/metrics")).status_code == 200
    async with _client(app, **{"X-API-Key": WRITER_KEY}) as writer:
        assert (await writer.post("/v1/topics/orders/records", json=one)).status_code == 200
        body = _problem(
            await writer.post("/v1/topics/payments/records", json=one), 403, "forbidden"
        )
        assert body["action"] == "produce"
        assert body["name"] == "payments"
        _problem(await writer.delete("/v1/topics/orders"), 403, "forbidden")
        _problem(await writer.put("/v1/topics/orders2", json={}), 403, "forbidden")
        pulled = await writer.get("/v1/topics/orders/partitions/0/records")
        assert len(pulled.json()["records"]) == 1
        _problem(await writer.get("/v1/topics/payments/partitions/0/records"), 403, "forbidden")
        _problem(await writer.post("/v1/groups/other/seek", json={}), 403, "forbidden")
        body = _problem(await writer.get("/metrics"), 403, "forbidden")
        assert (body["action"], body["kind"]) == ("admin", "metrics")
    assert (await backend.partition_info("payments", 0)).end_offset == 0
    assert [t.name for t in await backend.list_topics()] == ["orders", "payments"]


async def test_hs256_tokens_expiry_signature_and_algorithm(
    auth_settings: Settings, backend: EmbeddedBackend
) -> None:
    await backend.create_topic("orders", 1, TopicConfig())
    app = create_app(auth_settings, backend)
    good = _token(["consume:topic:orders"])
    async with _client(app, authorization=f"Bearer {good}") as client:
        assert (await client.get("/v1/topics/orders")).status_code == 200
        _problem(await client.post("/v1/topics/orders/records", json={}), 403, "forbidden")
    scoped = jwt.encode(  # a space-separated scope works too
        {"sub": "u", "exp": int(time.time()) + 60, "scope": "openid consume:topic:ord*"},
        SECRET,
        algorithm="HS256",
    )
    async with _client(app, authorization=f"Bearer {scoped}") as client:
        assert (await client.get("/v1/topics/orders")).status_code == 200
    bad_tokens = {
        "expired": _token(["admin:topic:*"], exp_in_s=-60),
        "wrong secret": jwt.encode(
            {"sub": "x", "exp": int(time.time()) + 60, "permissions": ["admin:topic:*"]},
            "another-secret-of-at-least-32-bytes!!",
            algorithm="HS256",
        ),
        "no exp": jwt.encode({"sub": "x", "permissions": ["admin:topic:*"]}, SECRET, "HS256"),
        "alg none": ".".join(
            [_b64url({"alg": "none", "typ": "JWT"}), _b64url({"sub": "x", "exp": 2**31}), ""]
        ),
        "garbage": "a.b.c",
    }
    for why, token in bad_tokens.items():
        async with _client(app, authorization=f"Bearer {token}") as client:
            response = await client.get("/v1/topics/orders")
            assert response.status_code == 401, why
            _problem(response, 401, "unauthorized")


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
async def test_asymmetric_tokens_verified_with_a_jwks_file(
    kind: str, settings: Settings, backend: EmbeddedBackend, tmp_path: Path
) -> None:
    private: Any
    if kind == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
        stranger: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        public_jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
        stranger = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public_jwk, "kid": "k1", "alg": kind, "use": "sig"}]}))
    app = create_app(
        replace(
            settings, jwt_jwks_file=jwks, jwt_issuer="https://idp.example", jwt_audience="logway"
        ),
        backend,
    )
    claims = {
        "sub": "svc",
        "exp": int(time.time()) + 60,
        "iss": "https://idp.example",
        "aud": "logway",
        "permissions": ["admin:topic:*"],
    }
    good = jwt.encode(claims, private, algorithm=kind, headers={"kid": "k1"})
    async with _client(app, authorization=f"Bearer {good}") as client:
        assert (await client.put("/v1/topics/t", json={"partitions": 1})).status_code == 201
    forged = jwt.encode(claims, stranger, algorithm=kind, headers={"kid": "k1"})
    wrong_audience = jwt.encode({**claims, "aud": "other"}, private, kind, headers={"kid": "k1"})
    unknown_kid = jwt.encode(claims, private, algorithm=kind, headers={"kid": "k9"})
    for token in (forged, wrong_audience, unknown_kid):
        async with _client(app, authorization=f"Bearer {token}") as client:
            _problem(await client.delete("/v1/topics/t"), 401, "unauthorized")
    assert [t.name for t in await backend.list_topics()] == ["t"]


async def test_cookie_always_and_query_token_only_when_enabled(
    auth_settings: Settings, backend: EmbeddedBackend
) -> None:
    await backend.create_topic("orders", 1, TopicConfig())
    token = _token(["consume:topic:orders"])
    app = create_app(auth_settings, backend)
    async with _client(app, cookie=f"logway_token={token}") as client:
        assert (await client.get("/v1/topics/orders")).status_code == 200
    async with _client(app) as client:
        _problem(
            await client.get("/v1/topics/orders", params={"access_token": token}),
            401,
            "unauthorized",
        )
    app = create_app(replace(auth_settings, auth_query_token=True), backend)
    async with _client(app) as client:
        response = await client.get("/v1/topics/orders", params={"access_token": token})
        assert response.status_code == 200


async def test_streams_of_a_group_need_the_group_permission(
    auth_settings: Settings, backend: EmbeddedBackend
) -> None:
    await backend.create_topic("orders", 1, TopicConfig())
    app = create_app(auth_settings, backend)
    async with _client(app, **{"X-API-Key": WRITER_KEY}) as writer:
        body = _problem(
            await writer.get("/v1/topics/orders/events", params={"group": "analytics"}),
            403,
            "forbidden",
        )
        assert body["kind"] == "group"


async def test_a_stream_ends_with_expired_when_its_token_expires(
    auth_settings: Settings, backend: EmbeddedBackend
) -> None:
    await backend.create_topic("orders", 1, TopicConfig())
    app = create_app(auth_settings, backend)
    url, stop, task = await serve_app(app)
    try:
        token = _token(
            ["consume:topic:orders", "produce:topic:orders"], exp_in_s=3
        )  # exp is whole seconds: 2-3 s from now
        headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as client:
            await client.post("/v1/topics/orders/records", json={"records": [{"value": 1}]})
            lines: list[str] = []
            async with client.stream("GET", "/v1/topics/orders/events?from=earliest") as stream:
                assert stream.status_code == 200
                async with asyncio.timeout(20):
                    lines = [line async for line in stream.aiter_lines()]  # until it ends
        events = [line for line in lines if line.startswith("event: ")]
        assert events == ["event: record", "event: expired"]
        assert "expired" in lines[-2]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_loud_warning_when_listening_beyond_loopback_without_auth(
    settings: Settings, backend: EmbeddedBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="logway.auth"):
        create_app(replace(settings, host="127.0.0.1"), backend)
        assert not caplog.records
        create_app(replace(settings, host="0.0.0.0"), backend)
        assert "AUTHENTICATION IS OFF" in caplog.text


def test_bad_key_files_and_permissions_fail_at_startup(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[keys.a]\nsha256 = "abc"\npermissions = []\n')
    with pytest.raises(ValueError, match="SHA-256"):
        create_app(replace(settings, auth_api_keys_file=path))
    path.write_text(f'[keys.a]\nsha256 = "{"0" * 64}"\npermissions = ["write:topic:*"]\n')
    with pytest.raises(ValueError, match="permission"):
        create_app(replace(settings, auth_api_keys_file=path))
    with pytest.raises(ValueError, match="at least 32 bytes"):
        create_app(replace(settings, jwt_hs256_secret="x" * 31))
    for spelling in ("admin:metrics:*", "consume:metrics", "metrics"):
        path.write_text(f'[keys.a]\nsha256 = "{"0" * 64}"\npermissions = ["{spelling}"]\n')
        with pytest.raises(ValueError, match="admin:metrics"):
            create_app(replace(settings, auth_api_keys_file=path))


# Fetch Metadata and Origin as browsers send them, and whether a cookie request that changes
# state may go ahead (None) or is refused (the reason names what was wrong)
OWN = "https://logway.example"
ALLOWED = frozenset({"https://app.example"})


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}, True),
        ({"sec-fetch-site": "none", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}, True),
        ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty",
          "origin": "https://app.example"}, True),  # EventSource on the allowed origin
        ({"origin": OWN}, True),  # a browser without Fetch Metadata, on the console
        ({"origin": "https://app.example"}, True),
        ({"sec-fetch-site": "same-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"}, False),
        ({"sec-fetch-site": "same-origin", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"}, False),
        ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "empty",
          "origin": "https://app.example"}, False),  # a no-cors fetch, even from the app
        ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors", "sec-fetch-dest": "iframe",
          "origin": "https://app.example"}, False),
        ({"sec-fetch-site": "same-site", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty",
          "origin": "https://evil.app.example"}, False),
        ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}, False),
        ({"origin": "null"}, False),
        ({}, False),  # an <img> in a browser without Fetch Metadata
    ],
)  # fmt: skip
def test_cross_site_refusal(headers: dict[str, str], allowed: bool) -> None:
    why = cross_site_refusal(Headers(headers), ALLOWED, OWN)
    assert (why is None) == allowed, why


def test_what_changes_state() -> None:
    assert changes_state("POST", {})
    assert changes_state("DELETE", {})
    assert changes_state("PUT", {})
    assert changes_state("GET", {"group": ["g"]})  # a stream joins, a pull heartbeats
    assert changes_state("HEAD", {"group": [""]})
    assert not changes_state("GET", {"from": ["earliest"]})


def test_every_route_has_an_authorization_rule(app: Starlette) -> None:
    """Deny by default: a route without a rule is refused to everyone, so a new route
    must come with its rule (CONTRIBUTING.md, adding a route)."""
    public = {"/healthz", "/readyz", "/openapi.json", "/console", "/console/{asset}"}
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path in public:
            continue
        path = route.path.format(topic="t", group="g", partition="0", member_id="m", version="1")
        for method in route.methods or ():
            assert required_permissions(method, path, {}) is not None, (method, route.path)
    assert required_permissions("GET", "/v1/no-such-route", {}) is None


@pytest.fixture(scope="module")
def fuzz_authenticator(tmp_path_factory: pytest.TempPathFactory) -> Authenticator:
    """Every credential source on: the HS256 secret, a JWKS with an RSA and an EC key (the
    kids the hostile headers name), API keys."""
    directory = tmp_path_factory.mktemp("fuzz-auth")
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwks = directory / "jwks.json"
    keys = [
        {**json.loads(RSAAlgorithm.to_jwk(rsa_public)), "kid": "rsa-1"},
        {**json.loads(ECAlgorithm.to_jwk(ec_public)), "kid": "ec-1"},
    ]
    jwks.write_text(json.dumps({"keys": keys}))
    return Authenticator(
        Settings(
            auth_api_keys_file=_keys_file(directory),
            jwt_hs256_secret=HS256_SECRET,
            jwt_jwks_file=jwks,
        )
    )


def _principal_or_401(authenticator: Authenticator, token: str) -> None:
    outcome: Principal | Problem
    try:
        outcome = authenticator.authenticate(token)
    except Problem as problem:
        outcome = problem
    assert isinstance(outcome, Principal) or outcome.type.status == 401, outcome


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow  # ~5 s of signed tokens
@FUZZ
@given(header=HEADERS, claims=CLAIMS)
def test_any_signed_token_is_a_principal_or_a_401(
    fuzz_authenticator: Authenticator, header: Any, claims: dict[str, Any]
) -> None:
    """The token boundary in process, with more examples than tests/security/test_tokens.py
    sends over HTTP: whatever the header and claims, nothing but a Principal or a 401."""
    _principal_or_401(fuzz_authenticator, hs256_raw(header, json.dumps(claims)))


@FUZZ
@given(token=CREDENTIALS)
def test_any_credential_is_a_principal_or_a_401(
    fuzz_authenticator: Authenticator, token: str
) -> None:
    _principal_or_401(fuzz_authenticator, token)
