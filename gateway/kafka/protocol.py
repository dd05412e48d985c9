"""Framing and headers of Kafka requests and responses: pure, bytes in and out.

    request frame:   size(4) header body       size counts header and body
    request header:  api_key(2) api_version(2) correlation_id(4) client_id (int16 string)
                     + tagged fields when the API's request version is flexible (v2)
    response frame:  size(4) correlation_id(4) [tagged fields] body

A flexible response has header v1 (with tagged fields), except ApiVersions, whose
response header stays v0 so that a client can read it before it knows which versions
the broker speaks.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from gateway.kafka.dispatch import ApiKey, Body, Registered, Request
from gateway.kafka.schema import MalformedMessage, Parts, Reader, load_schema

HEAD = struct.Struct(">hhi")  # api_key api_version correlation_id
_SIZE = struct.Struct(">i")
_REQUEST_HEADER = load_schema("RequestHeader")
_RESPONSE_HEADER = load_schema("ResponseHeader")


class UnknownApi(Exception):
    """A request whose API key, or whose version of it, this broker cannot even decode."""


def peek_head(frame: bytes) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) of a request frame (without its size)."""
    if len(frame) < HEAD.size:
        raise MalformedMessage("a request frame shorter than its header")
    api_key, api_version, correlation_id = HEAD.unpack_from(frame)
    return int(api_key), int(api_version), int(correlation_id)


def decode_request(frame: bytes, apis: Mapping[int, Registered]) -> Request:
    """The request in `frame`. Raises UnknownApi for a key or version outside the
    definitions, MalformedMessage when the bytes do not follow them."""
    api_key, version, _correlation_id = peek_head(frame)
    registered = apis.get(api_key)
    if registered is None or version not in registered.request.valid:
        raise UnknownApi(f"API key {api_key} version {version}")
    codec = registered.request.at(version)
    reader = Reader(frame)
    header = _REQUEST_HEADER.at(2 if codec.flexible else 1).decode(reader)
    body = codec.decode(reader)
    if reader.pos != reader.end:
        raise MalformedMessage(f"{reader.end - reader.pos} bytes after the request")
    return Request(api_key, version, header["correlation_id"], header["client_id"], body)


def encode_response(registered: Registered, version: int, correlation_id: int, body: Body) -> bytes:
    """The response frame (size included) of `body` at `version`."""
    codec = registered.response.at(version)
    flexible_header = codec.flexible and registered.api.key != ApiKey.API_VERSIONS
    parts: Parts = [b""]
    _RESPONSE_HEADER.at(1 if flexible_header else 0).encode(
        parts, {"correlation_id": correlation_id}
    )
    codec.encode(parts, body)
    parts[0] = _SIZE.pack(sum(len(p) for p in parts))
    return b"".join(parts)
