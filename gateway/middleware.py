"""The app's middleware, outermost first, from the settings.

1. TrustedProxyMiddleware: forwarded client address, scheme and prefix (trusted peers only),
   so everything below sees the real client;
2. ObservingMiddleware: latency histogram, JSON access log;
3. ProblemCORSMiddleware (only with cors_origins): CORS headers on every answer below it,
   429s and 503s included, so a browser can read why it was refused;
4. LimitsMiddleware: request rate and open streams.
"""

from __future__ import annotations

from starlette.middleware import Middleware

from gateway.cors import ProblemCORSMiddleware, check_cors_settings
from gateway.limits import LimitsMiddleware
from gateway.observe import ObservingMiddleware
from gateway.proxy import TrustedProxyMiddleware, parse_networks
from gateway.settings import Settings


def middleware(settings: Settings) -> list[Middleware]:
    """The middleware list for `Starlette(middleware=...)`; bad settings raise ValueError now
    (Starlette builds the stack only on the first request)."""
    parse_networks(settings.trusted_proxies)
    check_cors_settings(settings)
    stack = [
        Middleware(TrustedProxyMiddleware, trusted=settings.trusted_proxies),
        Middleware(ObservingMiddleware, access_log_json=settings.access_log_json),
    ]
    if settings.cors_origins:
        stack.append(Middleware(ProblemCORSMiddleware, settings=settings))
    stack.append(Middleware(LimitsMiddleware, settings=settings))
    return stack
