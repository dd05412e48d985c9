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

The page runs only its own files: a Content-Security-Policy allows scripts, styles and
connections to this origin only (an injected script or a record rendered as markup runs
nothing), forms submit nowhere (the token form is handled by script: never into a URL), and
`frame-ancestors 'none'` with `X-Frame-Options: DENY` keeps other sites from framing it
(clickjacking the produce form). `Referrer-Policy: no-referrer` keeps its URLs to itself.
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
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",  # the inline SVG icon
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_files = StaticFiles(directory=CONSOLE_DIR, follow_symlink=True, check_dir=False)


async def _serve(request: Request, name: str) -> Response:
    try:
        response = await _files.get_response(name, request.scope)
    except HTTPException:
        raise Problem("not-found", f"the console has no file {name!r}") from None
    response.headers["Cache-Control"] = "no-cache"
    response.headers.update(SECURITY_HEADERS)
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
