"""Authentication (API keys, JWT bearer tokens) and authorization by topic and group patterns.

Auth is on when any credential source is configured (`auth_api_keys_file`,
`jwt_hs256_secret`, `jwt_jwks_file`); otherwise every request is let in, which is only
safe on loopback, so `warn_if_open` shouts when the server listens anywhere else.

Credentials, first found wins: `Authorization: Bearer <token>`, `X-API-Key: <key>`, the
HttpOnly cookie `auth_cookie` (browsers' EventSource cannot send headers, but it sends
cookies), and `?access_token=` only with `auth_query_token` (query strings end up in
access logs and browser history). A token with two dots is a JWT; anything else an API key.

- API keys: a TOML file of `[keys.<name>]` tables with `sha256` (hex digest of the key: the
  file holds no secret) and `permissions`.
- JWTs: HS256 with `jwt_hs256_secret`, RS256/ES256 with the keys of a JWKS file (chosen by
  `kid`); `exp` is checked, `iss`/`aud` when configured. Permissions come from the
  `permissions` claim (a list) or `scope` (space-separated).

A permission is `<action>:<kind>:<pattern>`: action `produce`, `consume` or `admin`, kind
`topic` or `group`, pattern an fnmatch pattern of names (`orders.*`). `admin` implies
`produce` and `consume` on the same names. What each request needs is decided from its
method and path in `required_permissions`.

401 `unauthorized` (no or bad credentials, with `WWW-Authenticate: Bearer`) and 403
`forbidden` (valid, not allowed) are problem+json. A stream opened with an expiring token
ends at the expiry: an `event: expired` (SSE) or `{"event": "expired"}` line (NDJSON) first,
so the client gets a fresh token and reconnects with its cursor.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import ipaddress
import logging
import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.problems import Problem
from gateway.settings import Settings

logger = logging.getLogger("logway.auth")

ACTIONS = ("produce", "consume", "admin")
KINDS = ("topic", "group")
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/console"})
# the console's static files hold no data; the page asks for a token and sends it on API calls
PUBLIC_PREFIXES = ("/console/",)
PRINCIPAL_SCOPE_KEY = "logway.principal"
ASYMMETRIC_ALGORITHMS = ["RS256", "ES256"]


@dataclass(frozen=True, slots=True)
class Permission:
    action: str
    kind: str
    pattern: str

    @classmethod
    def parse(cls, text: str) -> Permission:
        parts = text.split(":", 2)
        if len(parts) != 3 or parts[0] not in ACTIONS or parts[1] not in KINDS or not parts[2]:
            raise ValueError(
                f"permission {text!r} is not <produce|consume|admin>:<topic|group>:<pattern>"
            )
        return cls(*parts)

    def allows(self, action: str, kind: str, name: str) -> bool:
        return (
            (self.action in action.split("|") or self.action == "admin")  # "a|b": a or b
            and self.kind == kind
            and fnmatch.fnmatchcase(name, self.pattern)
        )


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    permissions: tuple[Permission, ...]
    expires_at: float | None = None  # seconds since the epoch (a JWT's exp)

    def allows(self, action: str, kind: str, name: str) -> bool:
        return any(p.allows(action, kind, name) for p in self.permissions)


Need = tuple[str, str, str]  # (action, kind, name)

_TOPIC = r"/v1/topics/(?P<topic>[^/]+)"
_GROUP = r"/v1/groups/(?P<group>[^/]+)"
_RULES: list[tuple[str, re.Pattern[str], str, str]] = [
    # (method, path, action, kind) — the kind's name is the named group of the path
    ("PUT", re.compile(_TOPIC + "$"), "admin", "topic"),
    ("DELETE", re.compile(_TOPIC + "$"), "admin", "topic"),
    ("GET", re.compile(_TOPIC + "$"), "consume", "topic"),
    ("POST", re.compile(_TOPIC + "/records$"), "produce", "topic"),
    ("GET", re.compile(_TOPIC + "/partitions/[^/]+/records$"), "consume", "topic"),
    ("GET", re.compile(_TOPIC + "/events$"), "consume", "topic"),
    # a topic's schemas: producers and consumers read them, admins change them
    ("GET", re.compile(_TOPIC + "/schemas(/[^/]+)?$"), "consume|produce", "topic"),
    ("POST", re.compile(_TOPIC + "/schemas$"), "admin", "topic"),
    ("PUT", re.compile(_TOPIC + "/schemas/compatibility$"), "admin", "topic"),
    ("DELETE", re.compile(_TOPIC + "/schemas/[^/]+$"), "admin", "topic"),
    ("GET", re.compile(_GROUP + "$"), "consume", "group"),
    ("DELETE", re.compile(_GROUP + "$"), "admin", "group"),
    ("POST", re.compile(_GROUP + "/offsets$"), "consume", "group"),
    ("POST", re.compile(_GROUP + "/seek$"), "admin", "group"),
    ("DELETE", re.compile(_GROUP + "/members/[^/]+$"), "consume", "group"),
]


def required_permissions(method: str, path: str, query: Mapping[str, list[str]]) -> list[Need]:
    """What a request needs; [] means any authenticated principal (lists, metrics)."""
    method = "GET" if method == "HEAD" else method
    needs: list[Need] = []
    for rule_method, pattern, action, kind in _RULES:
        match = pattern.match(path)
        if match and rule_method == method:
            needs.append((action, kind, match.group(kind)))
            break
    if needs and needs[0][1] == "topic" and method == "GET":
        for group in query.get("group", []):  # streams and pulls of a consumer group
            needs.append(("consume", "group", group))
    return needs


def _load_api_keys(path: Path) -> dict[str, Principal]:
    with path.open("rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - {"keys"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    by_digest: dict[str, Principal] = {}
    for name, entry in data.get("keys", {}).items():
        if set(entry) - {"sha256", "permissions"} or "sha256" not in entry:
            raise ValueError(f"{path}: keys.{name} needs sha256 and permissions, nothing else")
        digest = str(entry["sha256"]).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{path}: keys.{name}.sha256 is not a hex SHA-256 digest")
        permissions = tuple(Permission.parse(p) for p in entry.get("permissions", []))
        by_digest[digest] = Principal(name, permissions)
    return by_digest


def auth_enabled(settings: Settings) -> bool:
    return bool(settings.auth_api_keys_file or settings.jwt_hs256_secret or settings.jwt_jwks_file)


def warn_if_open(settings: Settings) -> None:
    """Log loudly when the server is reachable beyond loopback with no authentication."""
    if auth_enabled(settings):
        return
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback:
        logger.warning(
            "AUTHENTICATION IS OFF and the gateway listens on %s: anyone who can reach it "
            "can read, write and delete every topic. Configure auth_api_keys_file, "
            "jwt_hs256_secret or jwt_jwks_file, or listen on 127.0.0.1 behind a proxy.",
            settings.host,
        )


class Authenticator:
    """Turns a presented token into a Principal, or raises a 401 Problem."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api_keys = (
            _load_api_keys(settings.auth_api_keys_file) if settings.auth_api_keys_file else {}
        )
        self.jwks: jwt.PyJWKSet | None = None
        if settings.jwt_jwks_file is not None:
            self.jwks = jwt.PyJWKSet.from_json(settings.jwt_jwks_file.read_text())

    def authenticate(self, token: str) -> Principal:
        if token.count(".") == 2 and (self.settings.jwt_hs256_secret or self.jwks):
            return self._jwt(token)
        principal = self.api_keys.get(hashlib.sha256(token.encode()).hexdigest())
        if principal is None:
            raise _unauthorized("unknown API key or malformed token")
        return principal

    def _jwt(self, token: str) -> Principal:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            key: Any
            if algorithm == "HS256" and s.jwt_hs256_secret:
                key, algorithms = s.jwt_hs256_secret, ["HS256"]
            elif algorithm in ASYMMETRIC_ALGORITHMS and self.jwks is not None:
                key, algorithms = self.jwks[str(header.get("kid"))].key, ASYMMETRIC_ALGORITHMS
            else:
                raise _unauthorized(f"tokens signed with {algorithm!r} are not accepted")
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                options={"require": ["exp", "sub"], "verify_aud": s.jwt_audience is not None},
                leeway=5,
            )
        except (jwt.PyJWTError, KeyError) as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        raw = claims.get("permissions")
        if raw is None:
            raw = str(claims.get("scope", "")).split()
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise _unauthorized("the token's permissions claim is not a list of strings")
        permissions = []
        for text in raw:
            try:
                permissions.append(Permission.parse(text))
            except ValueError:
                continue  # scopes meant for other services
        return Principal(str(claims["sub"]), tuple(permissions), float(claims["exp"]))


def _unauthorized(detail: str) -> Problem:
    return Problem("unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="logway"'})


def _token(scope: Scope, settings: Settings) -> str | None:
    cookie_header: str | None = None
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        text = value.decode("latin-1")
        if name == b"authorization":
            scheme, _, credentials = text.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        elif name == b"x-api-key":
            return text.strip()
        elif name == b"cookie":
            cookie_header = text
    if cookie_header:
        cookies: SimpleCookie = SimpleCookie()
        cookies.load(cookie_header)
        if settings.auth_cookie in cookies:
            return str(cookies[settings.auth_cookie].value)
    if settings.auth_query_token and scope.get("query_string"):
        query: bytes = scope["query_string"]
        values = parse_qs(query.decode("latin-1")).get("access_token")
        if values:
            return values[0]
    return None


class AuthMiddleware:
    """Authenticates, authorizes, and ends streams when their token expires."""

    def __init__(self, app: ASGIApp, settings: Settings, authenticator: Authenticator) -> None:
        self.app = app
        self.settings = settings
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            principal = self._authorize(scope, path)
        except Problem as problem:
            await problem.to_response()(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal.name
        if principal.expires_at is not None and path.endswith("/events"):
            await _until_expiry(self.app, scope, receive, send, principal.expires_at)
        else:
            await self.app(scope, receive, send)

    def _authorize(self, scope: Scope, path: str) -> Principal:
        token = _token(scope, self.settings)
        if token is None:
            raise _unauthorized("this server needs an API key or a bearer token")
        principal = self.authenticator.authenticate(token)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        for action, kind, name in required_permissions(scope["method"], path, query):
            if not principal.allows(action, kind, name):
                raise Problem(
                    "forbidden",
                    f"{principal.name!r} may not {action.replace('|', ' or ')} {kind} {name!r}",
                    action=action.split("|")[0],
                    kind=kind,
                    name=name,
                )
        return principal


async def _until_expiry(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, expires_at: float
) -> None:
    """Run a stream until its token expires, then send `expired` and end the response."""
    lock = asyncio.Lock()
    ended = False
    media_type = b""

    async def guarded_send(message: Message) -> None:
        nonlocal media_type
        async with lock:
            if ended:
                return
            if message["type"] == "http.response.start":
                media_type = dict(message.get("headers", [])).get(b"content-type", b"")
            await send(message)

    task = asyncio.ensure_future(app(scope, receive, guarded_send))
    done, _ = await asyncio.wait({task}, timeout=max(0.0, expires_at - time.time()))
    if task in done:
        task.result()
        return
    async with lock:
        ended = True
        if media_type:
            data = orjson.dumps({"detail": "the token expired; reconnect with a fresh one"})
            if media_type.startswith(b"text/event-stream"):
                chunk = b"event: expired\ndata: " + data + b"\n\n"
            else:
                chunk = orjson.dumps({"event": "expired", "detail": data.decode()}) + b"\n"
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await _unauthorized("the token expired").to_response()(scope, receive, send)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
