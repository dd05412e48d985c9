"""The compression codecs of Kafka record batches, for decompressing what producers send.

Codec ids are the low three bits of a batch's attributes. gzip uses the standard library;
snappy, lz4 and zstd use cramjam (the `kafka` extra: one wheel with all three, and what
python-snappy itself now wraps). Snappy arrives either raw (librdkafka) or in the xerial
framing of the Java client (`\\x82SNAPPY\\x00`, two version ints, then length-prefixed raw
blocks); lz4 is the LZ4 frame format (KIP-57) and zstd a zstd frame. logway answers fetches
uncompressed, so it never compresses.
"""

from __future__ import annotations

import enum
import struct
import zlib

import cramjam


class Compression(enum.IntEnum):
    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


class UnsupportedCompression(ValueError):
    """A codec id that is not one of Kafka's (answered UNSUPPORTED_COMPRESSION_TYPE)."""


class BadCompressedData(ValueError):
    """The codec is known but the bytes do not decompress (answered CORRUPT_MESSAGE)."""


_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_BYTES = 16  # magic, version(4), compatible version(4)
_BLOCK_LENGTH = struct.Struct(">i")


def decompress(codec_id: int, data: bytes | memoryview, max_bytes: int) -> bytes:
    """The records section of a batch compressed with `codec_id`, at most `max_bytes` long."""
    try:
        codec = Compression(codec_id)
    except ValueError:
        raise UnsupportedCompression(f"compression codec {codec_id} does not exist") from None
    try:
        if codec is Compression.GZIP:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = inflater.decompress(data, max_bytes + 1)
        elif codec is Compression.SNAPPY:
            out = _snappy(bytes(data))
        elif codec is Compression.LZ4:
            out = bytes(cramjam.lz4.decompress(bytes(data)))
        elif codec is Compression.ZSTD:
            out = bytes(cramjam.zstd.decompress(bytes(data)))
        else:
            out = bytes(data)
    except (zlib.error, cramjam.DecompressionError, ValueError) as exc:
        raise BadCompressedData(f"{codec.name.lower()} data does not decompress: {exc}") from None
    if len(out) > max_bytes:
        raise BadCompressedData(f"records decompress to more than {max_bytes} bytes")
    return out


def _snappy(data: bytes) -> bytes:
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(cramjam.snappy.decompress_raw(data))
    blocks = []
    position = _XERIAL_HEADER_BYTES
    while position < len(data):
        (length,) = _BLOCK_LENGTH.unpack_from(data, position)
        position += 4
        if length < 0 or position + length > len(data):
            raise ValueError("a xerial snappy block overruns the data")
        blocks.append(bytes(cramjam.snappy.decompress_raw(data[position : position + length])))
        position += length
    return b"".join(blocks)
