"""How logway's names and records are laid out in JetStream: pure functions, no I/O.

Names (`ns` is the backend's namespace, "logway" by default):

    stream      <NS>_<stem>_<partition>        one stream per topic partition
    subject     <ns>.rec.<stem>.<partition>    the stream's only subject
    notify      <ns>.new.<stem>.<partition>    RePublish (headers only) after each store
    KV buckets  <ns>_topics, <ns>_groups, <ns>_idempotency

`stem` escapes a topic name reversibly: topic names are `[A-Za-z0-9._-]`, and `.` is the
subject token separator and illegal in stream names, so `_` is the escape character and
`.` becomes `_2E`, `_` becomes `_5F` ("orders.v1" -> "orders_2Ev1"). A stem that would
make the stream name longer than JetStream's 255 characters (a file name on every
node) keeps a readable prefix and ends in `_H` plus a hash of the name; `_H` is not a
hex escape, so such stems are recognisable and `topic_from_stem` returns None for them.
Stream names are case-sensitive like topic names (nodes on a case-insensitive file
system would conflate "Orders" and "orders").

Offsets: offset = stream sequence - 1. JetStream sequences start at 1, grow by one per
stored message and are never reused, and retention or a purge only advances first_seq,
so dense offsets from 0 and Kafka's log start offset fall out of the stream state.

A record is one message. The value is the payload; everything else travels in headers:

    Logway-Format   "bytes" | "json"
    Logway-Key      the key, when it is printable ASCII without edge spaces
    Logway-Key-B64  otherwise (base64; an empty value is the empty key); neither = no key
    Logway-Headers  the record's headers when there are any: a JSON (ASCII) list of
                    [name, base64(value)] pairs, so duplicate names, order, any name
                    and any bytes survive NATS headers (one value per name, no CR/LF)

The timestamp is the message time the stream assigned (log-append time, ms).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from storage.errors import CorruptRecord
from storage.types import NewRecord, Record, TopicConfig, ValueFormat

MAX_STREAM_NAME = 255
MAX_PARTITION_DIGITS = 5  # partitions < 10000
HASHED_STEM_MARK = "_H"
HASH_HEX_CHARS = 32

FORMAT_HEADER = "Logway-Format"
KEY_HEADER = "Logway-Key"
KEY_B64_HEADER = "Logway-Key-B64"
HEADERS_HEADER = "Logway-Headers"
FORMAT_NAMES = {ValueFormat.BYTES: "bytes", ValueFormat.JSON: "json"}
FORMATS_BY_NAME = {name: fmt for fmt, name in FORMAT_NAMES.items()}

# The JetStream default duplicate window; a stream's is clipped to max_age (the server
# requires it).
DUPLICATE_WINDOW_NS = 120 * 1_000_000_000
NS_PER_MS = 1_000_000

_NAMESPACE = re.compile(r"[a-z][a-z0-9]{0,15}")
_ESCAPES = {".": "_2E", "_": "_5F"}
_UNESCAPES = {"2E": ".", "5F": "_"}
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def validate_namespace(ns: str) -> str:
    """Namespaces prefix every stream, subject and bucket: lower-case letters and digits."""
    if not _NAMESPACE.fullmatch(ns):
        raise ValueError(f"invalid namespace {ns!r}: 1-16 of [a-z0-9], starting with a letter")
    return ns


def stream_stem(ns: str, topic: str) -> str:
    """The topic's escaped name inside stream names and subjects (see the module docstring)."""
    escaped = "".join(_ESCAPES.get(c, c) for c in topic)
    budget = MAX_STREAM_NAME - len(ns) - 2 - MAX_PARTITION_DIGITS
    if len(escaped) <= budget:
        return escaped
    digest = hashlib.sha256(topic.encode()).hexdigest()[:HASH_HEX_CHARS]
    keep = budget - len(HASHED_STEM_MARK) - HASH_HEX_CHARS
    prefix = escaped[:keep]
    cut = prefix.rfind("_", max(0, keep - 2))  # never end inside a 3-character escape
    if cut != -1:
        prefix = prefix[:cut]
    return prefix + HASHED_STEM_MARK + digest


def topic_from_stem(stem: str) -> str | None:
    """Invert `stream_stem`; None for hashed stems of very long names."""
    out: list[str] = []
    i = 0
    while i < len(stem):
        c = stem[i]
        if c != "_":
            out.append(c)
            i += 1
            continue
        plain = _UNESCAPES.get(stem[i + 1 : i + 3])
        if plain is None:
            return None
        out.append(plain)
        i += 3
    return "".join(out)


def stream_name(ns: str, topic: str, partition: int) -> str:
    return f"{ns.upper()}_{stream_stem(ns, topic)}_{partition}"


def record_subject(ns: str, topic: str, partition: int) -> str:
    return f"{ns}.rec.{stream_stem(ns, topic)}.{partition}"


def notify_subject(ns: str, topic: str, partition: int) -> str:
    return f"{ns}.new.{stream_stem(ns, topic)}.{partition}"


def stream_config(
    ns: str,
    topic: str,
    partition: int,
    config: TopicConfig,
    replicas: int,
    duplicate_window_ms: int = DUPLICATE_WINDOW_NS // NS_PER_MS,
) -> dict[str, Any]:
    """The JetStream stream config of one partition (the JSON the API takes). The
    duplicate window is how long the stream refuses a second append with the same
    Idempotency-Key (storage.jetstream.dedupe); JetStream keeps it at most max_age."""
    max_age_ns = (config.retention_ms or 0) * NS_PER_MS
    window_ns = duplicate_window_ms * NS_PER_MS
    subject = record_subject(ns, topic, partition)
    return {
        "name": stream_name(ns, topic, partition),
        "subjects": [subject],
        "retention": "limits",
        "discard": "old",
        "storage": "file",
        "num_replicas": replicas,
        "max_age": max_age_ns,
        "max_bytes": config.retention_bytes if config.retention_bytes is not None else -1,
        "max_msgs": -1,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "max_consumers": -1,
        "duplicate_window": min(window_ns, max_age_ns or window_ns),
        "allow_direct": True,
        "allow_atomic": True,
        "deny_delete": True,
        "republish": {
            "src": subject,
            "dest": notify_subject(ns, topic, partition),
            "headers_only": True,
        },
        "metadata": {"logway.topic": topic, "logway.partition": str(partition)},
    }


# -- records ----------------------------------------------------------------------------


def _plain_key(key: bytes) -> str | None:
    """The key as header text if NATS carries it unchanged, else None."""
    if not key or key[0] == 0x20 or key[-1] == 0x20:
        return None
    if all(0x20 <= b < 0x7F for b in key):
        return key.decode("ascii")
    return None


def record_headers(record: NewRecord) -> dict[str, str]:
    """The NATS headers that carry a record's format, key and headers."""
    headers = {FORMAT_HEADER: FORMAT_NAMES[record.value_format]}
    if record.key is not None:
        plain = _plain_key(record.key)
        if plain is not None:
            headers[KEY_HEADER] = plain
        else:
            headers[KEY_B64_HEADER] = base64.b64encode(record.key).decode("ascii")
    if record.headers:
        pairs = [[name, base64.b64encode(value).decode("ascii")] for name, value in record.headers]
        headers[HEADERS_HEADER] = json.dumps(pairs, separators=(",", ":"), ensure_ascii=True)
    return headers


def record_size(record: NewRecord | Record) -> int:
    """What counts against a read's max_bytes: value and key, as in the embedded log."""
    return len(record.value) + (len(record.key) if record.key is not None else 0)


def decode_record(
    sequence: int, timestamp_ms: int, headers: Mapping[str, str] | None, value: bytes
) -> Record:
    """A stored message back into a Record. Messages written by other NATS clients on the
    subject (no Logway headers) read as keyless bytes records."""
    headers = headers or {}
    try:
        value_format = FORMATS_BY_NAME.get(headers.get(FORMAT_HEADER, "bytes"), ValueFormat.BYTES)
        key: bytes | None = None
        if KEY_HEADER in headers:
            key = headers[KEY_HEADER].encode("ascii")
        elif KEY_B64_HEADER in headers:
            key = base64.b64decode(headers[KEY_B64_HEADER], validate=True)
        record_headers_: tuple[tuple[str, bytes], ...] = ()
        if HEADERS_HEADER in headers:
            pairs = json.loads(headers[HEADERS_HEADER])
            record_headers_ = tuple(
                (str(name), base64.b64decode(value_b64, validate=True)) for name, value_b64 in pairs
            )
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise CorruptRecord(f"message {sequence} has malformed Logway headers: {exc}") from exc
    return Record(
        offset=sequence - 1,
        timestamp_ms=timestamp_ms,
        value=value,
        key=key,
        headers=record_headers_,
        value_format=value_format,
    )


def batch_headers(batch_id: str, index: int, count: int) -> dict[str, str]:
    """ADR-50 atomic batch headers for message `index` (0-based) of `count`."""
    headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(index + 1)}
    if index == count - 1:
        headers["Nats-Batch-Commit"] = "1"
    return headers


# -- time -------------------------------------------------------------------------------


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch of a JetStream RFC 3339 time with nanoseconds, exactly
    (floor), without a float round trip."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    whole, fraction, zone = match.groups()
    moment = datetime.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    seconds = int(moment.timestamp())
    millis = int((fraction or "0").ljust(9, "0")[:3])
    return seconds * 1000 + millis


def format_time_ms(timestamp_ms: int) -> str:
    """An RFC 3339 UTC time for JetStream's start_time, exact to the millisecond."""
    seconds, millis = divmod(timestamp_ms, 1000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


# -- key-value keys ---------------------------------------------------------------------


def group_key(kind: str, group: str) -> str:
    """A KV key for a group's offsets ("o") or metadata ("m"): group names are any
    printable text, KV keys are `[-/_=.A-Za-z0-9]`, so the name is base64url-encoded."""
    encoded = base64.urlsafe_b64encode(group.encode()).decode("ascii").rstrip("=")
    return f"{kind}.{encoded}"


def group_from_key(key: str) -> str:
    encoded = key.split(".", 1)[1]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def idempotency_key(key: str) -> str:
    """Idempotency-Key values are arbitrary and may be long; the KV key is their SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def encode_offsets(offsets: Mapping[tuple[str, int], int]) -> bytes:
    rows = sorted([topic, partition, offset] for (topic, partition), offset in offsets.items())
    return json.dumps(rows, separators=(",", ":")).encode()


def decode_offsets(data: bytes) -> dict[tuple[str, int], int]:
    rows: Sequence[list[Any]] = json.loads(data) if data else []
    return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}
