"""The JetStream layout without a server: names, record headers, times, KV keys."""

from __future__ import annotations

import datetime
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.errors import CorruptRecord
from storage.jetstream.codec import (
    MAX_STREAM_NAME,
    decode_offsets,
    decode_record,
    encode_offsets,
    format_time_ms,
    group_from_key,
    group_key,
    notify_subject,
    parse_time_ms,
    record_headers,
    record_subject,
    stream_config,
    stream_name,
    stream_stem,
    topic_from_stem,
    validate_namespace,
)
from storage.types import NewRecord, TopicConfig, ValueFormat

TOPIC_CHARS = string.ascii_letters + string.digits + "._-"
topic_names = st.text(alphabet=TOPIC_CHARS, min_size=1, max_size=249).filter(
    lambda n: n not in (".", "..")
)
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]+")  # no '.', '*', '>', spaces or path separators
SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
KV_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")


@given(topic_names)
def test_stream_names_are_legal_and_distinct_per_topic(topic: str) -> None:
    name = stream_name("logway", topic, 9999)
    assert len(name) <= MAX_STREAM_NAME
    assert STREAM_NAME.fullmatch(name)
    for token in record_subject("logway", topic, 0).split("."):
        assert SUBJECT_TOKEN.fullmatch(token)
    assert notify_subject("logway", topic, 0) != record_subject("logway", topic, 0)
    decoded = topic_from_stem(stream_stem("logway", topic))
    assert decoded in (topic, None)  # None only for hashed stems of very long names


@given(st.text(alphabet=TOPIC_CHARS, min_size=1, max_size=60))
def test_short_stems_invert(topic: str) -> None:
    assert topic_from_stem(stream_stem("logway", topic)) == topic


def test_escaping_examples() -> None:
    assert stream_name("logway", "orders.v1", 0) == "LOGWAY_orders_2Ev1_0"
    assert stream_stem("logway", "a_b") == "a_5Fb"
    assert stream_stem("logway", "a_2Eb") == "a_5F2Eb"
    assert stream_stem("logway", "a.b") != stream_stem("logway", "a_b")
    long_a, long_b = "." * 249, "." * 248 + "a"
    assert stream_stem("logway", long_a) != stream_stem("logway", long_b)
    assert topic_from_stem(stream_stem("logway", long_a)) is None


def test_namespaces() -> None:
    assert validate_namespace("t12") == "t12"
    for bad in ("", "Logway", "1x", "a.b", "a_b", "x" * 17):
        with pytest.raises(ValueError, match="namespace"):
            validate_namespace(bad)


def test_stream_config_maps_retention() -> None:
    config = stream_config("logway", "t", 2, TopicConfig(retention_ms=1500, retention_bytes=10), 3)
    assert config["max_age"] == 1_500_000_000
    assert config["max_bytes"] == 10
    assert config["duplicate_window"] == 1_500_000_000  # never above max_age
    assert (config["discard"], config["num_replicas"], config["allow_atomic"]) == ("old", 3, True)
    unlimited = stream_config("logway", "t", 0, TopicConfig(None, None), 1)
    assert (unlimited["max_age"], unlimited["max_bytes"]) == (0, -1)


header_values = st.binary(max_size=40)
header_names = st.text(max_size=20)
records = st.builds(
    NewRecord,
    value=st.binary(max_size=50),
    key=st.none() | st.binary(max_size=40),
    headers=st.lists(st.tuples(header_names, header_values), max_size=4).map(tuple),
    value_format=st.sampled_from(ValueFormat),
)


@given(records)
def test_record_headers_round_trip_and_are_nats_safe(record: NewRecord) -> None:
    headers = record_headers(record)
    for name, value in headers.items():
        assert name.isascii()
        assert ":" not in name
        assert value.isascii()
        assert "\r" not in value
        assert "\n" not in value
        assert value == value.strip()
    decoded = decode_record(8, 1234, headers, record.value)
    assert (decoded.offset, decoded.timestamp_ms) == (7, 1234)
    assert (decoded.value, decoded.key, decoded.headers, decoded.value_format) == (
        record.value,
        record.key,
        record.headers,
        record.value_format,
    )


def test_foreign_messages_read_as_keyless_bytes() -> None:
    record = decode_record(1, 0, {"Nats-Msg-Id": "x", "Other": "y"}, b"raw")
    assert (record.key, record.headers, record.value_format) == (None, (), ValueFormat.BYTES)


def test_malformed_logway_headers_are_corrupt_records() -> None:
    with pytest.raises(CorruptRecord):
        decode_record(1, 0, {"Logway-Key-B64": "%%%"}, b"")
    with pytest.raises(CorruptRecord):
        decode_record(1, 0, {"Logway-Headers": "[not json"}, b"")


def test_times() -> None:
    assert parse_time_ms("2026-11-22T05:23:20.222720131Z") == 1795325000222
    assert parse_time_ms("1970-01-01T00:00:01Z") == 1000
    assert parse_time_ms("1970-01-01T01:00:00.5+01:00") == 500
    assert format_time_ms(1795325000222) == "2026-11-22T05:23:20.222Z"
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time_ms("yesterday")


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_time_round_trip(ms: int) -> None:
    text = format_time_ms(ms)
    assert parse_time_ms(text) == ms
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert round(moment.timestamp() * 1000) == ms


@given(st.text(min_size=1, max_size=249))
def test_group_keys(group: str) -> None:
    for kind in ("o", "m"):
        key = group_key(kind, group)
        assert KV_KEY.fullmatch(key)
        assert group_from_key(key) == group


def test_offsets_encoding() -> None:
    offsets = {("t", 1): 5, ("a.b", 0): 0}
    assert decode_offsets(encode_offsets(offsets)) == offsets
    assert decode_offsets(b"") == {}
