"""The `logway` command line refuses what it does not understand, before binding anything."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from gateway import config
from gateway.cli import build_parser, given_flags, settings_from_args
from gateway.settings import Settings
from storage.types import Durability, DurabilityPolicy
from tests.e2e.conftest import LOGWAY, SERVERS

pytestmark = pytest.mark.e2e


def _logway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOGWAY), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--prot", "9"], "unrecognized arguments: --prot"),
        (["serve", "--po", "9"], "unrecognized arguments: --po"),  # no abbreviations
        (["serve", "--server", "uvicorn"], "invalid choice: 'uvicorn'"),
        (["serve", "--fsync", "sometimes"], "invalid choice: 'sometimes'"),
        (["serve", "--port", "70000"], "must be between 1 and 65535"),
        (["serve", "--max-body-bytes", "0"], "must be a positive integer"),
        (["serve", "--certfile", "cert.pem"], "--certfile and --keyfile go together"),
        (["serv"], "invalid choice: 'serv'"),
        ([], "the following arguments are required: <command>"),
    ],
)
def test_bad_command_line_exits_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = _logway(*args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = _logway("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("logway ")


def test_serve_help_lists_every_setting() -> None:
    result = _logway("serve", "--help")
    assert result.returncode == 0
    for flag in (
        "--host", "--port", "--data-dir", "--backend", "--server", "--fsync",
        "--fsync-interval-ms", "--certfile", "--keyfile", "--auto-create-topics",
        "--heartbeat-s", "--max-body-bytes", "--max-record-bytes", "--max-records-per-request",
        "--max-ndjson-bytes", "--max-inflight-produce-bytes",
    ):  # fmt: skip
        assert flag in result.stdout


def test_flags_build_one_settings_object() -> None:
    args = build_parser().parse_args(
        [
            "serve", "--host", "0.0.0.0", "--port", "9000", "--data-dir", "/srv/log",
            "--server", "hypercorn", "--fsync", "interval", "--fsync-interval-ms", "50",
            "--auto-create-topics", "--heartbeat-s", "2.5", "--max-record-bytes", "4096",
        ]
    )  # fmt: skip
    assert settings_from_args(args) == Settings(
        host="0.0.0.0",
        port=9000,
        data_dir=Path("/srv/log"),
        server="hypercorn",
        durability=DurabilityPolicy(Durability.INTERVAL, fsync_interval_ms=50),
        auto_create_topics=True,
        heartbeat_s=2.5,
        max_record_bytes=4096,
    )


def test_defaults_are_the_settings_defaults() -> None:
    assert settings_from_args(build_parser().parse_args(["serve"])) == Settings()


def test_a_flag_given_with_its_default_value_still_beats_the_environment(tmp_path: Path) -> None:
    toml = tmp_path / "logway.toml"
    toml.write_text('fsync = "never"\nheartbeat_s = 3.0\n')
    args = build_parser().parse_args(["serve", "--port", "8080", "--fsync", "always"])
    settings = config.load(given_flags(args), toml, {"LOGWAY_PORT": "9000"})
    assert settings.port == 8080  # the default value, given as a flag: it wins
    assert settings.durability.mode is Durability.ALWAYS  # over the file's "never"
    assert settings.heartbeat_s == 3.0  # not given as a flag: the file's value stays
    unset = config.load(
        given_flags(build_parser().parse_args(["serve"])), None, {"LOGWAY_PORT": "9000"}
    )
    assert unset.port == 9000


def test_help_shows_the_settings_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "TCP port (default: 8080)" in text
    assert "(default: always)" in text


@pytest.mark.parametrize("server", SERVERS)
def test_a_busy_port_is_refused_before_the_log_is_opened(server: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data_dir = tmp_path / "data"
        result = _logway(
            "serve", "--server", server, "--port", str(port), "--data-dir", str(data_dir)
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists()


def test_a_certificate_without_its_key_is_refused_from_any_source(tmp_path: Path) -> None:
    certfile = tmp_path / "cert.pem"
    certfile.write_text("not checked before the pairing")
    result = _logway("serve", env={"LOGWAY_CERTFILE": str(certfile)})
    assert result.returncode == 2
    assert "--certfile and --keyfile go together" in result.stderr
