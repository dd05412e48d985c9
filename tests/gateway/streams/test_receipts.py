"""commit=auto's proof of receipt (`ReceiptLedger`): a position counts as received once a
later write to the same connection succeeded at least one commit interval after it. Times
are passed in, so nothing here waits or measures."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.streams.group_stream import ReceiptLedger


def test_a_position_is_proven_only_by_a_write_an_interval_later() -> None:
    ledger = ReceiptLedger(interval_s=1.0)
    ledger.wrote(10.0, 0, 5)
    ledger.wrote(10.5, 0, 9)
    ledger.wrote(10.9)  # a heartbeat: too soon to prove either
    assert ledger.prove() == {}
    ledger.wrote(11.0)  # one interval after offset 5 went out
    assert ledger.prove() == {0: 5}
    ledger.wrote(11.4)
    assert ledger.prove() == {0: 5}
    ledger.wrote(11.5)
    assert ledger.prove() == {0: 9}


def test_time_alone_proves_nothing() -> None:
    """A connection that takes no more writes (the client went away) gets nothing committed
    for its last interval, however long the gateway waits."""
    ledger = ReceiptLedger(interval_s=1.0)
    ledger.wrote(10.0, 0, 5)
    ledger.wrote(10.2, 1, 3)
    assert ledger.prove() == {}
    assert ledger.needs_write(now_s=10.5) is False
    assert ledger.needs_write(now_s=11.0) is True  # a heartbeat now would prove offset 5
    assert ledger.prove() == {}


def test_a_write_that_came_is_not_asked_for_again() -> None:
    ledger = ReceiptLedger(interval_s=1.0)
    ledger.wrote(10.0, 0, 5)
    ledger.wrote(11.2)
    assert ledger.needs_write(now_s=11.3) is False
    assert ledger.prove() == {0: 5}
    assert ledger.needs_write(now_s=20.0) is False  # nothing left to prove


def test_a_new_assignment_keeps_only_partitions_that_go_on() -> None:
    ledger = ReceiptLedger(interval_s=1.0)
    ledger.wrote(10.0, 0, 5)
    ledger.wrote(10.0, 1, 7)
    ledger.wrote(11.0)
    assert ledger.prove() == {0: 5, 1: 7}
    ledger.wrote(11.1, 0, 6)
    ledger.wrote(11.1, 1, 8)
    ledger.keep({1})  # partition 0 moved away (or restarts elsewhere)
    ledger.wrote(12.5)
    assert ledger.prove() == {1: 8}


@given(
    st.lists(
        st.tuples(st.floats(0, 0.5), st.sampled_from([None, 0, 1, 2])), min_size=1, max_size=60
    )
)
def test_proven_positions_were_followed_by_a_write_an_interval_later(
    steps: list[tuple[float, int | None]],
) -> None:
    """Against the definition: for every partition, the proven offset is the newest one whose
    write came at least an interval before some later write."""
    ledger = ReceiptLedger(interval_s=1.0)
    now = 0.0
    writes: list[tuple[float, int | None, int]] = []
    for step, (gap_s, partition) in enumerate(steps):
        now += gap_s
        ledger.wrote(now, partition, step)
        writes.append((now, partition, step))
        expected: dict[int, int] = {}
        for at, p, offset in writes:
            if p is not None and any(later - 1.0 >= at for later, _, _ in writes):
                expected[p] = offset
        assert ledger.prove() == expected
