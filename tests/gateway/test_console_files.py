"""The console's files as the gateway serves them (in process; the browser test is
tests/e2e/test_console.py): types, revalidation, 404 problems, and only relative URLs."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from gateway.routes.console import CONSOLE_DIR

REPO = Path(__file__).resolve().parents[2]


async def test_the_page_and_its_assets_are_served_for_revalidation(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    again = await client.get("/console", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    for name, media_type in [
        ("console.js", "javascript"),
        ("console.css", "text/css"),
        ("logway.js", "javascript"),
    ]:
        response = await client.get(f"/console/{name}")
        assert response.status_code == 200, name
        assert media_type in response.headers["content-type"], name
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_logway_js_is_the_js_client(client: httpx.AsyncClient) -> None:
    response = await client.get("/console/logway.js")
    assert response.content == (REPO / "clients" / "js" / "logway.js").read_bytes()


async def test_unknown_hidden_and_index_files_are_not_found_problems(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/console/nope.js", "/console/.gitignore", "/console/index.html"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json", path
    escape = await client.get("/console/..%2F..%2Fpyproject.toml")
    assert escape.status_code == 404


def test_every_url_in_the_console_is_relative() -> None:
    """A leading "/" would leave a path prefix (a proxy's /logway/) behind."""
    html = (CONSOLE_DIR / "index.html").read_text()
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not url.startswith("/"), url
    script = (CONSOLE_DIR / "console.js").read_text()
    assert re.findall(r"""['"`]/v1""", script) == []  # API calls go through the client
    assert "new URL('..', import.meta.url)" in script
