"""The data dir is private and never followed out of (issue 18, items 6 and 7).

With umask 022 every segment, the catalog and its WAL were 0644 and the directories 0755,
so any local user read every record around the ACLs; and symlinks in the data dir were
followed: a planted `topics/<t> -> /outside` put that topic's segments outside the data
dir, and a segment replaced by a link to another file truncated that file at restart.
Now the data dir is created 0700 with files 0600 (`data_mode` loosens it), an existing
data dir that others can enter is warned about, and a symlink or foreign entry in the data
dir stops the start, naming it, before anything is written through it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LOGWAY, STARTUP_TIMEOUT_S, Gateway
from tests.security.conftest import PARTITIONS, SecureGatewayFactory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    """The common default umask, which lets everyone read what a program creates 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(data_dir: Path) -> dict[str, int]:
    """The permission bits of everything under `data_dir`, by relative path ("." itself)."""
    modes = {".": stat.S_IMODE(data_dir.stat().st_mode)}
    for path in data_dir.rglob("*"):
        modes[str(path.relative_to(data_dir))] = stat.S_IMODE(path.lstat().st_mode)
    return modes


def _expect_modes(data_dir: Path, dir_mode: int, file_mode: int) -> None:
    modes = _modes(data_dir)
    names = set(modes)
    assert {"catalog.sqlite3", "catalog.sqlite3-wal"} <= names, names
    assert any(n.endswith(".log") for n in names), names
    wrong = {
        name: f"{mode:04o}"
        for name, mode in modes.items()
        if mode != (dir_mode if (data_dir / name).is_dir() else file_mode)
    }
    assert not wrong, f"expected dirs {dir_mode:04o} and files {file_mode:04o}: {wrong}"


def test_a_new_data_dir_is_private_whatever_the_umask(
    secure_gateway_factory: SecureGatewayFactory,
) -> None:
    secured = secure_gateway_factory()
    _expect_modes(secured.gateway.data_dir, 0o700, 0o600)


def test_data_mode_lets_a_backup_group_read(secure_gateway_factory: SecureGatewayFactory) -> None:
    secured = secure_gateway_factory(extra='data_mode = "0750"\n')
    _expect_modes(secured.gateway.data_dir, 0o750, 0o640)


@pytest.mark.parametrize("mode", ["0777", "0702", "0600", "rwx"])
def test_a_data_mode_that_others_may_write_or_the_owner_cannot_use_is_refused(
    mode: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [str(LOGWAY), "serve", "--data-dir", str(data_dir), "--data-mode", mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "data_mode" in done.stderr, done.stderr
    assert not data_dir.exists()


def test_an_existing_data_dir_others_can_read_is_warned_about(
    secure_gateway_factory: SecureGatewayFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    secured = secure_gateway_factory()
    log = secured.gateway.log()
    assert f"data dir {data_dir} has mode 0755: other users can read it" in log, log
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o755  # the operator's to change


def _stopped(secured_gateway: Gateway) -> Gateway:
    assert secured_gateway.terminate() == 0, secured_gateway.log()
    return secured_gateway


def _restart_is_refused(gateway: Gateway, tmp_path: Path) -> str:
    """Start `logway serve` again over the same data dir; it must exit non-zero without
    ever answering /healthz. Returns its output."""
    log_path = tmp_path / "refused.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(LOGWAY), *gateway.args], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(timeout=1.0) as client:
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    healthy = client.get(f"{gateway.url}/healthz").status_code == 200
                except httpx.TransportError:
                    healthy = False
                assert not healthy, "the gateway started over a data dir holding a symlink"
                time.sleep(0.1)
        assert process.poll() not in (None, 0), log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return log_path.read_text(errors="replace")


def test_a_planted_topic_symlink_is_refused_and_nothing_is_written_outside(
    secure_gateway_factory: SecureGatewayFactory, tmp_path: Path
) -> None:
    gateway = _stopped(secure_gateway_factory().gateway)
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = gateway.data_dir / "topics" / "b1"
    shutil.rmtree(planted)
    planted.symlink_to(outside)

    log = _restart_is_refused(gateway, tmp_path)

    assert f"refusing {planted}: a symlink" in log, log
    assert list(outside.iterdir()) == []
    assert planted.is_symlink()  # left for the operator to look at


def test_a_segment_replaced_by_a_symlink_is_refused_and_its_target_kept(
    secure_gateway_factory: SecureGatewayFactory, tmp_path: Path
) -> None:
    gateway = _stopped(secure_gateway_factory().gateway)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"someone else's file, not a log segment\n" * 100)
    before = victim.read_bytes()
    partition_dir = gateway.data_dir / "topics" / "secret" / str(PARTITIONS - 1)
    (segment,) = partition_dir.glob("*.log")
    segment.unlink()
    segment.symlink_to(victim)

    log = _restart_is_refused(gateway, tmp_path)

    assert f"refusing {segment}: a symlink" in log, log
    assert victim.read_bytes() == before
