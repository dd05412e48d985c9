"""The JS client (clients/js) under Node's own test runner, against real `logway serve` processes.

Each `clients/js/test/*.test.mjs` file runs as one pytest test with a fresh gateway (its URL in
LOGWAY_URL) and the control server that restarts it on request (LOGWAY_CONTROL_URL, see
js_harness). The test passes when `node --test` exits 0; its report is the failure message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import GatewayFactory
from tests.e2e.js_harness import (
    JS_DIR,
    Restartable,
    assert_passed,
    control_server,
    node_modules_or_skip,
    relayed,
    run_node,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NODE_TEST_FILES = sorted(p.name for p in (JS_DIR / "test").glob("*.test.mjs"))
NODE_TIMEOUT_S = 150.0  # guards against hanging; no test asserts a duration
NODE_TEST_TIMEOUT_MS = 60_000


@pytest.fixture
def server() -> str:
    """The client is tested on the default HTTP server only (the protocol tests cover both)."""
    return "granian"


@pytest.mark.parametrize("test_file", NODE_TEST_FILES)
def test_node(test_file: str, start_gateway: GatewayFactory, tmp_path: Path) -> None:
    args = ("--auto-create-topics",)
    target = Restartable(start_gateway, start_gateway(*args), args, tls=None)
    with relayed(target) as url, control_server(target) as control_url:
        env = {
            **os.environ,
            "LOGWAY_URL": url,
            "LOGWAY_CONTROL_URL": control_url,
            "NO_COLOR": "1",
        }
        result = run_node(
            [
                "--test",
                "--test-concurrency=1",  # the tests of a file share one gateway and restart it
                f"--test-timeout={NODE_TEST_TIMEOUT_MS}",  # a hung test fails with its name
                "--test-force-exit",  # and a stream a failed test left open cannot hang the run
                "--test-reporter=spec",
                f"test/{test_file}",
            ],
            env,
            NODE_TIMEOUT_S,
        )
    assert_passed(result, f"node --test test/{test_file}")


def test_typescript_declarations_type_check() -> None:
    """logway.d.ts compiles under `tsc --strict`, and typed code written against it does too."""
    node_modules_or_skip("typescript")
    result = run_node(
        [str(JS_DIR / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "tsconfig.json"],
        dict(os.environ),
        120.0,
    )
    assert_passed(result, "tsc -p clients/js/tsconfig.json")
