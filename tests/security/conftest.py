"""A real `logway serve` with auth on, for the attacks in tests/security.

`secure_gateway(...)` starts one through tests/e2e/conftest.py's `start_gateway` (free
loopback port, temporary data dir, stopped by PID) with every credential source on:

- API keys (`keys.toml`, digests only), one per principal in `PRINCIPALS`: the service
  that owns topic `secret` and group `payments`, an auditor with the same rights (so only
  the binding of member ids keeps them apart), the outside probe's principal (produce
  `a*`, consume `b*`), an analyst of the `b*` topics and groups, an admin of every topic
  and group, and a metrics scraper;
- HS256 JWTs with `HS256_SECRET`, RS256 and ES256 JWTs with the keys of a JWKS file
  (kids `rsa-1` and `ec-1`);
- the auth cookie (`logway_token`), which carries any of the above;
- CORS for `cors_origins` with credentials, as a browser app on another origin needs.

The topics `secret` (the victim's) and `b1` exist with 4 partitions and a few records.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.e2e.conftest import Gateway, GatewayFactory, start_gateway  # noqa: F401 (a fixture)
from tests.security.tokens import HS256_SECRET

ALLOWED_ORIGIN = "https://app.example"
PRINCIPALS: Mapping[str, tuple[str, ...]] = {
    "payments": ("produce:topic:secret", "consume:topic:secret", "consume:group:payments"),
    "auditor": ("consume:topic:secret", "consume:group:payments"),
    "attacker": ("produce:topic:a*", "consume:topic:b*"),
    "analyst": ("produce:topic:b*", "consume:topic:b*", "admin:group:b*"),
    "admin": ("admin:topic:*", "admin:group:*"),
    "scraper": ("admin:metrics",),
}
TOPICS = ("secret", "b1")
PARTITIONS = 4


def api_key(principal: str) -> str:
    """The API key of a principal of PRINCIPALS (its digest is in the keys file)."""
    return f"lw_{principal}_key_0123456789abcdef"


@dataclass
class SecureGateway:
    """A running gateway with auth on, and the credentials to talk to it."""

    gateway: Gateway
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, principal: str | None = None, **headers: str) -> httpx.Client:
        """A client that authenticates as `principal` with its API key (none: anonymous)."""
        if principal is not None:
            headers["X-API-Key"] = api_key(principal)
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)

    def cookie_client(self, principal: str, **headers: str) -> httpx.Client:
        """A client that authenticates only with the auth cookie, as a browser does."""
        return self.client(None, cookie=f"logway_token={api_key(principal)}", **headers)

    def hs256(self, claims: Mapping[str, Any] | None = None, **header: Any) -> str:
        return jwt.encode(_claims(claims), HS256_SECRET, algorithm="HS256", headers=header)

    def rs256(self, claims: Mapping[str, Any] | None = None, kid: str = "rsa-1") -> str:
        return jwt.encode(_claims(claims), self.rsa_key, algorithm="RS256", headers={"kid": kid})

    def es256(self, claims: Mapping[str, Any] | None = None, kid: str = "ec-1") -> str:
        return jwt.encode(_claims(claims), self.ec_key, algorithm="ES256", headers={"kid": kid})


def _claims(claims: Mapping[str, Any] | None) -> dict[str, Any]:
    default = {"sub": "token-user", "exp": int(time.time()) + 300, "permissions": ["admin:topic:*"]}
    return default if claims is None else dict(claims)


SecureGatewayFactory = Callable[..., SecureGateway]


@pytest.fixture
def server() -> str:
    """What is under test here is the app's, not the HTTP server's: the default one."""
    return "granian"


@pytest.fixture(scope="session")
def signing_keys() -> tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    )


@pytest.fixture
def secure_gateway_factory(
    start_gateway: GatewayFactory,  # noqa: F811 (the fixture imported above)
    signing_keys: tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey],
    tmp_path: Path,
) -> SecureGatewayFactory:
    """Starts a gateway with auth on; `cors_origins` and extra settings (TOML lines) vary."""
    rsa_key, ec_key = signing_keys
    keys = tmp_path / "keys.toml"
    keys.write_text(
        "".join(
            f'[keys.{name}]\nsha256 = "{hashlib.sha256(api_key(name).encode()).hexdigest()}"\n'
            f"permissions = {json.dumps(list(permissions))}\n\n"
            for name, permissions in PRINCIPALS.items()
        )
    )
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1"},
                    {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1"},
                ]
            }
        )
    )

    def start(cors_origins: tuple[str, ...] = (ALLOWED_ORIGIN,), extra: str = "") -> SecureGateway:
        config = tmp_path / f"logway-{time.monotonic_ns()}.toml"
        config.write_text(
            f'auth_api_keys_file = "{keys}"\n'
            f'jwt_hs256_secret = "{HS256_SECRET}"\n'
            f'jwt_jwks_file = "{jwks}"\n'
            f"cors_origins = {json.dumps(list(cors_origins))}\n"
            "cors_allow_credentials = true\n" + extra
        )
        secured = SecureGateway(start_gateway("--config", str(config)), rsa_key, ec_key)
        with secured.client("admin") as admin:
            for topic in TOPICS:
                response = admin.put(f"/v1/topics/{topic}", json={"partitions": PARTITIONS})
                assert response.status_code == 201, response.text
                records = [{"value": {"n": i}, "partition": i % PARTITIONS} for i in range(8)]
                response = admin.post(f"/v1/topics/{topic}/records", json={"records": records})
                assert response.status_code == 200, response.text
        return secured

    return start


@pytest.fixture
def secure_gateway(secure_gateway_factory: SecureGatewayFactory) -> SecureGateway:
    """A gateway with auth on whose only allowed browser origin is ALLOWED_ORIGIN."""
    return secure_gateway_factory()
