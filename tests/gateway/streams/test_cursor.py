"""The cursor codec: round trips, compactness, and refusal of anything it did not write."""

from __future__ import annotations

import base64
import contextlib
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.streams.cursor import (
    MAX_EPOCH,
    CursorEncoder,
    CursorError,
    decode_cursor,
    decode_cursor_epoch,
    encode_cursor,
)

positions_st = st.dictionaries(
    st.integers(0, 9_999), st.integers(0, 2**63 - 1), min_size=1, max_size=50
)
epochs_st = st.none() | st.integers(0, MAX_EPOCH)


@given(positions_st, epochs_st)
def test_round_trip(positions: dict[int, int], epoch: int | None) -> None:
    cursor = encode_cursor(positions, epoch)
    assert cursor.startswith("1." if epoch is None else "2.")
    assert decode_cursor_epoch(cursor) == (epoch, positions)
    assert decode_cursor(cursor) == positions


@given(positions_st, epochs_st, st.data())
def test_incremental_encoder_matches_fresh_encoding(
    positions: dict[int, int], epoch: int | None, data: st.DataObject
) -> None:
    encoder = CursorEncoder(positions, epoch)
    current = dict(positions)
    for _ in range(5):
        partition = data.draw(st.sampled_from(sorted(positions)))
        offset = data.draw(st.integers(0, 2**40))
        encoder.advance(partition, offset)
        current[partition] = offset
        assert encoder.encode() == encode_cursor(current, epoch)


def test_the_epoch_tells_cursors_of_equal_positions_apart() -> None:
    """A cache keyed on `state()` must not hand one epoch's ids to another's stream."""
    states = {CursorEncoder({0: 5}, epoch).state() for epoch in (None, 0, 1, MAX_EPOCH)}
    assert len(states) == 4
    assert len(encode_cursor({0: 15, 1: 300, 2: 7}, MAX_EPOCH)) <= 24
    with pytest.raises(ValueError, match="32-bit"):
        CursorEncoder({0: 1}, MAX_EPOCH + 1)


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
        "3.AAEAALUr",  # unknown version
        "2.",
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


def _forge(payload: bytes, version: str = "1.") -> str:
    crc = (zlib.crc32(payload) & 0xFFFF).to_bytes(2, "big")
    return version + base64.urlsafe_b64encode(payload + crc).rstrip(b"=").decode()


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
    with pytest.raises(CursorError):
        decode_cursor(_forge(b"\x07" + payload, "2."))  # the same after an epoch


@pytest.mark.parametrize(
    "payload",
    [
        b"\x07",  # an epoch and no partitions
        b"\x80\x80\x80\x80\x10\x00\x00",  # epoch 2**32
    ],
)
def test_refuses_a_bad_epoch(payload: bytes) -> None:
    with pytest.raises(CursorError):
        decode_cursor(_forge(payload, "2."))


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
