"""Kafka request and response frames built and read with the listener's own codec, for
raw connections (tests/gateway/kafka/conftest.py's RawKafka, tests/security/kafka_raw.py)."""

from __future__ import annotations

import struct
from typing import Any

from gateway.kafka.dispatch import ApiKey
from gateway.kafka.schema import load_schema

_NAMES = {key: key.name.title().replace("_", "") for key in ApiKey}  # PRODUCE -> Produce


def request_frame(
    key: ApiKey, version: int, correlation_id: int, body: dict[str, Any], client_id: str
) -> bytes:
    """A request frame, its size prefix included."""
    request = load_schema(f"{_NAMES[key]}Request").at(version)
    header = load_schema("RequestHeader").at(2 if request.flexible else 1)
    payload = header.to_bytes(
        {
            "request_api_key": key,
            "request_api_version": version,
            "correlation_id": correlation_id,
            "client_id": client_id,
        }
    ) + request.to_bytes(body)
    return struct.pack(">i", len(payload)) + payload


def response_body(key: ApiKey, version: int, frame: bytes) -> tuple[int, dict[str, Any]]:
    """(correlation id, body) of a response frame without its size prefix."""
    response = load_schema(f"{_NAMES[key]}Response").at(version)
    flexible_header = response.flexible and key != ApiKey.API_VERSIONS
    (correlation_id,) = struct.unpack_from(">i", frame)
    return correlation_id, response.from_bytes(frame[5 if flexible_header else 4 :])
