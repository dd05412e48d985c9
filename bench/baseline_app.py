"""Bare Starlette handlers: the baselines the gateway's HTTP figures are compared with.

They parse the same JSON and answer the same shape as the gateway's produce route, but
keep records in memory with no log, no validation beyond shape, no fsync — what an ASGI
app costs on a given server before logway does any work. Also the stand-in app of the
server tests. Run one with `python -m bench.baseline_app --server granian --port 8090`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.server import SERVERS, run
from gateway.settings import Settings

_KEEP_RECORDS = 100_000  # the in-memory "log" is cut back to this many values


def _json(body: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code, media_type="application/json")


class BaselineState:
    """What the bare handlers share: an in-memory list of values and a shutdown flag."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.end_offset = 0
        self.shutting_down = asyncio.Event()

    def append(self, values: list[bytes]) -> int:
        base_offset = self.end_offset
        self.values.extend(values)
        self.end_offset += len(values)
        if len(self.values) > 2 * _KEEP_RECORDS:
            del self.values[:-_KEEP_RECORDS]
        return base_offset


def create_baseline_app() -> Starlette:
    """Produce (parse and append), health, an idle SSE stream and a ticking one (tests)."""
    state = BaselineState()

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def produce(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            records = body["records"]
            values = [orjson.dumps(record["value"]) for record in records]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"title": "bad request"}, 400)
        base_offset = state.append(values)
        timestamp = int(time.time() * 1000)
        offsets = [
            {"partition": 0, "offset": base_offset + index, "timestamp": timestamp}
            for index in range(len(values))
        ]
        return _json({"offsets": offsets})

    async def ticks(request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            tick = 0
            while not state.shutting_down.is_set():
                yield f"event: tick\nid: {tick}\ndata: {tick}\n\n".encode()
                tick += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.shutting_down.wait(), 0.05)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def idle_events(request: Request) -> Response:
        """An SSE stream that sends `retry:` and then nothing until shutdown (memory baseline)."""

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 2000\n\n"
            await state.shutting_down.wait()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/v1/topics/{topic}/records", produce, methods=["POST"]),
            Route("/v1/topics/{topic}/events", idle_events),
            Route("/ticks", ticks),
        ]
    )
    app.state.baseline = state
    return app


def main() -> int:
    """Serve the baseline app with logway's own runner, so only the handlers differ."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__)
    parser.add_argument("--server", choices=SERVERS, default=Settings().server)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--certfile", default=None)
    parser.add_argument("--keyfile", default=None)
    args = parser.parse_args()
    settings = Settings(
        host=args.host,
        port=args.port,
        server=args.server,
        certfile=Path(args.certfile) if args.certfile else None,
        keyfile=Path(args.keyfile) if args.keyfile else None,
        max_connections_per_client=0,  # as the gateway in bench/http.py: all load is local
    )
    app = create_baseline_app()
    state: BaselineState = app.state.baseline
    return run(app, settings, state.shutting_down.set)


if __name__ == "__main__":
    raise SystemExit(main())
