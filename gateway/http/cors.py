"""CORS: browsers on other origins are let in only from an explicit allow-list.

Starlette's CORSMiddleware does the protocol; this module picks its settings and turns a
rejected preflight into a `cors-rejected` problem instead of a bare text 400. Credentials
(cookies, Authorization) are allowed only with an explicit list of origins: with `*` every
site a user visits could read their streams, so `cors_allow_credentials` with `*` is
refused at startup.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.http.problems import Problem
from gateway.settings import Settings

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID")
EXPOSED_HEADERS = ("Retry-After", "Idempotent-Replayed")
PREFLIGHT_MAX_AGE_S = 600


def check_cors_settings(settings: Settings) -> None:
    """A ValueError for settings that would let any site act with a user's credentials."""
    for origin in settings.cors_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"cors_origins: {origin!r} is not an origin like https://app.example")
        if origin != "*" and origin.rstrip("/") != origin:
            raise ValueError(f"cors_origins: {origin!r} must not end with '/'")
    if settings.cors_allow_credentials and (
        not settings.cors_origins or "*" in settings.cors_origins
    ):
        raise ValueError("cors_allow_credentials needs an explicit cors_origins list, never '*'")


class ProblemCORSMiddleware(CORSMiddleware):
    """CORSMiddleware whose preflight rejections are problem+json."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        check_cors_settings(settings)
        super().__init__(
            app,
            allow_origins=settings.cors_origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=settings.cors_allow_credentials,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE_S,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        detail = bytes(response.body).decode() or "Disallowed CORS request"
        problem = Problem("cors-rejected", f"{detail} for this server")
        # keep Vary and the allow-* headers the browser may use to explain the refusal
        problem.headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        return problem.to_response()
