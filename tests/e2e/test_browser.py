"""The JS client in headless Chromium over TLS + HTTP/2, across gateway restarts.

Runs clients/js/test/browser/browser.mjs (playwright-core driving Debian's /usr/bin/chromium)
against a gateway with a self-signed certificate. The page is the gateway's own /healthz
(same origin as the API, no test route): it produces, consumes with EventSource through the
client while the gateway is killed and stopped and restarted, and must end up with exactly
the records produced. The URL is a relay, so the page's origin survives the restarts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import GatewayFactory
from tests.e2e.js_harness import (
    CHROMIUM,
    JS_DIR,
    Restartable,
    assert_passed,
    chromium_or_skip,
    control_server,
    node_modules_or_skip,
    relayed,
    run_node,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture
def server() -> str:
    """The default HTTP server (the protocol tests cover both)."""
    return "granian"


def test_browser_consumes_over_tls_h2_across_restarts_without_loss(
    start_gateway: GatewayFactory, tls_cert: tuple[Path, Path]
) -> None:
    chromium_or_skip()
    node_modules_or_skip("playwright-core")
    target = Restartable(start_gateway, start_gateway(tls=tls_cert), (), tls=tls_cert)
    with relayed(target) as url, control_server(target) as control_url:
        env = {
            **os.environ,
            "LOGWAY_URL": url,
            "LOGWAY_CONTROL_URL": control_url,
            "CHROMIUM": str(CHROMIUM),
        }
        result = run_node([str(JS_DIR / "test" / "browser" / "browser.mjs")], env, 150.0)
    assert_passed(result, "test/browser/browser.mjs")
    assert target.restarts == 2
