"""`logway produce|consume|topics|groups|schemas`: a kcat-like command line that talks to a gateway URL
(`--url`, else `LOGWAY_URL`, else http://127.0.0.1:8080), never to files of the log.

Produce input, one record per line (blank lines are skipped, a trailing `\\r` is dropped):

- `--format lines` (default): the line is the value, as a string. With `--json` the line must
  be a JSON value (`42`, `{"a":1}`, `"text"`) and is sent as that value; a line that is not
  JSON is an error rather than a silent fallback to a string, so a value never changes type
  by accident. A line that is not UTF-8 is sent as raw bytes (`value_base64`). With
  `--key-separator SEP` the text before the first SEP is the key (a line without SEP has no
  key); `--key K` gives every record the key K.
- `--format ndjson`: the line is a record object of the API, `{"key", "value" |
  "value_base64", "headers", "partition"}`. `topic`, `offset` and `timestamp` are ignored, so
  what `logway consume` prints can be produced again. `-H` headers and `--partition` apply
  to records that do not set their own.

Records go through the batching `Producer` (one Idempotency-Key per batch, safe retries) in
input order. The first bad line or failed batch stops reading; what was read before it is
still produced, as with any pipe. A summary (records, partitions, offset ranges) goes to
stderr.

Consume prints the API's record objects as NDJSON, one flushed line per record, and stops
cleanly on SIGINT/SIGTERM, a closed stdout (`| head`), `--max-records` or `--timeout-s` of
silence. With `--group`, `--commit auto` (the default) commits, about every second and when
it stops, the offsets after the records it has written to stdout, never records it merely
received (so a consume stopped by `--max-records` is continued exactly by the next one,
and one killed redelivers at most a second of printed records), with the generation they
were delivered in (a rebalance fences them: the partition's next owner prints them again);
`--commit manual` never commits (move the group with `logway groups seek`).

Exit codes: 0 success · 1 any other error · 2 usage (bad flags or arguments) · 3 not found
(unknown topic, partition or group) · 4 conflict (topic exists with other settings, group
not empty) · 5 rejected input (a bad input line, or a 400/413/415/416/422 answer) · 6 not
authenticated or not allowed (401/403) · 7 gateway unreachable or unavailable (no answer,
429, 5xx after the producer's retries) · 130 produce interrupted by SIGINT. A gateway
problem is printed on stderr as one line, `logway: <title>: <detail>`; a record that breaks
the topic's schema as `logway: schema violation (version N): <pointer>: <detail> (keyword
K)`, the pointer into the failing batch request (`/records/7/value/amount`).

`logway schemas register TOPIC FILE` registers the JSON Schema in FILE (`-`: stdin) for the
topic's values (`--key-schema`, `--headers-schema` FILE for keys and headers); `get TOPIC
[VERSION]`, `list TOPIC`, `compatibility TOPIC [RULE]` and `delete TOPIC VERSION` do what
they say. A refused registration prints the change that breaks the rule, and why.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import io
import json
import os
import signal
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, NoReturn, TypeAlias

from tqdm import tqdm

from logway_client.client import AsyncLogwayClient, SeekTarget
from logway_client.consumer import AsyncConsumer
from logway_client.errors import ConnectionFailed, LogwayError, SchemaViolation
from logway_client.producer import AsyncProducer
from logway_client.sync import LogwayClient, Producer
from logway_client.types import Assignment, NewRecord, Record, RecordMetadata, SchemaVersion

DEFAULT_URL = "http://127.0.0.1:8080"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_REJECTED = 5
EXIT_AUTH = 6
EXIT_UNAVAILABLE = 7
EXIT_INTERRUPTED = 130

READ_CHUNK_BYTES = 64 * 1024
MAX_CHUNKS_IN_FLIGHT = 16  # produce reads at most this many chunks ahead of the acks
COMMIT_INTERVAL_S = 1.0
CONSUME_QUEUE_RECORDS = 256
NDJSON_IGNORED_FIELDS = frozenset({"topic", "offset", "timestamp"})
NDJSON_RECORD_FIELDS = frozenset({"key", "value", "value_base64", "headers", "partition"})


class InputError(Exception):
    """A produce input line this command cannot turn into a record."""


def exit_code(error: LogwayError) -> int:
    """The documented exit code of a gateway error."""
    if isinstance(error, ConnectionFailed) or error.retriable:
        return EXIT_UNAVAILABLE
    status = error.status or 0
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if status in (401, 403):
        return EXIT_AUTH
    if 400 <= status < 500:
        return EXIT_REJECTED
    return EXIT_ERROR


def _say(message: str) -> None:
    print(f"logway: {message}", file=sys.stderr, flush=True)


def _error_line(error: LogwayError) -> str:
    if isinstance(error, ConnectionFailed):
        return f"no answer from the gateway: {error.detail}"
    if isinstance(error, SchemaViolation) and error.extensions.get("errors"):
        first = error.extensions["errors"][0]
        more = len(error.extensions["errors"]) - 1
        return (
            f"schema violation (version {error.extensions.get('schema_version')}):"
            f" {first.get('pointer')}: {first.get('detail')} (keyword {first.get('keyword')})"
            + (f" and {more} more" if more else "")
        )
    detail = " ".join(error.detail.split())
    return f"{error.title}: {detail}" if error.title and detail else (error.title or detail)


# -- argument types ------------------------------------------------------------------------


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL, not {text!r}")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def _position(text: str) -> Literal["earliest", "latest"] | int:
    """earliest, latest or a timestamp in ms since the epoch."""
    if text == "earliest":
        return "earliest"
    if text == "latest":
        return "latest"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be earliest, latest or a timestamp in ms, not {text!r}"
        )
    return value


def _partition_list(text: str) -> tuple[int, ...]:
    try:
        partitions = tuple(sorted({int(p) for p in text.split(",")}))
    except ValueError:
        partitions = (-1,)
    if not partitions or partitions[0] < 0:
        raise argparse.ArgumentTypeError(f"must be partition numbers like 0,2, not {text!r}")
    return partitions


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"must be name=value, not {text!r}")
    return name, value


def _config_entry(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    try:
        number = int(value)
    except ValueError:
        sep = ""
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"must be name=integer (e.g. retention.ms=3600000), not {text!r}"
        )
    return name, number


# -- the command tree ----------------------------------------------------------------------


def _gateway_options() -> argparse.ArgumentParser:
    """Options every command takes: where the gateway is and how to authenticate."""
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    gateway = parent.add_argument_group("gateway")
    gateway.add_argument(
        "--url",
        type=_url,
        default=os.environ.get("LOGWAY_URL", DEFAULT_URL),
        help=f"gateway URL (default: $LOGWAY_URL, else {DEFAULT_URL})",
    )
    gateway.add_argument(
        "--token",
        default=os.environ.get("LOGWAY_TOKEN"),
        help="bearer token sent as Authorization (default: $LOGWAY_TOKEN)",
    )
    gateway.add_argument(
        "--api-key",
        default=os.environ.get("LOGWAY_API_KEY"),
        help="API key sent as X-API-Key (default: $LOGWAY_API_KEY)",
    )
    gateway.add_argument(
        "--cacert",
        type=Path,
        default=os.environ.get("LOGWAY_CACERT"),
        help="PEM file of CAs to trust for an https URL (default: $LOGWAY_CACERT)",
    )
    return parent


def _json_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parent.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parent


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_produce(commands: Commands, gateway: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "produce",
        parents=[gateway],
        help="write records from stdin or a file",
        description="Write one record per input line (see --format) to TOPIC.",
        allow_abbrev=False,
    )
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument("--file", type=Path, help="read this file instead of stdin")
    parser.add_argument(
        "--format",
        choices=["lines", "ndjson"],
        default="lines",
        help="lines: each line is a value; ndjson: each line is a record object of the API",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="lines: each line is a JSON value (default: a string)",
    )
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key", help="key of every record")
    keys.add_argument(
        "--key-separator", metavar="SEP", help="lines: the text before the first SEP is the key"
    )
    parser.add_argument(
        "-H",
        "--header",
        dest="headers",
        type=_header,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a header of every record (repeatable)",
    )
    parser.add_argument("--partition", type=_non_negative_int, help="partition of every record")
    parser.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="progress bar on stderr while reading --file (auto: when stderr is a terminal)",
    )
    batching = parser.add_argument_group("batching")
    batching.add_argument(
        "--linger-ms", type=float, default=5.0, help="how long a record waits for company"
    )
    batching.add_argument(
        "--batch-records", type=_positive_int, default=500, help="most records in one request"
    )
    batching.add_argument(
        "--delivery-timeout-s",
        type=_positive_float,
        default=120.0,
        help="give up retrying a batch after this long",
    )
    parser.set_defaults(run=_run_produce, parser=parser)


def _add_consume(commands: Commands, gateway: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "consume",
        parents=[gateway],
        help="print records as NDJSON",
        description="Stream TOPIC to stdout as NDJSON, one record object per line.",
        allow_abbrev=False,
    )
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument("--group", help="read as a member of this consumer group")
    parser.add_argument(
        "--commit",
        choices=["auto", "manual"],
        help="with --group: auto (default) commits what was printed; manual never commits",
    )
    parser.add_argument(
        "--from",
        dest="start",
        type=_position,
        help="earliest, latest (default) or a timestamp in ms; with --group, only for "
        "partitions the group has not committed",
    )
    parser.add_argument(
        "--partitions", type=_partition_list, metavar="0,2", help="read only these partitions"
    )
    parser.add_argument(
        "--max-records", type=_positive_int, metavar="N", help="stop after N records"
    )
    parser.add_argument(
        "--timeout-s",
        type=_positive_float,
        metavar="S",
        help="stop after S seconds without a record",
    )
    parser.set_defaults(run=_run_consume, parser=parser)


def _add_topics(commands: Commands, gateway: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "topics", help="list, describe, create, delete topics", allow_abbrev=False
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="<action>")
    actions.required = True
    as_json = _json_option()
    listing = actions.add_parser(
        "list", parents=[gateway, as_json], help="topics and partition counts", allow_abbrev=False
    )
    listing.set_defaults(run=_run_topics_list)
    describe = actions.add_parser(
        "describe",
        parents=[gateway, as_json],
        help="partitions (log start, end, bytes) and config",
        allow_abbrev=False,
    )
    describe.add_argument("name", metavar="NAME")
    describe.set_defaults(run=_run_topics_describe)
    create = actions.add_parser(
        "create",
        parents=[gateway, as_json],
        help="create a topic (no change when it exists with the same settings)",
        allow_abbrev=False,
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--partitions", type=_positive_int, help="partition count (default: the gateway's)"
    )
    create.add_argument(
        "--config",
        type=_config_entry,
        action="append",
        default=[],
        metavar="KEY=N",
        help="retention.ms, retention.bytes or segment.bytes (repeatable; -1: unlimited)",
    )
    create.set_defaults(run=_run_topics_create)
    delete = actions.add_parser(
        "delete", parents=[gateway], help="delete a topic and its records", allow_abbrev=False
    )
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(run=_run_topics_delete)


def _add_groups(commands: Commands, gateway: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "groups", help="list, describe (with lag), seek, delete consumer groups", allow_abbrev=False
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="<action>")
    actions.required = True
    as_json = _json_option()
    listing = actions.add_parser(
        "list", parents=[gateway, as_json], help="groups, state, members", allow_abbrev=False
    )
    listing.set_defaults(run=_run_groups_list)
    describe = actions.add_parser(
        "describe",
        parents=[gateway, as_json],
        help="members, assignment, committed/end offsets and lag per partition",
        allow_abbrev=False,
    )
    describe.add_argument("group", metavar="GROUP")
    describe.set_defaults(run=_run_groups_describe)
    seek = actions.add_parser(
        "seek",
        parents=[gateway, as_json],
        help="move the group's committed offsets of a topic",
        allow_abbrev=False,
    )
    seek.add_argument("group", metavar="GROUP")
    seek.add_argument("--topic", required=True)
    seek.add_argument(
        "--to", type=_position, required=True, help="earliest, latest or a timestamp in ms"
    )
    seek.set_defaults(run=_run_groups_seek)
    delete = actions.add_parser(
        "delete",
        parents=[gateway],
        help="delete a group without members and its offsets",
        allow_abbrev=False,
    )
    delete.add_argument("group", metavar="GROUP")
    delete.set_defaults(run=_run_groups_delete)


def _add_schemas(commands: Commands, gateway: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "schemas", help="register, get, list, delete a topic's schemas", allow_abbrev=False
    )
    actions = parser.add_subparsers(title="actions", dest="action", metavar="<action>")
    actions.required = True
    register = actions.add_parser(
        "register",
        parents=[gateway],
        help="register a JSON Schema (draft 2020-12) for the topic's values",
        allow_abbrev=False,
    )
    register.add_argument("topic", metavar="TOPIC")
    register.add_argument("file", metavar="FILE", help="the value schema (JSON); - for stdin")
    register.add_argument("--key-schema", metavar="FILE", help="a schema for the keys")
    register.add_argument("--headers-schema", metavar="FILE", help="a schema for the headers")
    register.set_defaults(run=_run_schemas_register)
    get = actions.add_parser(
        "get", parents=[gateway], help="one version (default: latest)", allow_abbrev=False
    )
    get.add_argument("topic", metavar="TOPIC")
    get.add_argument("version", metavar="VERSION", nargs="?", default="latest")
    get.set_defaults(run=_run_schemas_get)
    listing = actions.add_parser(
        "list", parents=[gateway], help="every kept version", allow_abbrev=False
    )
    listing.add_argument("topic", metavar="TOPIC")
    listing.set_defaults(run=_run_schemas_list)
    rule = actions.add_parser(
        "compatibility",
        parents=[gateway],
        help="show or set the topic's compatibility rule",
        allow_abbrev=False,
    )
    rule.add_argument("topic", metavar="TOPIC")
    rule.add_argument(
        "rule",
        metavar="RULE",
        nargs="?",
        help="BACKWARD, FORWARD, FULL, their _TRANSITIVE variants, or NONE",
    )
    rule.set_defaults(run=_run_schemas_compatibility)
    delete = actions.add_parser(
        "delete", parents=[gateway], help="delete the newest version", allow_abbrev=False
    )
    delete.add_argument("topic", metavar="TOPIC")
    delete.add_argument("version", metavar="VERSION")
    delete.set_defaults(run=_run_schemas_delete)


def build_parser(prog: str = "logway") -> argparse.ArgumentParser:
    """The client commands' tree (the server's `logway` hands these commands to it)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Produce, consume and administer topics and groups through a logway gateway.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict, 5 rejected input, "
        "6 auth, 7 gateway unavailable, 130 interrupted.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(title="commands", dest="command", metavar="<command>")
    commands.required = True
    gateway = _gateway_options()
    for add in (_add_produce, _add_consume, _add_topics, _add_groups, _add_schemas):
        add(commands, gateway)
    return parser


def _client(args: argparse.Namespace) -> LogwayClient:
    headers: dict[str, str] = {}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    if args.api_key:
        headers["X-API-Key"] = args.api_key
    verify: ssl.SSLContext | bool = True
    if args.cacert is not None:
        verify = ssl.create_default_context(cafile=str(args.cacert))
    return LogwayClient(args.url, headers=headers, verify=verify)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one client command; returns the process exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, LogwayClient], int] = args.run
    try:
        client = _client(args)
    except (OSError, ssl.SSLError) as exc:  # an unreadable --cacert
        _say(f"--cacert {args.cacert}: {exc}")
        return EXIT_USAGE
    try:
        return run(args, client)
    except LogwayError as error:
        _say(_error_line(error))
        return exit_code(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        client.close()


# -- produce -------------------------------------------------------------------------------


@dataclass
class _Tally:
    """What the gateway acknowledged, for the summary line."""

    records: int = 0
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (min, max)
    failed: int = 0
    error: LogwayError | None = None

    def add(self, result: RecordMetadata | BaseException) -> None:
        if isinstance(result, RecordMetadata):
            self.records += 1
            low, high = self.offsets.get(result.partition, (result.offset, result.offset))
            self.offsets[result.partition] = (min(low, result.offset), max(high, result.offset))
            return
        self.failed += 1
        if self.error is None:
            if not isinstance(result, LogwayError):
                raise result
            self.error = result

    def summary(self, topic: str) -> str:
        noun = "record" if self.records == 1 else "records"
        text = f"produced {self.records} {noun} to {topic}"
        if self.offsets:
            ranges = ", ".join(
                f"p{p}: {low}-{high}" if low != high else f"p{p}: {low}"
                for p, (low, high) in sorted(self.offsets.items())
            )
            parts = "partition" if len(self.offsets) == 1 else "partitions"
            text += f" in {len(self.offsets)} {parts} (offsets {ranges})"
        if self.failed:
            text += f"; {self.failed} not produced"
        return text


class _RecordParser:
    """Turns input lines into NewRecords as `--format`, `--json`, `--key…`, `-H` say."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.ndjson = args.format == "ndjson"
        self.json_values = args.json
        self.key: str | None = args.key
        self.separator: bytes | None = args.key_separator.encode() if args.key_separator else None
        self.headers: dict[str, str] = dict(args.headers)
        self.partition: int | None = args.partition

    def parse(self, line: bytes) -> NewRecord:
        if self.ndjson:
            return self._record_object(line)
        key = self.key
        if self.separator is not None and self.separator in line:
            raw_key, _, line = line.partition(self.separator)
            try:
                key = raw_key.decode()
            except UnicodeDecodeError:
                raise InputError("the key is not UTF-8") from None
        value: Any
        try:
            value = line.decode()
        except UnicodeDecodeError:
            if self.json_values:
                raise InputError("not UTF-8, so not JSON") from None
            value = line  # raw bytes, sent as value_base64
        if self.json_values:
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise InputError(f"not JSON ({exc}); without --json a line is a string") from None
        return NewRecord(value, key, self.headers, self.partition)

    def _record_object(self, line: bytes) -> NewRecord:
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise InputError(f"not a JSON record object ({exc})") from None
        if not isinstance(doc, dict):
            raise InputError("not a JSON record object")
        unknown = set(doc) - NDJSON_RECORD_FIELDS - NDJSON_IGNORED_FIELDS
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(sorted(unknown))}")
        if "value" in doc and "value_base64" in doc:
            raise InputError("both value and value_base64")
        value = doc.get("value")
        if "value_base64" in doc:
            try:
                value = base64.b64decode(doc["value_base64"], validate=True)
            except (TypeError, ValueError) as exc:
                raise InputError(f"value_base64 is not base64 ({exc})") from None
        headers = doc.get("headers") or {}
        if not isinstance(headers, dict):
            raise InputError("headers must be an object of strings")
        partition = doc.get("partition", self.partition)
        if isinstance(partition, bool):
            raise InputError("partition must be a non-negative integer")
        try:
            return NewRecord(
                value, doc.get("key", self.key), {**self.headers, **headers}, partition
            )
        except (TypeError, ValueError) as exc:
            raise InputError(str(exc)) from None


def _chunks(source: io.BufferedReader, progress: tqdm[Any]) -> Iterator[list[tuple[int, bytes]]]:
    """The non-blank lines of each chunk read, numbered, as soon as they arrive (read1 returns
    what a pipe or terminal has, so an interactive line is sent without waiting for more)."""
    number = 0
    rest = b""
    while chunk := source.read1(READ_CHUNK_BYTES):
        progress.update(len(chunk))
        *complete, rest = (rest + chunk).split(b"\n")
        lines = []
        for line in complete:
            number += 1
            if line := line.removesuffix(b"\r"):
                lines.append((number, line))
        yield lines
    if rest := rest.removesuffix(b"\r"):
        yield [(number + 1, rest)]


async def _send_all(
    producer: AsyncProducer, topic: str, records: list[NewRecord]
) -> list[RecordMetadata | BaseException]:
    """Queue records in order (send_record never suspends) and wait for their acks."""
    futures = [producer.send_record(topic, record) for record in records]
    return await asyncio.gather(*futures, return_exceptions=True)


def _run_produce(args: argparse.Namespace, client: LogwayClient) -> int:
    parser = _RecordParser(args)
    if args.json and parser.ndjson:
        args.parser.error("--json is for --format lines (an NDJSON record's value is JSON already)")
    if args.key_separator is not None and parser.ndjson:
        args.parser.error("--key-separator is for --format lines")
    name = str(args.file) if args.file else "<stdin>"
    try:
        source: io.BufferedReader = (
            open(args.file, "rb")  # noqa: SIM115 -- closed below, also on Ctrl-C
            if args.file
            else sys.stdin.buffer  # type: ignore[assignment]
        )
    except OSError as exc:
        _say(f"{args.file}: {exc.strerror}")
        return EXIT_USAGE
    show = {"always": True, "never": False, "auto": None}[args.progress] if args.file else False
    size = os.fstat(source.fileno()).st_size if args.file else None
    progress = tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=args.topic,
        file=sys.stderr,
        disable=show is False or (show is None and not sys.stderr.isatty()),
    )
    tally = _Tally()
    status = EXIT_OK
    producer = Producer(
        client,
        linger_ms=args.linger_ms,
        max_batch_records=args.batch_records,
        delivery_timeout_ms=args.delivery_timeout_s * 1000,
    )
    in_flight: deque[concurrent.futures.Future[list[RecordMetadata | BaseException]]] = deque()
    try:
        with source, producer:
            for lines in _chunks(source, progress):
                records = []
                for number, line in lines:
                    try:
                        records.append(parser.parse(line))
                    except InputError as exc:
                        _say(f"{name}:{number}: {exc}")
                        status = EXIT_REJECTED
                        break
                if records:  # one hop to the client's loop per chunk, not per record
                    in_flight.append(client.submit(_send_all(producer.aio, args.topic, records)))
                while in_flight and (in_flight[0].done() or len(in_flight) > MAX_CHUNKS_IN_FLIGHT):
                    for result in in_flight.popleft().result():
                        tally.add(result)
                if status != EXIT_OK or tally.error is not None:
                    break
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    finally:
        progress.close()
    while in_flight:  # the producer has flushed: every future is settled
        for result in in_flight.popleft().result():
            tally.add(result)
    _say(tally.summary(args.topic))
    if tally.error is not None:
        _say(_error_line(tally.error))
        return exit_code(tally.error)
    return status


# -- consume -------------------------------------------------------------------------------


def record_json(record: Record) -> dict[str, Any]:
    """A record as the API renders it: {"topic", "partition", "offset", "timestamp", "key",
    "value" | "value_base64", "headers"}."""
    doc: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": record.key,
    }
    if record.value_bytes is not None:
        doc["value_base64"] = base64.b64encode(record.value_bytes).decode("ascii")
    else:
        doc["value"] = record.value
    doc["headers"] = dict(record.headers)
    return doc


def _ndjson_line(doc: Any) -> bytes:
    try:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        return (text + "\n").encode()
    except UnicodeEncodeError:  # a lone surrogate: keep it escaped
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


class _Consume:
    """The consume loop, run on the client's event loop; `interrupt()` from any thread."""

    def __init__(self, args: argparse.Namespace, out: BinaryIO) -> None:
        self.args = args
        self.out = out
        self.commit = args.group is not None and args.commit != "manual"
        self.printed = 0
        self.pipe_closed = False
        self._positions: dict[int, int] = {}  # partition -> offset after the last printed record
        self._committed: dict[int, int] = {}
        self._assignment: Assignment | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._interrupted = False

    def interrupt(self) -> None:
        self._interrupted = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self, client: AsyncLogwayClient) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._interrupted:
            return
        await client.request("GET", "/healthz")  # fail fast on a wrong URL; streams retry
        items: asyncio.Queue[Record | Assignment | LogwayError | None] = asyncio.Queue(
            CONSUME_QUEUE_RECORDS
        )
        consumer = AsyncConsumer(
            client,
            self.args.topic,
            start=self.args.start,
            partitions=self.args.partitions,
            group=self.args.group,
            commit="manual",  # what was printed is committed here, not what was handed over
            on_assignment=items.put,  # in order with the records around it
        )

        async def pump() -> None:
            try:
                async for record in consumer:
                    await items.put(record)
                await items.put(None)
            except LogwayError as exc:
                await items.put(exc)

        pump_task = asyncio.create_task(pump())
        stop_task = asyncio.create_task(self._stop.wait())
        try:
            await self._print(consumer, items, stop_task)
        finally:
            stop_task.cancel()
            if self.commit:  # while the member is still connected
                await self._commit(consumer)
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump_task
            await consumer.close()

    async def _print(
        self,
        consumer: AsyncConsumer,
        items: asyncio.Queue[Record | Assignment | LogwayError | None],
        stop_task: asyncio.Task[Literal[True]],
    ) -> None:
        max_records: int | None = self.args.max_records
        idle_s: float | None = self.args.timeout_s
        last_record = next_commit = time.monotonic()
        while max_records is None or self.printed < max_records:
            now = time.monotonic()
            waits = [last_record + idle_s - now] if idle_s is not None else []
            if self.commit:
                waits.append(next_commit - now)
            get = asyncio.create_task(items.get())
            done, _ = await asyncio.wait(
                {get, stop_task},
                timeout=max(0.0, min(waits)) if waits else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if stop_task in done:
                get.cancel()
                return
            if get in done:
                item = get.result()
                if item is None:
                    return
                if isinstance(item, LogwayError):
                    raise item
                if isinstance(item, Assignment):
                    self._assigned(item)
                    continue
                try:
                    self.out.write(_ndjson_line(record_json(item)))
                    self.out.flush()
                except BrokenPipeError:
                    self.pipe_closed = True
                    return
                self.printed += 1
                self._positions[item.partition] = item.next_offset
                last_record = time.monotonic()
            else:
                get.cancel()
                if idle_s is not None and time.monotonic() - last_record >= idle_s:
                    return
            if self.commit and time.monotonic() >= next_commit:
                await self._commit(consumer)
                next_commit = time.monotonic() + COMMIT_INTERVAL_S

    def _assigned(self, assignment: Assignment) -> None:
        # a new generation fences what was printed before it (and a seek restarts partitions)
        self._positions, self._committed = {}, {}
        self._assignment = assignment
        partitions = ",".join(map(str, assignment.partitions)) or "none"
        _say(f"group {self.args.group} generation {assignment.generation}: partitions {partitions}")

    async def _commit(self, consumer: AsyncConsumer) -> None:
        """Commit the offsets after what was printed, with the generation it was delivered in
        (the assignment printed last); a failure costs redelivery, no more."""
        assignment = self._assignment
        if assignment is None or consumer.group is None:
            return
        offsets = {p: o for p, o in self._positions.items() if self._committed.get(p) != o}
        if not offsets:
            return
        try:
            await consumer.client.commit_offsets(
                consumer.group, assignment.member_id, assignment.generation, consumer.topic, offsets
            )
        except LogwayError as exc:
            _say(f"commit not made (these records will be delivered again): {_error_line(exc)}")
            return
        self._committed.update(offsets)


def _run_consume(args: argparse.Namespace, client: LogwayClient) -> int:
    if args.group is not None and args.partitions is not None:
        args.parser.error("--partitions is for streams without --group (the group assigns them)")
    if args.group is None and args.commit is not None:
        args.parser.error("--commit needs --group")
    consume = _Consume(args, sys.stdout.buffer)
    future = client.submit(consume.run(client.aio))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    interrupts = 0
    try:
        while True:
            try:
                future.result()
                break
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts > 1:  # a second Ctrl-C: stop waiting for the final commit
                    raise
                consume.interrupt()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if consume.pipe_closed:  # keep the interpreter's own final flush from complaining
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


# -- admin ---------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header)] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, ensure_ascii=False, indent=2))


def _run_topics_list(args: argparse.Namespace, client: LogwayClient) -> int:
    topics = client.list_topics()
    if args.json:
        _print_json({"topics": [asdict(t) for t in topics]})
    else:
        print(_table(["TOPIC", "PARTITIONS"], [[t.name, t.partitions] for t in topics]))
    return EXIT_OK


def _print_topic(args: argparse.Namespace, name: str, client: LogwayClient) -> None:
    topic = client.describe_topic(name)
    if args.json:
        _print_json(
            {
                "name": topic.name,
                "partitions": [asdict(p) for p in topic.partitions],
                "config": dict(topic.config),
            }
        )
        return
    config = " ".join(f"{k}={v}" for k, v in sorted(topic.config.items())) or "-"
    print(f"topic {topic.name}  partitions {len(topic.partitions)}  config {config}")
    print(
        _table(
            ["PARTITION", "LOG_START", "END", "BYTES"],
            [[p.partition, p.log_start_offset, p.end_offset, p.bytes] for p in topic.partitions],
        )
    )


def _run_topics_describe(args: argparse.Namespace, client: LogwayClient) -> int:
    _print_topic(args, args.name, client)
    return EXIT_OK


def _run_topics_create(args: argparse.Namespace, client: LogwayClient) -> int:
    client.create_topic(args.name, args.partitions, dict(args.config) or None)
    _print_topic(args, args.name, client)
    return EXIT_OK


def _run_topics_delete(args: argparse.Namespace, client: LogwayClient) -> int:
    client.delete_topic(args.name)
    _say(f"deleted topic {args.name}")
    return EXIT_OK


def _read_schema(path: str) -> Any:
    """A JSON Schema from a file (`-`: stdin); unreadable or not JSON is a usage error."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from None


def _schema_doc(version: SchemaVersion) -> dict[str, Any]:
    doc = asdict(version)
    return {k: v for k, v in doc.items() if v is not None or k == "schema"}


def _run_schemas_register(args: argparse.Namespace, client: LogwayClient) -> int:
    try:
        schema = _read_schema(args.file)
        key_schema = None if args.key_schema is None else _read_schema(args.key_schema)
        headers = None if args.headers_schema is None else _read_schema(args.headers_schema)
    except InputError as exc:
        _say(str(exc))
        return EXIT_USAGE
    version = client.register_schema(
        args.topic, schema, key_schema=key_schema, headers_schema=headers
    )
    _say(f"topic {args.topic}: schema version {version.version}")
    return EXIT_OK


def _run_schemas_get(args: argparse.Namespace, client: LogwayClient) -> int:
    _print_json(_schema_doc(client.schema(args.topic, args.version)))
    return EXIT_OK


def _run_schemas_list(args: argparse.Namespace, client: LogwayClient) -> int:
    _print_json({"versions": [_schema_doc(v) for v in client.schema_versions(args.topic)]})
    return EXIT_OK


def _run_schemas_compatibility(args: argparse.Namespace, client: LogwayClient) -> int:
    if args.rule is None:
        print(client.schema_compatibility(args.topic))
    else:
        print(client.set_schema_compatibility(args.topic, args.rule))
    return EXIT_OK


def _run_schemas_delete(args: argparse.Namespace, client: LogwayClient) -> int:
    client.delete_schema_version(args.topic, args.version)
    _say(f"topic {args.topic}: deleted schema version {args.version}")
    return EXIT_OK


def _run_groups_list(args: argparse.Namespace, client: LogwayClient) -> int:
    groups = client.list_groups()
    if args.json:
        _print_json({"groups": [asdict(g) for g in groups]})
    else:
        print(
            _table(
                ["GROUP", "STATE", "GENERATION", "MEMBERS"],
                [[g.group, g.state, g.generation, g.members] for g in groups],
            )
        )
    return EXIT_OK


def _run_groups_describe(args: argparse.Namespace, client: LogwayClient) -> int:
    group = client.describe_group(args.group)
    if args.json:
        _print_json(asdict(group))
        return EXIT_OK
    print(
        f"group {group.group}  state {group.state}  generation {group.generation}"
        f"  protocol {group.protocol or '-'}"
    )
    if group.members:
        print()
        print(
            _table(
                ["MEMBER", "TOPIC", "PARTITIONS"],
                [
                    [m.member_id, m.topic, ",".join(map(str, m.partitions)) or "-"]
                    for m in group.members
                ],
            )
        )
    print()
    print(
        _table(
            ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"],
            [
                [p.topic, p.partition, p.committed_offset, p.end_offset, p.lag]
                for p in group.partitions
            ],
        )
    )
    return EXIT_OK


def _run_groups_seek(args: argparse.Namespace, client: LogwayClient) -> int:
    to: SeekTarget = args.to
    offsets = client.seek_group(args.group, args.topic, to)
    if args.json:
        _print_json(
            {
                "group": args.group,
                "offsets": [
                    {"topic": args.topic, "partition": p, "offset": o}
                    for p, o in sorted(offsets.items())
                ],
            }
        )
    else:
        print(
            _table(
                ["TOPIC", "PARTITION", "OFFSET"],
                [[args.topic, p, o] for p, o in sorted(offsets.items())],
            )
        )
    return EXIT_OK


def _run_groups_delete(args: argparse.Namespace, client: LogwayClient) -> int:
    client.delete_group(args.group)
    _say(f"deleted group {args.group}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
