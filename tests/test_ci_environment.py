"""In CI, the end-to-end tools must be present: a missing one would silently turn real tests into skips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.environ.get("CI") != "true", reason="only CI promises every tool"
)


@pytest.mark.parametrize(
    "tool", ["curl", "nginx", "haproxy", "caddy", "node", "openssl", "kcat", "strace"]
)
def test_tool_is_installed(tool: str) -> None:
    assert shutil.which(tool) or Path("/usr/sbin", tool).exists(), f"{tool} is missing; see .ci/run"


def test_chromium_is_installed() -> None:
    assert Path("/usr/bin/chromium").exists(), "chromium is missing; see .ci/run"


def test_js_dev_dependencies_are_installed() -> None:
    assert (ROOT / "clients/js/node_modules/playwright-core").is_dir(), (
        "run npm ci --prefix clients/js"
    )
