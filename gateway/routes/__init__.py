"""The HTTP API's routes: thin modules that parse a request, call the domain, answer.

Each module holds one resource: `topics`, `schemas`, `produce`, `pull`, `streams`, `groups`, `ops`,
`asyncapi`, `console` (the web console's static files). Handlers get the `Context` from
`gateway.context` and raise `Problem`s or let storage and group errors escape;
`gateway.http.problems` turns those into responses.
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.routing import BaseRoute

from gateway.routes import (
    asyncapi,
    console,
    groups,
    ops,
    produce,
    pull,
    schemas,
    streams,
    topics,
)


def routes() -> Iterator[BaseRoute]:
    """Every route of the API, in matching order."""
    # produce first: it is the hot path, and the router tries routes in order
    for module in (produce, ops, asyncapi, topics, schemas, pull, streams, groups, console):
        yield from module.ROUTES
