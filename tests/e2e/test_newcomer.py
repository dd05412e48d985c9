"""The first five minutes, as a newcomer lives them: the README's run command, as written.

The command is read out of README.md's first fenced `sh` block, so the test and the README
cannot drift apart. It runs in a copy of the checkout (the files git knows, as a clone
would have them) with the same `python3` and pip index as CI, into a fresh virtualenv that
gets only what the command installs: no test extra, so no nats-py. Its install steps run
as written; its last step, `logway serve`, runs with LOGWAY_PORT set to a free port (the
gateway reads LOGWAY_* settings), so the test never takes 8080 from anyone.

Then, with the tools a newcomer has: create a topic, produce and read back with curl, and
with `logway produce` / `logway consume` from that virtualenv; stop with SIGTERM. Any
traceback on stderr fails the test, and so does a start that alarms (a WARNING line).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 480
START_TIMEOUT_S = 30


def readme_run_command() -> str:
    """The README's first `sh` block: the one a newcomer types to run the gateway."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert blocks, "README.md has no ```sh block"
    lines = [line for line in blocks[0].strip().splitlines() if not line.startswith("#")]
    assert len(lines) == 1, f"the run command is one line, not {lines}"
    command: str = lines[0]
    return command


def copy_checkout(target: Path) -> None:
    """What a clone holds: tracked files plus new ones git does not ignore, as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet in the index
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            destination.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, destination)


def newcomer_env(port: int) -> dict[str, str]:
    """A shell as a newcomer has it: no virtualenv of ours on PATH, no LOGWAY_* of ours."""
    ours = str(Path(sys.executable).parent)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOGWAY_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != ours)
    env["LOGWAY_PORT"] = str(port)
    return env


def test_the_readme_run_command_works_on_a_fresh_checkout(tmp_path: Path) -> None:
    command = readme_run_command()
    *install, serve = command.split(" && ")
    assert serve.split()[-1] == "serve", f"the run command ends with `logway serve`: {command}"
    checkout = tmp_path / "logway"
    copy_checkout(checkout)
    port = free_port()
    env = newcomer_env(port)

    installed = subprocess.run(
        " && ".join(install),
        shell=True,
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-4000:]
    python = checkout / ".venv/bin/python"
    no_extras = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('nats') is None)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert no_extras.stdout.strip() == "True", "the run command must not install nats-py"
    _optional_backends_name_their_extra(checkout / ".venv/bin/logway", env)

    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        gateway = subprocess.Popen(
            shlex.split(serve), cwd=checkout, env=env, stdout=stderr, stderr=stderr
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, gateway)
        _curl_round_trip(base)
        _cli_round_trip(checkout / ".venv/bin/logway", base, env)
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            returncode = gateway.wait(timeout=30)
        finally:
            if gateway.poll() is None:
                gateway.kill()
                gateway.wait()
    output = stderr_path.read_text()
    assert returncode == 0, output
    assert "Traceback" not in output, output
    assert "WARNING" not in output, output
    assert "experimental" not in output, output
    assert f"listening on http://127.0.0.1:{port}" in output, output
    assert f"embedded log in {checkout / 'logway-data'}" in output, output
    assert (checkout / "logway-data").is_dir()


def _optional_backends_name_their_extra(logway: Path, env: dict[str, str]) -> None:
    """Choosing what needs an extra that is not installed: one line naming it, exit 2."""
    for args, extra in (
        (["--backend", "nats://127.0.0.1:4222"], "logway[jetstream]"),
        (["--kafka-port", "9092"], "logway[kafka]"),
    ):
        result = subprocess.run(
            [str(logway), "serve", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"pip install '{extra}'" in result.stderr, result.stderr


def _wait_healthy(base: str, gateway: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert gateway.poll() is None, "logway serve exited during startup"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"logway serve was not ready within {START_TIMEOUT_S} s")


def _curl(*args: str) -> str:
    result = subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _curl_round_trip(base: str) -> None:
    content_type = ["-H", "content-type: application/json"]
    _curl("-X", "PUT", f"{base}/v1/topics/orders", *content_type, "-d", '{"partitions": 1}')
    produced = _curl(
        f"{base}/v1/topics/orders/records",
        *content_type,
        "-d",
        '{"records": [{"key": "customer-42", "value": {"type": "OrderCreated", "id": 1}}]}',
    )
    assert '"offset":0' in produced, produced
    pulled = _curl(f"{base}/v1/topics/orders/partitions/0/records?offset=0")
    (record,) = orjson.loads(pulled)["records"]
    assert record["value"] == {"type": "OrderCreated", "id": 1}, pulled
    assert record["key"] == "customer-42", pulled


def _cli_round_trip(logway: Path, base: str, env: dict[str, str]) -> None:
    def run(*args: str, stdin: str = "") -> str:
        result = subprocess.run(
            [str(logway), *args, "--url", base],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    run("produce", "orders", "--json", "--key", "customer-7", stdin='{"type": "OrderPaid"}\n')
    consumed = run("consume", "orders", "--from", "earliest", "--max-records", "2")
    records = [orjson.loads(line) for line in consumed.splitlines()]
    assert [r["value"]["type"] for r in records] == ["OrderCreated", "OrderPaid"], consumed
    assert [r["key"] for r in records] == ["customer-42", "customer-7"], consumed
