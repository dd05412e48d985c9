"""Where a stream starts: `from=` (earliest, latest, a timestamp) or a cursor it resumes."""

from __future__ import annotations

from gateway.http.problems import Problem, offset_out_of_range
from gateway.streams.cursor import CursorError, decode_cursor_epoch
from storage.backend import Backend


async def start_positions(
    backend: Backend, topic: str, partitions: list[int], start: str
) -> dict[int, int]:
    """Where each partition starts for `from=` (earliest, latest or a timestamp in ms)."""
    positions: dict[int, int] = {}
    if start in ("earliest", "latest"):
        for p in partitions:
            info = await backend.partition_info(topic, p)
            positions[p] = info.log_start_offset if start == "earliest" else info.end_offset
        return positions
    if not start.isascii() or not start.isdigit() or len(start) > 15:
        raise Problem(
            "validation-error",
            "from must be earliest, latest or a timestamp in ms since the epoch",
            errors=[{"parameter": "from", "detail": "earliest, latest or an integer timestamp"}],
        )
    for p in partitions:
        positions[p] = await backend.offset_for_timestamp(topic, p, int(start))
    return positions


async def resume_positions(
    backend: Backend, topic: str, partitions: list[int], cursor: str
) -> dict[int, int]:
    """The cursor's positions for the partitions it names (validated against the log)."""
    positions = read_cursor(cursor, partitions)[1]
    for p, offset in positions.items():
        info = await backend.partition_info(topic, p)
        if offset > info.end_offset:  # from another incarnation of the topic
            raise offset_out_of_range(offset, info.log_start_offset, info.end_offset)
    return positions


def read_cursor(cursor: str, partitions: list[int]) -> tuple[int | None, dict[int, int]]:
    """A cursor's epoch (None without one) and positions; a bad-cursor problem when it is
    malformed or names a partition outside `partitions`."""
    try:
        epoch, positions = decode_cursor_epoch(cursor)
    except CursorError as exc:
        raise Problem("bad-cursor", f"the cursor is not valid: {exc}") from None
    stray = positions.keys() - set(partitions)
    if stray:
        raise Problem(
            "bad-cursor", f"the cursor names partitions this stream does not read: {sorted(stray)}"
        )
    return epoch, positions
