"""The web console: static files at `/console` (the page) and `/console/{asset}`.

The files live in gateway/console/ and ship as package data: no build step. The page is
plain JS that imports the JS client (`/console/logway.js`). gateway/console/logway.js is a
symlink to clients/js/logway.js, like gateway/openapi.yaml to openapi/openapi.yaml: one
source of truth in a checkout and an editable install, and a wheel (package data follows
the link) carries a copy. Hence `follow_symlink=True`; an asset is one path segment, so
nothing outside the directory can be named.

Every URL the page uses is relative (`console/console.js` from the page at `/console`,
`../v1/...` from the module), so the console works under any path prefix. Files are
revalidated on each load (`no-cache`, with the ETag StaticFiles sets), so an upgraded
gateway serves its matching console at once.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from gateway.http.problems import Problem

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
_files = StaticFiles(directory=CONSOLE_DIR, follow_symlink=True, check_dir=False)


async def _serve(request: Request, name: str) -> Response:
    try:
        response = await _files.get_response(name, request.scope)
    except HTTPException:
        raise Problem("not-found", f"the console has no file {name!r}") from None
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def page(request: Request) -> Response:
    return await _serve(request, "index.html")


async def asset(request: Request) -> Response:
    name: str = request.path_params["asset"]
    if (
        name.startswith(".") or name == "index.html"
    ):  # the page is /console: its URLs are relative to it
        raise Problem("not-found", f"the console has no file {name!r}")
    return await _serve(request, name)


ROUTES = [
    Route("/console", page, methods=["GET"]),
    Route("/console/{asset}", asset, methods=["GET"]),
]
