"""The media types a stream speaks, and which one a request's Accept header chooses."""

from __future__ import annotations

from gateway.http.problems import Problem

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


def negotiate(accept: str | None) -> str:
    """SSE or NDJSON by the Accept header; no header or */* means SSE (what `curl -N` sends)."""
    if not accept:
        return SSE
    best: tuple[float, str] | None = None
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        choice = {
            SSE: SSE,
            NDJSON: NDJSON,
            "*/*": SSE,
            "text/*": SSE,
            "application/*": NDJSON,
        }.get(media)
        if choice is not None and quality > 0 and (best is None or quality > best[0]):
            best = (quality, choice)
    if best is None:
        raise Problem("not-acceptable", f"this resource streams {SSE} or {NDJSON}")
    return best[1]


def names_sse(accept: str | None) -> bool:
    """The client asked for SSE by name, as every EventSource does."""
    try:
        return SSE in (accept or "").lower() and negotiate(accept) == SSE
    except Problem:
        return False
