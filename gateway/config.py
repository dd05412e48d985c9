"""Settings from a TOML file, then LOGWAY_* environment variables, then command-line flags.

Later sources win: defaults < `--config FILE` < environment < flags given on the command
line. Every layer names settings by their `Settings` field (`max_body_bytes`; in the
environment `LOGWAY_MAX_BODY_BYTES`); an unknown name in the file or an unknown LOGWAY_*
variable is an error, never ignored, and so is a value of the wrong type. The durability
policy is `fsync` ("always" | "interval" | "never") and `fsync_interval_ms`, as on the
command line. Lists (trusted_proxies, cors_origins) are TOML arrays, or comma-separated in
the environment.

A flag counts when it is given, whatever its value: `--port 8080` beats LOGWAY_PORT even
though 8080 is the default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.http.auth import Authenticator, auth_enabled
from gateway.http.cors import check_cors_settings
from gateway.http.proxy import parse_networks
from gateway.settings import Settings
from storage.files import parse_dir_mode
from storage.types import Durability, DurabilityPolicy

ENV_PREFIX = "LOGWAY_"
_NOT_SETTINGS = {ENV_PREFIX + "CONFIG", ENV_PREFIX + "TEST_FAULT"}
DURABILITY_KEYS = ("fsync", "fsync_interval_ms")
SECRET_MARKERS = ("secret", "password", "token", "api_key", "private")
MASK = "********"
# a request line and a few headers must fit; past 16 MiB a header list is no cap at all
MIN_REQUEST_HEAD_BYTES = 8 * 1024
MAX_REQUEST_HEAD_BYTES = 16 * 1024 * 1024


class ConfigError(ValueError):
    """A setting that does not exist or has a value of the wrong type; says where from."""


def _fields() -> dict[str, Any]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if f.name != "durability"}


def _convert(name: str, hint: Any, value: Any, source: str) -> Any:
    """`value` (a TOML value, or text from the environment) as the field's type."""
    text = isinstance(value, str)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    try:
        if origin in (types.UnionType, typing.Union):  # X | None
            if value is None or (text and value.strip() == ""):
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return _convert(name, inner, value, source)
        if hint is bool:
            if isinstance(value, bool):
                return value
            if text and value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if text and value.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError("expected an integer")
            return int(value)
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError("expected a number")
            return float(value)
        if hint is str:
            if not text:
                raise ValueError("expected a string")
            return value
        if hint is Path:
            if not text:
                raise ValueError("expected a path")
            return Path(value)
        if origin is tuple:
            items = [v.strip() for v in value.split(",") if v.strip()] if text else value
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError("expected a list of strings")
            return tuple(items)
    except ValueError as exc:
        raise ConfigError(f"{source}: {name}: {exc} (got {value!r})") from None
    raise ConfigError(f"{source}: {name}: unsupported setting type {hint}")


def _layer(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    fields = _fields()
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in DURABILITY_KEYS:
            out[name] = value
            continue
        if name not in fields:
            raise ConfigError(f"{source}: unknown setting {name!r}")
        out[name] = _convert(name, fields[name], value, source)
    return out


def from_toml(path: Path) -> dict[str, Any]:
    """The settings a TOML file sets (top-level keys only)."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return _layer(data, str(path))


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings LOGWAY_* variables set (LOGWAY_CONFIG names the file and
    LOGWAY_TEST_FAULT arms a test's fault point, gateway/faults.py: both are skipped)."""
    values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key not in _NOT_SETTINGS
    }
    return _layer(values, "environment")


def merge(*layers: Mapping[str, Any]) -> Settings:
    """One Settings from layers, later ones winning; fsync keys build the durability policy."""
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(layer)
    default = DurabilityPolicy()
    mode = values.pop("fsync", default.mode.value)
    interval = values.pop("fsync_interval_ms", default.fsync_interval_ms)
    try:
        durability = DurabilityPolicy(mode=Durability(mode), fsync_interval_ms=int(interval))
    except ValueError as exc:
        raise ConfigError(f"fsync: {exc}") from None
    return Settings(**values, durability=durability)


def load(
    flags: Mapping[str, Any], config_file: Path | None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The effective settings: file < environment < the flags given (by field name)."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"])
    file_layer = from_toml(config_file) if config_file is not None else {}
    settings = merge(file_layer, from_environment(environ), flags)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Refuse values the app would refuse later, now, with the setting's name."""
    try:
        parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"trusted_proxies: {exc}") from None
    try:
        check_cors_settings(settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if auth_enabled(settings):
        try:
            Authenticator(settings)
        except (OSError, ValueError) as exc:  # also tomllib and PyJWT's errors
            raise ConfigError(f"auth: {exc}") from None
    for name in (
        "max_streams",
        "rate_limit_burst",
        "port",
        "auth_failure_burst",
        "h2_max_concurrent_streams",
        "max_connections",
        "kafka_max_request_bytes",
        "kafka_sasl_max_receive_bytes",
        "kafka_connection_setup_timeout_ms",
        "kafka_connections_max_idle_ms",
        "kafka_max_connections",
        "retention_check_interval_ms",
    ):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name}: must be at least 1")
    for name in (
        "max_streams_per_client",
        "rate_limit_per_s",
        "auth_failure_limit_per_s",
        "max_connections_per_client",
        "kafka_max_connections_per_client",
    ):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{name}: must not be negative (0 turns it off)")
    if settings.kafka_port is not None and not 1 <= settings.kafka_port <= 65535:
        raise ConfigError("kafka_port: must be between 1 and 65535")
    if settings.kafka_port == settings.port:
        raise ConfigError("kafka_port: must differ from port (HTTP)")
    if settings.kafka_group_initial_rebalance_delay_ms < 0:
        raise ConfigError("kafka_group_initial_rebalance_delay_ms: must not be negative")
    if (
        not 1
        <= settings.kafka_group_min_session_timeout_ms
        <= settings.kafka_group_max_session_timeout_ms
    ):
        raise ConfigError(
            "kafka_group_min_session_timeout_ms: must be at least 1 and at most"
            " kafka_group_max_session_timeout_ms"
        )
    _validate_connections(settings)
    try:
        parse_dir_mode(settings.data_mode)
    except ValueError as exc:
        raise ConfigError(f"data_mode: {exc}") from None


def _validate_connections(settings: Settings) -> None:
    if not MIN_REQUEST_HEAD_BYTES <= settings.max_request_head_bytes <= MAX_REQUEST_HEAD_BYTES:
        raise ConfigError(
            f"max_request_head_bytes: must be between {MIN_REQUEST_HEAD_BYTES} and "
            f"{MAX_REQUEST_HEAD_BYTES}"
        )
    if not settings.request_head_timeout_s > 0:
        raise ConfigError("request_head_timeout_s: must be positive")
    if not settings.connection_idle_timeout_s > settings.heartbeat_s:
        raise ConfigError(
            "connection_idle_timeout_s: must be longer than heartbeat_s "
            f"({settings.heartbeat_s:g} s), or idle streams would be cut"
        )
    if settings.reserved_fds < 0:
        raise ConfigError("reserved_fds: must not be negative")


def is_secret(name: str) -> bool:
    return any(marker in name for marker in SECRET_MARKERS)


def describe(settings: Settings) -> str:
    """The effective settings as TOML (loadable with --config), secrets masked."""
    lines = []
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if f.name == "durability":
            lines.append(f'fsync = "{value.mode.value}"')
            lines.append(f"fsync_interval_ms = {value.fsync_interval_ms}")
            continue
        if value is None:
            lines.append(f"# {f.name} is not set")
            continue
        if is_secret(f.name) and value:
            value = MASK
        lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
