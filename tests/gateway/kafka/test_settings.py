"""`--kafka-port` as a flag, a TOML setting and an environment variable; refused values;
and a missing `kafka` extra as a one-line error that names it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config


def test_kafka_port_from_file_environment_and_flag(tmp_path: Path) -> None:
    toml = tmp_path / "logway.toml"
    toml.write_text('kafka_port = 9092\nkafka_advertised_host = "kafka.example"\n')
    assert config.load({}, toml, {}).kafka_port == 9092
    assert config.load({}, toml, {"LOGWAY_KAFKA_PORT": "9093"}).kafka_port == 9093
    settings = config.load({"kafka_port": 9094}, toml, {"LOGWAY_KAFKA_PORT": "9093"})
    assert settings.kafka_port == 9094
    assert settings.kafka_advertised_host == "kafka.example"
    assert config.load({}, None, {}).kafka_port is None  # off by default


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("kafka_port = 0\n", "kafka_port"),
        ("kafka_port = 70000\n", "kafka_port"),
        ("port = 9092\nkafka_port = 9092\n", "must differ from port"),
        ("kafka_port = 'nine'\n", "kafka_port"),
    ],
)
def test_bad_kafka_ports_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "logway.toml"
    path.write_text(toml)
    with pytest.raises(config.ConfigError, match=message):
        config.load({}, path, {})


def test_print_config_shows_the_kafka_port() -> None:
    logway = Path(sys.executable).parent / "logway"
    shown = subprocess.run(
        [str(logway), "serve", "--print-config", "--kafka-port", "9092"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "kafka_port = 9092\n" in shown.stdout


def test_a_missing_kafka_extra_is_a_one_line_error(tmp_path: Path) -> None:
    code = (
        "import gateway.backends as b\n"
        "b.KAFKA_MODULES = ('no_such_module_here',)\n"
        "from gateway.cli import main\n"
        f"raise SystemExit(main(['serve', '--kafka-port', '9093', '--data-dir', '{tmp_path}']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "logway serve: the kafka listener needs the 'no_such_module_here' module: "
        "pip install 'logway[kafka]'"
    ]
    assert not (tmp_path / "catalog.sqlite3").exists()  # refused before opening the log
