"""The `logway` command line.

`logway <command> [options]`; each command is one subparser with its own `run` function,
so later commands (produce, consume, topics, groups) add a `_add_<name>` builder and a
line in `_COMMANDS`. Flags are never abbreviated and an unknown flag is an error (exit 2),
because a misspelled setting silently ignored is worse than a refusal to start.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from gateway import config
from gateway.app import begin_shutdown, create_app
from gateway.backends import (
    MissingExtra,
    check_data_dir_free,
    check_extra,
    check_kafka_extra,
    parse_backend,
)
from gateway.client_commands import CLIENT_COMMANDS
from gateway.server import SERVERS, run
from gateway.settings import Settings
from storage.errors import StorageError
from storage.types import Durability

_DEFAULTS = Settings()
_FLAG_DEFAULTS: dict[str, object] = {
    **{f.name: getattr(_DEFAULTS, f.name) for f in dataclasses.fields(Settings)},
    "fsync": _DEFAULTS.durability.mode.value,
    "fsync_interval_ms": _DEFAULTS.durability.fsync_interval_ms,
    "log_level": "info",
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, not {text}")
    return value


def _version() -> str:
    try:
        return version("logway")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the HTTP gateway (HTTP/1.1, h2c and HTTP/2 over TLS on one port).",
        allow_abbrev=False,
        formatter_class=_SettingsHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags given on the command line are set
    )
    listen = parser.add_argument_group("listening")
    listen.add_argument("--host", help="address to bind")
    listen.add_argument("--port", type=_port, help="TCP port")
    listen.add_argument(
        "--server",
        choices=SERVERS,
        help="HTTP server that runs the app (see bench/RESULTS.md)",
    )
    listen.add_argument("--certfile", type=Path, help="PEM certificate chain; enables TLS with h2")
    listen.add_argument("--keyfile", type=Path, help="PEM private key for --certfile")
    listen.add_argument("--root-path", help="path prefix when mounted behind a proxy")
    listen.add_argument(
        "--kafka-port",
        type=_port,
        help="also speak the Kafka protocol on this TCP port (needs the kafka extra)",
    )
    listen.add_argument(
        "--kafka-advertised-host",
        help="host name Kafka clients are told to connect to (default: --host)",
    )
    listen.add_argument(
        "--shutdown-timeout-s",
        type=_positive_float,
        help="on SIGTERM/SIGINT, exit within this many seconds",
    )

    connections = parser.add_argument_group("connections")
    connections.add_argument(
        "--max-connections",
        type=_positive_int,
        help="open connections, all clients (further ones wait in the listen backlog); "
        "also bounded by the open-files limit less --reserved-fds",
    )
    connections.add_argument(
        "--max-connections-per-client",
        type=_non_negative_int,
        help="open connections per client address (IPv6: /64; trusted proxies exempt); "
        "the newest quiet ones beyond are closed; 0 = no cap",
    )
    connections.add_argument(
        "--reserved-fds",
        type=_non_negative_int,
        help="file descriptors kept from connections for the log's files",
    )
    connections.add_argument(
        "--request-head-timeout-s",
        type=_positive_float,
        help="a new or idle connection that sends no complete request head within this is closed",
    )
    connections.add_argument(
        "--connection-idle-timeout-s",
        type=_positive_float,
        help="a connection with no data either way for this long is closed "
        "(above --heartbeat-s and the 60 s long polls)",
    )
    connections.add_argument(
        "--max-request-head-bytes",
        type=_positive_int,
        help="a request's decoded HTTP/2 header list, and its HTTP/1.1 head under "
        "Hypercorn (431 beyond)",
    )
    connections.add_argument(
        "--h2-max-concurrent-streams",
        type=_positive_int,
        help="concurrent streams per HTTP/2 connection",
    )
    connections.add_argument(
        "--auth-failure-limit-per-s",
        type=_non_negative_float,
        help="failed authentications per second per client address, after a burst of "
        "--auth-failure-burst; beyond, 429 (0 = no limit)",
    )
    connections.add_argument(
        "--auth-failure-burst",
        type=_positive_int,
        help="failed authentications a client address may have before the limit applies",
    )

    kafka = parser.add_argument_group("Kafka connections (with --kafka-port)")
    kafka.add_argument(
        "--kafka-max-request-bytes",
        type=_positive_int,
        help="a Kafka request frame beyond this closes its connection",
    )
    kafka.add_argument(
        "--kafka-sasl-max-receive-bytes",
        type=_positive_int,
        help="with auth on, a frame beyond this before SASL completes closes its connection",
    )
    kafka.add_argument(
        "--kafka-connection-setup-timeout-ms",
        type=_positive_int,
        help="a new Kafka connection must send a whole request (with auth on: "
        "authenticate) within this, or it is closed",
    )
    kafka.add_argument(
        "--kafka-connections-max-idle-ms",
        type=_positive_int,
        help="a Kafka connection with no whole request for this long after its last "
        "request or answer is closed",
    )
    kafka.add_argument(
        "--kafka-max-connections",
        type=_positive_int,
        help="open Kafka connections, all clients (further ones are reset); also at most "
        "half the open-files limit less --reserved-fds",
    )
    kafka.add_argument(
        "--kafka-max-connections-per-client",
        type=_non_negative_int,
        help="open Kafka connections per client address (IPv6: /64; trusted proxies "
        "exempt), further ones are reset; 0 = no cap",
    )

    storage = parser.add_argument_group("storage")
    storage.add_argument("--data-dir", type=Path, help="directory of the embedded log")
    storage.add_argument(
        "--data-mode",
        help="octal mode of the directories the embedded log creates; its files get it"
        " without the execute bits (0750: group may read, for backups)",
    )
    storage.add_argument(
        "--backend",
        help="'embedded' or a JetStream cluster, nats://h1:4222,h2:4222,h3:4222"
        " (?replicas=1|3|5, default 3 with 3+ servers; &namespace=)",
    )
    storage.add_argument(
        "--fsync",
        choices=[mode.value for mode in Durability],
        help="when a produce is acknowledged: after fsync (always, shared by concurrent "
        "requests), with fsync every --fsync-interval-ms, or never",
    )
    storage.add_argument(
        "--fsync-interval-ms",
        type=_positive_int,
        help="fsync period for --fsync interval",
    )

    api = parser.add_argument_group("API")
    api.add_argument(
        "--auto-create-topics",
        action="store_true",
        help="create a missing topic on its first produce instead of answering 404",
    )
    api.add_argument(
        "--default-partitions",
        type=_positive_int,
        help="partitions of auto-created topics and of PUT without 'partitions'",
    )
    api.add_argument(
        "--heartbeat-s",
        type=_positive_float,
        help="keep-alive comment interval of idle SSE/NDJSON streams",
    )
    api.add_argument(
        "--group-session-timeout-s",
        type=_positive_float,
        help="a consumer-group member not heard from for this long is removed",
    )
    api.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        help="largest JSON produce body (NDJSON bodies: --max-ndjson-bytes)",
    )
    api.add_argument(
        "--max-record-bytes",
        type=_positive_int,
        help="largest record (key + value + headers)",
    )
    api.add_argument(
        "--max-ndjson-bytes",
        type=_positive_int,
        help="largest NDJSON produce body (parsed as it streams, all-or-nothing)",
    )
    api.add_argument(
        "--max-inflight-produce-bytes",
        type=_positive_int,
        help="produce request bytes admitted and not yet answered, all clients; beyond, "
        "503 produce-capacity with Retry-After (memory: 4-16x this)",
    )
    api.add_argument(
        "--max-records-per-request",
        type=_positive_int,
        help="most records in one produce request",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (also LOGWAY_CONFIG); LOGWAY_* variables and flags override it",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        default=False,
        help="print the effective settings (secrets masked) and exit",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="logging threshold",
    )
    parser.set_defaults(run=_run_serve, build_parser=parser)


# Options of `serve` that are not settings of the gateway itself.
_NOT_SETTINGS = frozenset({"command", "run", "build_parser", "config", "print_config", "log_level"})


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (by Settings field name, plus fsync/fsync_interval_ms),
    and only those: a flag given with its default value still beats the file and the
    environment, and one not given leaves them alone."""
    return {name: value for name, value in vars(args).items() if name not in _NOT_SETTINGS}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The Settings the flags alone give (defaults for the rest)."""
    return config.merge(given_flags(args))


class _SettingsHelpFormatter(argparse.HelpFormatter):
    """Shows each setting's default (the Settings default; argparse's own is SUPPRESS)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        default = _FLAG_DEFAULTS.get(action.dest, argparse.SUPPRESS)
        if text is not None and default not in (argparse.SUPPRESS, None, ""):
            text += f" (default: {default})"
        return text


def _run_serve(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.build_parser

    try:
        settings = config.load(given_flags(args), args.config)
    except config.ConfigError as exc:  # a bad value, not a bad command line: no usage text
        print(f"logway serve: {exc}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    # Checked on the merged settings, so a certificate from --config or LOGWAY_* counts too.
    if (settings.certfile is None) != (settings.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    for flag, path in (("--certfile", settings.certfile), ("--keyfile", settings.keyfile)):
        if path is not None and not path.is_file():
            parser.error(f"{flag} {path}: no such file")
    try:
        target = parse_backend(settings.backend)
    except ValueError as exc:
        parser.error(f"--backend: {exc}")
    if args.print_config:
        print(config.describe(settings), end="")
        return 0
    try:
        check_extra(target)
        if settings.kafka_port is not None:
            check_kafka_extra()
    except MissingExtra as exc:
        print(f"logway serve: {exc}", file=sys.stderr)
        return 2
    try:
        check_data_dir_free(settings)
    except (StorageError, OSError) as exc:  # in use, not ours, not creatable: one line
        print(f"logway serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return serve(settings)


def serve(settings: Settings) -> int:
    """Create the gateway app and serve it until a signal; returns the exit code."""
    logging.getLogger("logway").info("logway %s: %s", _version(), _storage_line(settings))
    app = create_app(settings)
    return run(app, settings, lambda: begin_shutdown(app))


def _storage_line(settings: Settings) -> str:
    target = parse_backend(settings.backend)
    if target is None:
        durability = settings.durability
        fsync = durability.mode.value
        if durability.mode is Durability.INTERVAL:
            fsync += f" every {durability.fsync_interval_ms} ms"
        return f"embedded log in {settings.data_dir.resolve()} (fsync {fsync})"
    return (
        f"JetStream at {','.join(target.servers)} (R{target.replicas},"
        f" namespace {target.namespace!r})"
    )


def _add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """List the client's commands in `logway --help`; `main` hands them to logway_client.cli."""
    for name, summary in CLIENT_COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)


_COMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    _add_serve,
    _add_client_commands,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also used by tests and the docs)."""
    parser = argparse.ArgumentParser(
        prog="logway",
        description="An HTTP/2 gateway to a partitioned, replayable event log.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"logway {_version()}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="<command>")
    commands.required = True
    for add_command in _COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`logway serve` and `logway --help` (gateway/entry.py hands client commands to the
    client first); returns the process exit code."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
