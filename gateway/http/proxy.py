"""X-Forwarded-For/Proto/Prefix, believed only from the reverse proxies named in the settings.

Anyone can send these headers, so they change the request's client address, scheme and
path prefix only when the TCP peer is one of `Settings.trusted_proxies` (addresses or
CIDRs). The client is the rightmost X-Forwarded-For address that is not itself a trusted
proxy — a client-supplied X-Forwarded-For ahead of it (nginx's
`$proxy_add_x_forwarded_for` appends to it) is ignored. A prefix becomes the ASGI
`root_path` (and is put in front of `path`, as ASGI asks), so Starlette's routing strips it
and /openapi.json names it as the server URL. From any other peer the headers are left in
place and ignored.

Hypercorn's ProxyFixMiddleware trusts a fixed number of hops from whoever connects, and
Granian has none, so the check by peer address lives here, the same under both servers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDRs (`10.0.0.0/8`, `::1`); a malformed entry is a ValueError."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether `address` (an IP, IPv6 possibly in brackets) is in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address.strip().removeprefix("[").split("]")[0])
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _valid_prefix(prefix: str) -> bool:
    return (
        prefix.startswith("/")
        and prefix.isascii()
        and prefix.isprintable()
        and not any(c in prefix for c in "?#\\ ")
        and ".." not in prefix.split("/")
    )


class TrustedProxyMiddleware:
    """Applies forwarded headers from trusted peers to the ASGI scope (HTTP requests only)."""

    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        self.networks = parse_networks(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if (
            scope["type"] == "http"
            and self.networks
            and client is not None
            and is_trusted(client[0], self.networks)
        ):
            scope = self._apply(scope)
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope) -> Scope:
        forwarded_for = proto = prefix = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":  # several headers form one list
                text = value.decode("latin-1")
                forwarded_for = text if forwarded_for is None else f"{forwarded_for},{text}"
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").strip().lower()
            elif name == b"x-forwarded-prefix":
                prefix = value.decode("latin-1").strip().rstrip("/")
        scope = dict(scope)
        if forwarded_for is not None:
            hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
            while len(hops) > 1 and is_trusted(hops[-1], self.networks):
                hops.pop()
            if hops:
                scope["client"] = (hops[-1].removeprefix("[").split("]")[0], 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto
        if prefix and _valid_prefix(prefix):
            root_path = prefix + scope.get("root_path", "")
            scope["root_path"] = root_path
            scope["path"] = root_path + scope["path"].removeprefix(scope.get("root_path", ""))
            if "raw_path" in scope and scope["raw_path"] is not None:
                scope["raw_path"] = prefix.encode() + scope["raw_path"]
        return scope
