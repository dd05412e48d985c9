"""The definition-driven codec: bytes as Kafka writes them, every version of every vendored
definition, and malformed input refused (never a crash or a silent misread)."""

from __future__ import annotations

from importlib import resources

import pytest

from gateway.kafka.schema import (
    MalformedMessage,
    Reader,
    Versions,
    load_schema,
    snake_case,
    uvarint,
)

NAMES = sorted(
    p.name.removesuffix(".json")
    for p in resources.files("gateway.kafka").joinpath("messages").iterdir()
    if p.name.endswith(".json")
)


def test_names_and_versions() -> None:
    assert snake_case("ThrottleTimeMs") == "throttle_time_ms"
    assert snake_case("timeoutMs") == "timeout_ms"
    assert snake_case("TopicId") == "topic_id"
    assert 3 in Versions.parse("3+")
    assert 2 not in Versions.parse("3+")
    assert 7 in Versions.parse("5-7")
    assert 8 not in Versions.parse("5-7")
    assert 0 not in Versions.parse("none")


@pytest.mark.parametrize("name", NAMES)
def test_every_version_round_trips_its_defaults(name: str) -> None:
    schema = load_schema(name)
    for version, codec in schema.codecs.items():
        assert codec.flexible == (version in schema.flexible_versions)
        data = codec.to_bytes({})
        decoded = codec.from_bytes(data)
        assert codec.to_bytes(decoded) == data, (name, version)


def test_request_header_v2_keeps_a_classic_client_id() -> None:
    """ApiVersions v3 as librdkafka sends it: header v2 whose client id stays an int16
    string (flexibleVersions "none"), then compact strings and empty tagged fields."""
    frame = (
        b"\x00\x12\x00\x03\x00\x00\x00\x07"  # api key 18, version 3, correlation id 7
        + b"\x00\x07rdkafka"  # client id: int16 length
        + b"\x00"  # header tagged fields
        + b"\x0blibrdkafka"  # compact string: length + 1
        + b"\x062.6.0"
        + b"\x00"
    )
    reader = Reader(frame)
    header = load_schema("RequestHeader").at(2).decode(reader)
    assert header == {
        "request_api_key": 18,
        "request_api_version": 3,
        "correlation_id": 7,
        "client_id": "rdkafka",
    }
    body = load_schema("ApiVersionsRequest").at(3).decode(reader)
    assert body == {"client_software_name": "librdkafka", "client_software_version": "2.6.0"}
    assert reader.pos == len(frame)


def test_tagged_fields_are_written_when_set_and_skipped_when_unknown() -> None:
    codec = load_schema("ApiVersionsResponse").at(3)
    plain = codec.to_bytes({"api_keys": []})
    tagged = codec.to_bytes({"api_keys": [], "finalized_features_epoch": 5})
    assert len(tagged) > len(plain)
    assert codec.from_bytes(tagged)["finalized_features_epoch"] == 5
    assert codec.from_bytes(plain)["finalized_features_epoch"] == -1
    # an unknown tag (99) with 3 bytes of payload is skipped
    unknown = plain[:-1] + b"\x01" + uvarint(99) + b"\x03abc"
    assert codec.from_bytes(unknown)["api_keys"] == []


def test_classic_and_compact_forms() -> None:
    codec = load_schema("MetadataRequest")
    classic = codec.at(8).to_bytes({"topics": [{"name": "orders"}]})
    assert classic == b"\x00\x00\x00\x01\x00\x06orders" + b"\x01\x00\x00"
    compact = codec.at(9).to_bytes({"topics": [{"name": "orders"}]})
    assert compact == b"\x02\x07orders\x00" + b"\x01\x00\x00\x00"
    assert codec.at(9).from_bytes(compact)["topics"] == [{"topic_id": bytes(16), "name": "orders"}]
    assert codec.at(1).from_bytes(b"\xff\xff\xff\xff")["topics"] is None  # null: all topics


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x05\x00\x01a",  # five topics promised, one short name given
        b"\x00\x00\x00\x01\x00\x10orders",  # a name longer than the buffer
        b"\x00\x00\x00\x01\x00\x02\xff\xfe",  # not UTF-8
        b"\x00\x00\x00\x00\x01\x00\x00\x00",  # bytes after the message
        b"\x00\x00\x00\x01\xff\xff",  # null name where it may not be null
    ],
)
def test_malformed_input_raises_malformed_message(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        load_schema("MetadataRequest").at(3).from_bytes(data)


def test_defaults_follow_the_definitions() -> None:
    schema = load_schema("FetchRequest")
    decoded = schema.at(4).from_bytes(schema.at(4).to_bytes({"topics": []}))
    assert decoded["max_bytes"] == 0x7FFFFFFF  # "default": "0x7fffffff"
    assert decoded["session_epoch"] == -1  # absent before v7: its default
