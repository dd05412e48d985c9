"""Requests authenticated by the auth cookie cannot change state from another site.

The probe's attack: with cookie auth, `<img src=".../v1/topics/b1/events?group=G&commit=auto
&from=earliest">` on any page the browser visits joins group G and commits offsets, so G's
real consumers skip records; SameSite does not help against a same-site subdomain. A
cookie-authenticated request that changes state (any POST, PUT or DELETE; a GET that joins
or heartbeats a group) must now come from the gateway's own origin or an allowed origin
(`Sec-Fetch-Site`, else `Origin`), and never from a no-cors destination such as an image.
Requests that carry their credentials in a header are not ambient and are left alone.

The HTTP-level tests send the headers browsers send; `test_in_chromium` runs the attack
and the legitimate EventSource in headless Chromium with pages on two other origins of
127.0.0.1 (same site as the gateway, as a subdomain would be).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.js_harness import (
    JS_DIR,
    QuietHandler,
    assert_passed,
    chromium_or_skip,
    http_server,
    node_modules_or_skip,
    run_node,
)
from tests.gateway.conftest import check_response, problem_type
from tests.security.conftest import (
    ALLOWED_ORIGIN,
    PARTITIONS,
    SecureGateway,
    SecureGatewayFactory,
    api_key,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).resolve().parent / "cross_site_browser.mjs"
EVIL_ORIGIN = "https://evil.app.example"
JOIN_BY_STREAM = "/v1/topics/secret/events?group=payments&commit=auto&from=earliest"
# what Chromium sends for each way a page can make a request
IMAGE = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
LINK = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
EVIL_FETCH = {
    "Origin": EVIL_ORIGIN,
    "Sec-Fetch-Site": "same-site",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Dest": "empty",
}
EVIL_NO_CORS = {**EVIL_FETCH, "Sec-Fetch-Mode": "no-cors"}
ALLOWED_EVENTSOURCE = {**EVIL_FETCH, "Origin": ALLOWED_ORIGIN, "Sec-Fetch-Site": "cross-site"}
ALLOWED_IMAGE = {**ALLOWED_EVENTSOURCE, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
OLD_BROWSER_IMAGE: dict[str, str] = {}  # no Fetch Metadata, no Origin


def _stream_status(client: httpx.Client, url: str, headers: dict[str, str]) -> httpx.Response:
    """Open a stream and close it after the status line (a refused one is a whole problem)."""
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            response.read()
        return response


def _group_untouched(secured: SecureGateway) -> None:
    with secured.client("admin") as admin:
        response = admin.get("/v1/groups/payments")
        assert response.status_code == 404, response.text  # never joined, nothing committed
        assert admin.get("/v1/topics").json()["topics"] != []  # and nothing deleted


def test_a_cookie_cannot_change_state_from_another_site(secure_gateway: SecureGateway) -> None:
    commit = {
        "member_id": "m",
        "generation": 1,
        "offsets": [{"topic": "secret", "partition": 0, "offset": 8}],
    }
    with secure_gateway.cookie_client("payments") as browser:
        for why, headers in {
            "an <img> on a same-site page": IMAGE,
            "a link from another site": LINK,
            "fetch or EventSource from another origin": EVIL_FETCH,
            "a no-cors fetch": EVIL_NO_CORS,
            "an <img> on an allowed origin's page": ALLOWED_IMAGE,
            "an <img> in a browser without Fetch Metadata": OLD_BROWSER_IMAGE,
        }.items():
            response = _stream_status(browser, JOIN_BY_STREAM, headers)
            assert response.status_code == 403, why
            assert problem_type(response) == "forbidden", why
            check_response(response, "/v1/topics/{topic}/events")
        for why, request in {
            "join": ("POST", "/v1/groups/payments/members", {"topic": "secret"}),
            "commit": ("POST", "/v1/groups/payments/offsets", commit),
            "produce": ("POST", "/v1/topics/secret/records", {"records": [{"value": 1}]}),
            "delete the group": ("DELETE", "/v1/groups/payments", None),
            "pull as a member": ("GET", "/v1/topics/secret/partitions/0/records?group=payments&member_id=m", None),
        }.items():  # fmt: skip
            method, url, body = request
            for headers in (EVIL_FETCH, EVIL_NO_CORS, OLD_BROWSER_IMAGE):
                response = browser.request(method, url, json=body, headers=headers)
                assert response.status_code == 403, (why, headers, response.text)
                assert "cross-site" in response.json()["detail"], why
    _group_untouched(secure_gateway)
    with secure_gateway.client("admin") as admin:
        ends = [p["end_offset"] for p in admin.get("/v1/topics/secret").json()["partitions"]]
        assert sum(ends) == 8  # nothing produced


def test_the_admin_cookie_cannot_change_topics_from_another_site(
    secure_gateway: SecureGateway,
) -> None:
    with secure_gateway.cookie_client("admin") as browser:
        for method, url in (("PUT", "/v1/topics/planted"), ("DELETE", "/v1/topics/secret")):
            response = browser.request(method, url, headers=EVIL_FETCH)
            assert response.status_code == 403, response.text
    with secure_gateway.client("admin") as admin:
        assert [t["name"] for t in admin.get("/v1/topics").json()["topics"]] == ["b1", "secret"]


def test_same_origin_and_allowed_origins_keep_working(secure_gateway: SecureGateway) -> None:
    own_origin = {"Origin": secure_gateway.url}  # a browser without Fetch Metadata, same origin
    typed_url = {
        "Sec-Fetch-Site": "none",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }
    with secure_gateway.cookie_client("payments") as browser:
        for headers in (SAME_ORIGIN, own_origin):
            joined = browser.post(
                "/v1/groups/payments/members", json={"topic": "secret"}, headers=headers
            )
            assert joined.status_code == 201, joined.text
            left = browser.delete(
                f"/v1/groups/payments/members/{joined.json()['member_id']}", headers=headers
            )
            assert left.status_code == 204, left.text
        for headers in (ALLOWED_EVENTSOURCE, SAME_ORIGIN, typed_url):
            with browser.stream("GET", JOIN_BY_STREAM, headers=headers) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["logway-member-id"]
                if "Origin" in headers:
                    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
                    assert response.headers["access-control-allow-credentials"] == "true"
        # reading is not a change of state: the rule leaves it alone
        for headers in (IMAGE, EVIL_FETCH, OLD_BROWSER_IMAGE):
            response = browser.get("/v1/topics/secret", headers=headers)
            assert response.status_code == 200, response.text


def test_credentials_in_a_header_are_not_ambient_and_are_left_alone(
    secure_gateway: SecureGateway,
) -> None:
    token = secure_gateway.hs256(
        {
            "sub": "service",
            "exp": int(time.time()) + 300,
            "permissions": ["consume:topic:secret", "consume:group:payments"],
        }
    )
    for headers in (
        {"X-API-Key": api_key("payments")},
        {"Authorization": f"Bearer {api_key('payments')}"},
        {"Authorization": f"Bearer {token}"},
    ):
        with secure_gateway.client(**headers, **EVIL_NO_CORS) as client:
            joined = client.post("/v1/groups/payments/members", json={"topic": "secret"})
            assert joined.status_code == 201, joined.text


def test_the_console_cannot_be_framed_and_runs_only_its_own_code(
    secure_gateway: SecureGateway,
) -> None:
    with secure_gateway.client() as anonymous:
        page = anonymous.get("/console")
    assert page.status_code == 200
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in page.headers["content-security-policy"].split(";")
        if directive.strip()
    }
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


# -- in a real browser ------------------------------------------------------------------------


@contextmanager
def _page_server(pages: dict[str, str]) -> Iterator[str]:
    """Serve `pages` (path -> HTML, filled in later) on a free loopback port."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path)
            self.answer(200 if page else 404, page or "", "text/html; charset=utf-8")

    with http_server(Handler) as url:
        yield url


@pytest.mark.browser
def test_in_chromium_an_image_cannot_join_but_an_allowed_eventsource_streams(
    secure_gateway_factory: SecureGatewayFactory, tmp_path: Path
) -> None:
    chromium_or_skip()
    node_modules_or_skip("playwright-core")
    evil_pages: dict[str, str] = {}
    good_pages: dict[str, str] = {}
    with _page_server(evil_pages) as evil_url, _page_server(good_pages) as good_url:
        secured = secure_gateway_factory(cors_origins=(good_url,))
        attack = f"{secured.url}{JOIN_BY_STREAM}"
        evil_pages["/"] = good_pages["/image"] = f'<!doctype html><img id="attack" src="{attack}">'
        good_pages["/"] = "<!doctype html><title>the app</title>"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "LOGWAY_JS_DIR": str(JS_DIR),
            "USER_DATA_DIR": str(tmp_path / "chromium-profile"),
            "GATEWAY_URL": secured.url,
            "EVIL_URL": evil_url,
            "GOOD_URL": good_url,
            "VICTIM_KEY": api_key("payments"),
            "ADMIN_KEY": api_key("admin"),
            "RECORDS": str(8),
            "PARTITIONS": str(PARTITIONS),
        }
        result = run_node([str(SCRIPT)], env, 90.0, cwd=JS_DIR)
    assert_passed(result, "cross_site_browser.mjs")
    assert "Traceback" not in secured.gateway.log()
