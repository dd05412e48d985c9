"""A stream refused for a while is, for an EventSource, a request to come back later.

A WHATWG EventSource (browsers, the `eventsource` npm package) fails for good on any status
but 200, and reconnects with its last event id after a stream that ends. So when a stream
is refused for a reason that passes -- the gateway starting or draining, its storage away
(503), its stream capacity or a client's stream limit or request rate reached (503, 429) --
a client whose Accept names `text/event-stream` (gateway/http/media.py) gets a 200 event
stream that names the problem in a comment, sets the reconnection time from Retry-After and
ends. The time has jitter, so that browsers refused together do not come back together.
Every other client gets the problem itself.
"""

from __future__ import annotations

import random

from starlette.responses import Response

from gateway.http.media import SSE
from gateway.http.problems import Problem

JITTER = 0.5  # the reconnection time is Retry-After times 1 to 1 + JITTER


def retry_later(problem: Problem) -> Response:
    """The 200 event stream that asks an EventSource to reconnect after Retry-After."""
    retry_after_s = float(problem.headers.get("Retry-After", "1"))
    retry_ms = round(retry_after_s * 1000 * random.uniform(1.0, 1.0 + JITTER))
    detail = " ".join(problem.detail.split())  # a comment is one line
    body = f": {problem.type.slug}: {detail}\nretry: {retry_ms}\n\n"
    return Response(body, media_type=SSE, headers={**problem.headers, "Cache-Control": "no-cache"})
