"""The app's middleware, outermost first, from the settings.

1. TrustedProxyMiddleware (only with trusted_proxies): forwarded client address, scheme
   and prefix, so everything below sees the real client;
2. ObservingMiddleware: latency histogram, JSON access log;
3. ProblemCORSMiddleware (only with cors_origins): CORS headers on every answer below it,
   401s, 429s and 503s included, so a browser can read why it was refused (and preflights
   are answered before auth, as browsers send them without credentials);
4. AuthFailureLimitMiddleware (with auth, unless auth_failure_limit_per_s is 0): an address
   that failed authentication too often gets 429s before its credentials are looked at,
   so it sits outside auth, where it sees every 401;
5. AuthMiddleware (only when auth is configured): who is asking and may they;
6. LimitsMiddleware: request rate (per API key or token subject, else per address) and
   open streams;
7. ProduceAdmissionMiddleware: the byte budget of produce requests in flight, innermost,
   so a request refused above never takes any of it.
"""

from __future__ import annotations

from starlette.middleware import Middleware

from gateway.http.admission import ProduceAdmissionMiddleware
from gateway.http.auth import Authenticator, AuthMiddleware, auth_enabled, warn_if_open
from gateway.http.cors import ProblemCORSMiddleware, check_cors_settings
from gateway.http.limits import AuthFailureLimitMiddleware, LimitsMiddleware
from gateway.http.observe import ObservingMiddleware
from gateway.http.proxy import TrustedProxyMiddleware, parse_networks
from gateway.settings import Settings


def middleware(settings: Settings) -> list[Middleware]:
    """The middleware list for `Starlette(middleware=...)`; bad settings raise ValueError now
    (Starlette builds the stack only on the first request)."""
    parse_networks(settings.trusted_proxies)
    check_cors_settings(settings)
    warn_if_open(settings)
    stack = []
    if settings.trusted_proxies:  # nobody trusted: no layer at all (the produce path is hot)
        stack.append(Middleware(TrustedProxyMiddleware, trusted=settings.trusted_proxies))
    stack.append(Middleware(ObservingMiddleware, access_log_json=settings.access_log_json))
    if settings.cors_origins:
        stack.append(Middleware(ProblemCORSMiddleware, settings=settings))
    if auth_enabled(settings):
        # built now, so a bad key file or JWKS fails at startup, not on the first request
        authenticator = Authenticator(settings)
        if settings.auth_failure_limit_per_s > 0:
            stack.append(Middleware(AuthFailureLimitMiddleware, settings=settings))
        stack.append(Middleware(AuthMiddleware, settings=settings, authenticator=authenticator))
    stack.append(Middleware(LimitsMiddleware, settings=settings))
    stack.append(Middleware(ProduceAdmissionMiddleware, settings=settings))
    return stack
