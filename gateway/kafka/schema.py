"""Kafka's message format, driven by the vendored definitions in `messages/`: pure, no I/O.

Each `<Name>Request.json` / `<Name>Response.json` is read once and turned into a decoder
(bytes -> dict) and an encoder (dict -> bytes) per valid version. A message is a plain dict
whose keys are the definition's field names in snake_case (`ThrottleTimeMs` ->
`throttle_time_ms`); a field the version does not have decodes to its default, and an
encoder takes a missing key as the default, so handlers fill in only what they mean.

The wire rules (Kafka protocol guide; KIP-482 for flexible versions):

    int8 int16 int32 int64 uint16 float64   big-endian; bool is one byte; uuid 16 bytes
    classic (non-flexible) versions
        string   int16 length (-1 null) + UTF-8
        bytes    int32 length (-1 null); `records` likewise
        array    int32 count (-1 null) + elements
    flexible versions
        compact string / bytes / array: unsigned varint (length + 1), 0 for null
        every struct ends with tagged fields: uvarint count, then per field
        uvarint tag, uvarint size, value; a reader skips tags it does not know

A field's own `flexibleVersions: "none"` (the request header's client id) keeps the
classic form inside a flexible struct. Values: ints, bools, floats, `str` or None,
`bytes` for bytes and uuid, a `memoryview` of the frame for records (an encoder also
takes bytes or a list of bytes for records, so a fetch answer is joined without a copy),
lists, and dicts for structs.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

ZERO_UUID = bytes(16)

Parts = list[bytes | memoryview]
Decode = Callable[["Reader"], Any]
Encode = Callable[[Parts, Any], None]


class MalformedMessage(ValueError):
    """The bytes do not follow the message's definition (a broker answers INVALID_REQUEST
    when it can, or closes the connection when even the header is unreadable)."""


class Reader:
    """A position in a buffer. Readers raise MalformedMessage when the buffer runs out."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0) -> None:
        self.buf = memoryview(buf)
        self.pos = pos
        self.end = len(self.buf)

    def take(self, size: int) -> memoryview:
        start = self.pos
        end = start + size
        if size < 0 or end > self.end:
            raise MalformedMessage(f"{size} bytes wanted at position {start}, {self.end} in all")
        self.pos = end
        return self.buf[start:end]

    def uvarint(self) -> int:
        """An unsigned varint of at most 32 bits (lengths, counts, tags)."""
        result = 0
        shift = 0
        buf = self.buf
        while True:
            if self.pos >= self.end:
                raise MalformedMessage("the buffer ends inside a varint")
            byte = buf[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
            if shift > 28:
                raise MalformedMessage("a varint longer than 5 bytes")


def uvarint(value: int) -> bytes:
    """The unsigned varint encoding of a non-negative int."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Versions:
    """A version range as the definitions write it: "3+", "0-7", "5", or "none"."""

    low: int
    high: int  # inclusive; -1 with low 0 for "none"

    @classmethod
    def parse(cls, text: str | None) -> Versions:
        if text is None or text == "none":
            return cls(0, -1)
        if text.endswith("+"):
            return cls(int(text[:-1]), 1 << 15)
        low, _, high = text.partition("-")
        return cls(int(low), int(high or low))

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.low <= version <= self.high


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


_NUMBERS = {
    "int8": struct.Struct(">b"),
    "int16": struct.Struct(">h"),
    "uint16": struct.Struct(">H"),
    "int32": struct.Struct(">i"),
    "int64": struct.Struct(">q"),
    "float64": struct.Struct(">d"),
}
_INT16 = _NUMBERS["int16"]
_INT32 = _NUMBERS["int32"]


def _number_codec(kind: struct.Struct) -> tuple[Decode, Encode]:
    unpack = kind.unpack
    pack = kind.pack
    size = kind.size

    def decode(reader: Reader) -> Any:
        return unpack(reader.take(size))[0]

    def encode(parts: Parts, value: Any) -> None:
        parts.append(pack(value))

    return decode, encode


def _bool_decode(reader: Reader) -> bool:
    return reader.take(1)[0] != 0


def _bool_encode(parts: Parts, value: Any) -> None:
    parts.append(b"\x01" if value else b"\x00")


def _uuid_decode(reader: Reader) -> bytes:
    return bytes(reader.take(16))


def _uuid_encode(parts: Parts, value: Any) -> None:
    if len(value) != 16:
        raise ValueError("a uuid is 16 bytes")
    parts.append(value)


def _length_reader(compact: bool) -> Callable[[Reader], int]:
    """The length prefix of a string, bytes or array: -1 means null."""
    if compact:
        return lambda reader: reader.uvarint() - 1
    return lambda reader: int(_INT32.unpack(reader.take(4))[0])


def _length_writer(compact: bool, classic: struct.Struct = _INT32) -> Callable[[int], bytes]:
    if compact:
        return lambda length: uvarint(length + 1)
    return classic.pack


def _string_codec(compact: bool, nullable: bool) -> tuple[Decode, Encode]:
    if compact:
        read_length = _length_reader(True)
    else:
        read_length = lambda reader: int(_INT16.unpack(reader.take(2))[0])  # noqa: E731
    write_length = _length_writer(compact, _INT16)

    def decode(reader: Reader) -> str | None:
        length = read_length(reader)
        if length < 0:
            if not nullable:
                raise MalformedMessage("null in a field that may not be null")
            return None
        try:
            return str(reader.take(length), "utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage(f"a string is not UTF-8: {exc}") from None

    def encode(parts: Parts, value: Any) -> None:
        if value is None:
            if not nullable:
                raise ValueError("None in a string field that may not be null")
            parts.append(write_length(-1))
            return
        data = value.encode()
        parts.append(write_length(len(data)))
        parts.append(data)

    return decode, encode


def _bytes_codec(compact: bool, nullable: bool, records: bool) -> tuple[Decode, Encode]:
    read_length = _length_reader(compact)
    write_length = _length_writer(compact)

    def decode(reader: Reader) -> bytes | memoryview | None:
        length = read_length(reader)
        if length < 0:
            if not nullable:
                raise MalformedMessage("null in a field that may not be null")
            return None
        data = reader.take(length)
        return data if records else bytes(data)

    def encode(parts: Parts, value: Any) -> None:
        if value is None:
            if not nullable:
                raise ValueError("None in a bytes field that may not be null")
            parts.append(write_length(-1))
        elif isinstance(value, list):  # records as parts, joined by the caller
            parts.append(write_length(sum(len(p) for p in value)))
            parts.extend(value)
        else:
            parts.append(write_length(len(value)))
            parts.append(value)

    return decode, encode


def _array_codec(
    element: tuple[Decode, Encode], compact: bool, nullable: bool
) -> tuple[Decode, Encode]:
    read_length = _length_reader(compact)
    write_length = _length_writer(compact)
    decode_element, encode_element = element

    def decode(reader: Reader) -> list[Any] | None:
        count = read_length(reader)
        if count < 0:
            if not nullable:
                raise MalformedMessage("null in an array that may not be null")
            return None
        if count > reader.end - reader.pos:  # every element takes at least one byte
            raise MalformedMessage(f"an array of {count} elements in {reader.end} bytes")
        return [decode_element(reader) for _ in range(count)]

    def encode(parts: Parts, value: Any) -> None:
        if value is None:
            if not nullable:
                raise ValueError("None in an array that may not be null")
            parts.append(write_length(-1))
            return
        parts.append(write_length(len(value)))
        for item in value:
            encode_element(parts, item)

    return decode, encode


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a definition, names already in snake_case."""

    name: str
    type: str  # a primitive, or a struct name; `array` says whether it is a list of them
    array: bool
    versions: Versions
    nullable: Versions
    tagged: Versions
    tag: int | None
    flexible: Versions | None  # a field's own override (only "none" exists)
    default: str | None
    fields: tuple[FieldSpec, ...]  # of a struct


def _parse_fields(raw: Sequence[dict[str, Any]], common: dict[str, Any]) -> tuple[FieldSpec, ...]:
    specs = []
    for field in raw:
        type_name: str = field["type"]
        array = type_name.startswith("[]")
        base = type_name[2:] if array else type_name
        children = field.get("fields")
        if children is None and base in common:
            children = common[base]
        specs.append(
            FieldSpec(
                name=snake_case(field["name"]),
                type=base,
                array=array,
                versions=Versions.parse(field.get("versions")),
                nullable=Versions.parse(field.get("nullableVersions")),
                tagged=Versions.parse(field.get("taggedVersions")),
                tag=field.get("tag"),
                flexible=(
                    Versions.parse(field["flexibleVersions"])
                    if "flexibleVersions" in field
                    else None
                ),
                default=None
                if "default" not in field
                else str(field["default"]).lower()
                if isinstance(field["default"], bool)
                else str(field["default"]),
                fields=_parse_fields(children, common) if children else (),
            )
        )
    return tuple(specs)


def default_value(spec: FieldSpec, version: int) -> Any:
    """The value a field has when a version lacks it or an encoder is not given it."""
    default = spec.default
    if spec.array:
        return None if default == "null" else []
    if spec.type in _NUMBERS:
        if default is None:
            return 0.0 if spec.type == "float64" else 0
        return float(default) if spec.type == "float64" else int(default, 0)
    if spec.type == "bool":
        return default == "true"
    if spec.type == "string":
        return None if default == "null" else (default or "")
    if spec.type in ("bytes", "records"):
        return None if default == "null" or spec.type == "records" else b""
    if spec.type == "uuid":
        return ZERO_UUID
    return {f.name: default_value(f, version) for f in spec.fields if version in f.versions}


def _field_codec(spec: FieldSpec, version: int, flexible: bool) -> tuple[Decode, Encode]:
    compact = flexible and (spec.flexible is None or version in spec.flexible)
    nullable = version in spec.nullable
    if spec.array:
        element = _value_codec(spec, version, compact, flexible, nullable=False)
        return _array_codec(element, compact, nullable)
    return _value_codec(spec, version, compact, flexible, nullable)


def _value_codec(
    spec: FieldSpec, version: int, compact: bool, flexible: bool, nullable: bool
) -> tuple[Decode, Encode]:
    kind = spec.type
    if kind in _NUMBERS:
        return _number_codec(_NUMBERS[kind])
    if kind == "bool":
        return _bool_decode, _bool_encode
    if kind == "uuid":
        return _uuid_decode, _uuid_encode
    if kind == "string":
        return _string_codec(compact, nullable)
    if kind in ("bytes", "records"):
        return _bytes_codec(compact, nullable, records=kind == "records")
    if not spec.fields:
        raise ValueError(f"unknown type {kind!r} of field {spec.name!r}")
    return struct_codec(spec.fields, version, flexible)


def struct_codec(
    fields: Sequence[FieldSpec], version: int, flexible: bool
) -> tuple[Decode, Encode]:
    """The decoder and encoder of a struct (a whole message is one) at `version`."""
    regular: list[tuple[str, Any, Decode, Encode]] = []
    tagged: dict[int, tuple[str, Any, Decode, Encode]] = {}
    absent: list[tuple[str, FieldSpec]] = []
    for spec in fields:
        if version not in spec.versions:
            absent.append((spec.name, spec))
            continue
        decode, encode = _field_codec(spec, version, flexible)
        entry = (spec.name, default_value(spec, version), decode, encode)
        if flexible and spec.tag is not None and version in spec.tagged:
            tagged[spec.tag] = entry
        else:
            regular.append(entry)
    tags = sorted(tagged.items())

    def decode_struct(reader: Reader) -> dict[str, Any]:
        out = {name: default_value(spec, version) for name, spec in absent}
        for name, _default, decode, _encode in regular:
            out[name] = decode(reader)
        if flexible:
            for name, default, _decode, _encode in tagged.values():
                out[name] = default_value_copy(default)
            for _ in range(reader.uvarint()):
                tag = reader.uvarint()
                size = reader.uvarint()
                data = reader.take(size)
                known = tagged.get(tag)
                if known is not None:
                    out[known[0]] = known[2](Reader(data))
        return out

    def encode_struct(parts: Parts, value: Any) -> None:
        get = value.get
        for name, default, _decode, encode in regular:
            encode(parts, get(name, default))
        if not flexible:
            return
        present = []
        for tag, (name, default, _decode, encode) in tags:
            item = get(name, default)
            if item != default:
                inner: Parts = []
                encode(inner, item)
                present.append((tag, b"".join(inner)))
        parts.append(uvarint(len(present)))
        for tag, data in present:
            parts.append(uvarint(tag))
            parts.append(uvarint(len(data)))
            parts.append(data)

    return decode_struct, encode_struct


def default_value_copy(default: Any) -> Any:
    """A fresh copy of a mutable default, so decoded messages share no lists."""
    if isinstance(default, list):
        return []
    if isinstance(default, dict):
        return {k: default_value_copy(v) for k, v in default.items()}
    return default


@dataclass(frozen=True, slots=True)
class MessageCodec:
    """A message's decoder and encoder at one version."""

    version: int
    flexible: bool
    decode: Callable[[Reader], dict[str, Any]]
    encode: Encode

    def to_bytes(self, value: dict[str, Any]) -> bytes:
        parts: Parts = []
        self.encode(parts, value)
        return b"".join(parts)

    def from_bytes(self, data: bytes | memoryview) -> dict[str, Any]:
        """Decode a whole buffer; trailing bytes are an error."""
        reader = Reader(data)
        value = self.decode(reader)
        if reader.pos != reader.end:
            raise MalformedMessage(f"{reader.end - reader.pos} bytes after the message")
        return value


@dataclass(frozen=True, slots=True)
class MessageSchema:
    """One definition file: its API key, valid and flexible versions, and codecs."""

    name: str
    api_key: int | None
    valid: Versions
    flexible_versions: Versions
    codecs: dict[int, MessageCodec]

    def at(self, version: int) -> MessageCodec:
        codec = self.codecs.get(version)
        if codec is None:
            raise ValueError(f"{self.name} has no version {version}")
        return codec


def _strip_comments(text: str) -> str:
    """The definitions are JSON with whole-line // comments."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


@functools.cache  # immutable once built; every listener and test shares the same codecs
def load_schema(name: str) -> MessageSchema:
    """Read `messages/<name>.json` and build its codec for every valid version."""
    text = resources.files(__package__).joinpath("messages", f"{name}.json").read_text()
    raw = json.loads(_strip_comments(text))
    common = {c["name"]: c["fields"] for c in raw.get("commonStructs", [])}
    fields = _parse_fields(raw["fields"], common)
    valid = Versions.parse(raw["validVersions"])
    flexible = Versions.parse(raw["flexibleVersions"])
    codecs = {}
    for version in range(valid.low, valid.high + 1):
        is_flexible = version in flexible
        decode, encode = struct_codec(fields, version, is_flexible)
        codecs[version] = MessageCodec(version, is_flexible, decode, encode)
    return MessageSchema(raw["name"], raw.get("apiKey"), valid, flexible, codecs)
