"""The cursor codec: round trips, compactness, and refusal of anything it did not write."""

from __future__ import annotations

import base64
import contextlib
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.streams.cursor import CursorEncoder, CursorError, decode_cursor, encode_cursor

positions_st = st.dictionaries(
    st.integers(0, 9_999), st.integers(0, 2**63 - 1), min_size=1, max_size=50
)


@given(positions_st)
def test_round_trip(positions: dict[int, int]) -> None:
    assert decode_cursor(encode_cursor(positions)) == positions


@given(positions_st, st.data())
def test_incremental_encoder_matches_fresh_encoding(
    positions: dict[int, int], data: st.DataObject
) -> None:
    encoder = CursorEncoder(positions)
    current = dict(positions)
    for _ in range(5):
        partition = data.draw(st.sampled_from(sorted(positions)))
        offset = data.draw(st.integers(0, 2**40))
        encoder.advance(partition, offset)
        current[partition] = offset
        assert encoder.encode() == encode_cursor(current)


def test_compact_and_url_safe() -> None:
    cursor = encode_cursor({0: 15, 1: 300, 2: 7})
    assert cursor.startswith("1.")
    assert len(cursor) <= 16
    assert all(c.isalnum() or c in "-_." for c in cursor)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1.",
        "2.AAEAALUr",  # unknown version
        "AAEAALUr",  # no version
        "1.AAEAALUs",  # checksum
        "1.AAEAAL",  # truncated
        "1.AAEAALUr=",  # padding
        "1.AA+AALUr",  # not base64url
        "1.ÄÄÄÄ",
        "1." + "A" * 20_000,
    ],
)
def test_refuses_what_it_did_not_write(bad: str) -> None:
    with pytest.raises(CursorError):
        decode_cursor(bad)


def _forge(payload: bytes) -> str:
    crc = (zlib.crc32(payload) & 0xFFFF).to_bytes(2, "big")
    return "1." + base64.urlsafe_b64encode(payload + crc).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no partitions
        b"\x00",  # a partition without an offset
        b"\x00\xff",  # a number that never ends
        b"\x00\x80\x00",  # non-canonical number
        b"\x90\x4e\x00",  # partition 10000
        b"\x00" + b"\xff" * 9 + b"\x01",  # offset beyond 2**63 - 1
    ],
)
def test_refuses_well_checksummed_nonsense(payload: bytes) -> None:
    with pytest.raises(CursorError):
        decode_cursor(_forge(payload))


@given(st.text(max_size=40))
def test_never_crashes_on_arbitrary_text(text: str) -> None:
    with contextlib.suppress(CursorError):
        decode_cursor(text)


@given(positions_st, st.data())
def test_batch_encoding_matches_record_by_record(
    positions: dict[int, int], data: st.DataObject
) -> None:
    batched, single = CursorEncoder(positions), CursorEncoder(positions)
    partition = data.draw(st.sampled_from(sorted(positions)))
    start = data.draw(st.integers(0, 2**40))
    run = list(range(start, start + data.draw(st.integers(0, 5))))
    expected = []
    for offset in run:
        single.advance(partition, offset)
        expected.append(single.encode().encode())
    assert batched.encode_run(partition, run) == expected
    assert batched.encode() == single.encode()
