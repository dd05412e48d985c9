"""Hostile tokens for the token-boundary tests (tests/security/test_tokens.py against a real
gateway, tests/gateway/http/test_auth.py in process): signed with the real HS256 secret but
with any header and claims, or no token at all, just text shaped like one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from hypothesis import strategies as st

HS256_SECRET = "security-suite-hs256-secret-of-48-bytes-long-ok!"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_raw(header: Any, payload: str, secret: str = HS256_SECRET) -> str:
    """A token with any header and payload text, correctly signed with the HS256 secret:
    PyJWT's encoder would refuse to make most of these."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(payload.encode())
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        "sub": JSON_VALUES,
        "exp": JSON_VALUES | st.integers(min_value=int(time.time()), max_value=10**500),
        "nbf": JSON_VALUES,
        "iat": JSON_VALUES,
        "aud": JSON_VALUES,
        "iss": JSON_VALUES,
        "permissions": JSON_VALUES | st.lists(st.sampled_from(["admin:topic:*", "x", ""])),
        "scope": JSON_VALUES,
    },
)
HEADERS = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "RS256", "ES256", "none", "HS512", ""]) | JSON_VALUES},
    optional={"kid": st.sampled_from(["rsa-1", "ec-1", "nope"]) | JSON_VALUES,
              "crit": JSON_VALUES, "b64": JSON_VALUES, "typ": JSON_VALUES},
)  # fmt: skip
TOKEN_TEXT = st.text(
    # visible ASCII and obs-text (what HTTP allows in a field value), no cookie separators
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=';,\\"\x7f'),
    min_size=1,
    max_size=300,
)


CREDENTIALS = (
    TOKEN_TEXT
    | st.builds(lambda a, b, c: f"{a}.{b}.{c}", TOKEN_TEXT, TOKEN_TEXT, TOKEN_TEXT)
    | st.builds(
        lambda h, p: f"{b64(h)}.{b64(p)}.", st.binary(max_size=200), st.binary(max_size=200)
    )
)
