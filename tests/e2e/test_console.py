"""The web console (/console) in headless Chromium against real `logway serve` processes.

Each test sets up a small e-commerce scene over HTTP (an `orders` topic with two schema
versions, groups with members and lag), then runs tests/e2e/console_browser.mjs: it opens
the console, produces a record through the form, sees it in the live tail (key and header
filters on), sees the group's lag and the topic's end offsets go up by one, opens the
topic's Contract tab (versions, compatibility, an example record), and saves a screenshot to
$CONSOLE_SCREENSHOTS_DIR (default: the test's temp dir), which CI keeps as an artifact.

Needs node, /usr/bin/chromium (Debian `chromium`) and playwright-core from clients/js's
devDependencies (`npm ci --prefix clients/js`); when one is missing the tests skip with the
reason on a developer machine and fail under CI=true (tests/e2e/js_harness.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway, GatewayFactory
from tests.e2e.js_harness import (
    JS_DIR,
    assert_passed,
    chromium_or_skip,
    node_modules_or_skip,
    node_or_skip,
    run_node,
)
from tests.e2e.proxies import Proxy
from tests.e2e.test_nginx import proxied  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).resolve().parent / "console_browser.mjs"
NODE_TIMEOUT_S = 90.0  # a guard against hanging; nothing asserts a duration
TOPIC, LAGGING_GROUP = "orders", "notifications"
API_KEY = "console-test-key"
# the topic's contract, shown in its Contract tab (two versions: v2 adds an optional coupon)
ORDER_CREATED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"const": "OrderCreated"},
        "order_id": {"type": "string", "pattern": "^o-[0-9]+$"},
        "customer_id": {"type": "string"},
        "total_cents": {"type": "integer", "minimum": 0},
    },
    "required": ["type", "order_id", "customer_id", "total_cents"],
    "additionalProperties": False,
}


@pytest.fixture
def server() -> str:
    """The console is static files over the API: the default HTTP server is enough."""
    return "granian"


@pytest.fixture
def browser(tmp_path: Path) -> dict[str, str]:
    """The environment the browser script needs; skips when a tool is missing."""
    node_or_skip()
    chromium_or_skip()
    node_modules_or_skip("playwright-core")
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "LOGWAY_JS_DIR": str(JS_DIR),
        "USER_DATA_DIR": str(tmp_path / "chromium-profile"),
        "SCREENSHOTS": str(shots),
    }


def _scene(client: httpx.Client) -> None:
    """Orders of nine customers in six partitions; `payments` (two members, caught up),
    `inventory` (one member, half way) and `notifications` (down: no member, lag = all)."""

    def ok(response: httpx.Response) -> httpx.Response:
        assert response.status_code < 300, response.text
        return response

    ok(client.put(f"/v1/topics/{TOPIC}", json={"partitions": 6}))
    ok(client.post(f"/v1/topics/{TOPIC}/schemas", json={"schema": ORDER_CREATED}))
    coupon = {"coupon": {"type": "string"}}
    v2 = {**ORDER_CREATED, "properties": {**ORDER_CREATED["properties"], **coupon}}
    ok(client.post(f"/v1/topics/{TOPIC}/schemas", json={"schema": v2}))
    records = [
        {
            "key": f"c-{i % 9 + 1:02d}",
            "value": {
                "type": "OrderCreated",
                "order_id": f"o-{i:05d}",
                "customer_id": f"c-{i % 9 + 1:02d}",
                "total_cents": 1250 * (i % 5 + 1),
            },
            "headers": {"event-type": "OrderCreated"},
        }
        for i in range(1, 37)
    ]  # fmt: skip
    ok(client.post(f"/v1/topics/{TOPIC}/records", json={"records": records}))
    ends = {
        p["partition"]: p["end_offset"] for p in ok(client.get(f"/v1/topics/{TOPIC}")).json()["partitions"]
    }  # fmt: skip

    def join(group: str, member_id: str | None = None) -> dict[str, object]:
        body = {"topic": TOPIC} | ({"member_id": member_id} if member_id else {})
        doc: dict[str, object] = ok(client.post(f"/v1/groups/{group}/members", json=body)).json()
        return doc

    def commit(group: str, member: dict[str, object], fraction: float) -> None:
        partitions = member["partitions"]
        assert isinstance(partitions, list)
        offsets = [
            {"topic": TOPIC, "partition": p, "offset": int(ends[p] * fraction)} for p in partitions
        ]
        body = {
            "member_id": member["member_id"],
            "generation": member["generation"],
            "offsets": offsets,
        }
        ok(client.post(f"/v1/groups/{group}/offsets", json=body))

    first = join("payments")
    second = join("payments")
    first = join("payments", str(first["member_id"]))  # a heartbeat answers the new assignment
    commit("payments", first, 1.0)
    commit("payments", second, 1.0)
    commit("inventory", join("inventory"), 0.5)
    ok(client.post(f"/v1/groups/{LAGGING_GROUP}/seek", json={"topic": TOPIC, "to": "earliest"}))


def _run_browser(env: dict[str, str], url: str, screenshot: str, **extra: str) -> None:
    run_env = {
        **env,
        "CONSOLE_URL": url,
        "CONSOLE_TOPIC": TOPIC,
        "CONSOLE_GROUP": LAGGING_GROUP,
        "SCREENSHOT_PATH": str(Path(env["SCREENSHOTS"]) / screenshot),
        **extra,
    }
    result = run_node([str(SCRIPT)], run_env, NODE_TIMEOUT_S, cwd=JS_DIR)
    assert_passed(result, "the console in Chromium")
    assert (Path(env["SCREENSHOTS"]) / screenshot).stat().st_size > 0


def test_console_shows_topics_groups_and_a_live_tail_and_produces(
    start_gateway: GatewayFactory, browser: dict[str, str]
) -> None:
    gateway = start_gateway()
    with httpx.Client(base_url=gateway.url) as client:
        _scene(client)
        page = client.get("/console")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # no other site may frame it; the browser run shows the policy lets the console work
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        script = client.get("/console/logway.js")  # the JS client, from clients/js
        assert script.status_code == 200
        assert script.headers["content-type"].split(";")[0] in {
            "text/javascript",
            "application/javascript",
        }
        assert script.text == (JS_DIR / "logway.js").read_text()
        missing = client.get("/console/nope.js")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
    _run_browser(browser, f"{gateway.url}/console", "console.png")


def test_console_works_under_a_path_prefix_behind_nginx(
    proxied: tuple[Proxy, Gateway],  # noqa: F811 (the fixture imported above)
    browser: dict[str, str],
) -> None:
    """nginx forwards only /logway/ (over HTTP/2 and TLS): a URL that forgot the prefix fails."""
    nginx, gateway = proxied
    with httpx.Client(base_url=gateway.url) as client:
        _scene(client)
    _run_browser(browser, f"{nginx.url}/console", "console-behind-prefix.png")


def _gateway_with_auth(start_gateway: GatewayFactory, tmp_path: Path) -> Gateway:
    """A gateway with auth on: one API key (API_KEY) that may do anything."""
    keys = tmp_path / "keys.toml"
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    keys.write_text(
        f'[keys.console]\nsha256 = "{digest}"\npermissions = ["admin:topic:*", "admin:group:*"]\n'
    )
    config = tmp_path / "logway.toml"
    config.write_text(f'auth_api_keys_file = "{keys}"\n')
    return start_gateway("--config", str(config))


def test_console_with_auth_on_uses_the_auth_cookie(
    start_gateway: GatewayFactory, browser: dict[str, str], tmp_path: Path
) -> None:
    gateway = _gateway_with_auth(start_gateway, tmp_path)
    with httpx.Client(base_url=gateway.url, headers={"X-API-Key": API_KEY}) as client:
        _scene(client)
    _run_browser(
        browser,
        f"{gateway.url}/console",
        "console-auth-cookie.png",
        CONSOLE_COOKIE=f"logway_token={API_KEY}",
    )


def test_console_with_auth_on_asks_for_a_token(
    start_gateway: GatewayFactory, browser: dict[str, str], tmp_path: Path
) -> None:
    gateway = _gateway_with_auth(start_gateway, tmp_path)
    with httpx.Client(base_url=gateway.url, headers={"X-API-Key": API_KEY}) as client:
        _scene(client)
    with httpx.Client(base_url=gateway.url) as anonymous:
        assert anonymous.get("/console").status_code == 200
    _run_browser(browser, f"{gateway.url}/console", "console-auth-token.png", CONSOLE_TOKEN=API_KEY)
