"""The e-commerce story (examples/ecommerce) on a real gateway, checked rather than narrated.

The same orchestration as `python -m examples.ecommerce`, with fewer orders: a real
`logway serve`, the Order service over HTTP, Payment/Inventory/Notification as consumer
groups that commit after processing, Notification stopped and replaced while orders flow,
a second Payment instance, and Analytics replaying the topic.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from examples.ecommerce.story import StoryConfig, StoryResult, run_story

pytestmark = pytest.mark.e2e

CONFIG = StoryConfig(
    customers=5, fanout_orders=15, backlog_waves=2, orders_per_wave=10, scaleout_orders=15
)
TOTAL = (
    CONFIG.fanout_orders + CONFIG.backlog_waves * CONFIG.orders_per_wave + CONFIG.scaleout_orders
)


@pytest.fixture(scope="module")
def story() -> tuple[StoryResult, list[str]]:
    """One run of the story, shared by the tests below (each checks one part of it)."""
    lines: list[str] = []
    return asyncio.run(run_story(CONFIG, lines.append)), lines


def _in_order_per_customer(orders: list[tuple[str, int]]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = {}
    for customer, seq in orders:
        seqs.setdefault(customer, []).append(seq)
    return seqs


def test_every_service_processes_every_order_exactly_once_in_order_per_customer(
    story: tuple[StoryResult, list[str]],
) -> None:
    result, _ = story
    placed = result.orders
    assert len(placed) == TOTAL
    assert len({o.order_id for o in placed}) == TOTAL
    expected = {c: list(range(1, n + 1)) for c, n in Counter(o.customer_id for o in placed).items()}
    for service in ("Payment", "Inventory", "Notification"):
        ledger = result.ledgers[service]
        assert ledger.fenced == [], f"{service}: a rebalance refused a commit"
        counts = Counter(p.order.order_id for p in ledger.processed)
        assert counts == Counter({o.order_id: 1 for o in placed}), service  # exactly once
        assert {p.order for p in ledger.processed} == set(placed)  # the events as published
        processing_order = [(p.order.customer_id, p.order.seq) for p in ledger.processed]
        assert _in_order_per_customer(processing_order) == expected, service


def test_notification_backlog_grows_while_it_is_down_and_drains_when_it_returns(
    story: tuple[StoryResult, list[str]],
) -> None:
    result, _ = story
    wave = CONFIG.orders_per_wave
    assert result.backlog_lag == [wave * (i + 1) for i in range(CONFIG.backlog_waves)]
    assert result.drain_lag[0] == wave * CONFIG.backlog_waves
    assert result.drain_lag[-1] == 0
    by_instance = result.ledgers["Notification"].by_instance()
    assert by_instance == {
        "notification-1": CONFIG.fanout_orders,
        "notification-2": TOTAL - CONFIG.fanout_orders,
    }


def test_a_second_payment_instance_takes_half_the_partitions(
    story: tuple[StoryResult, list[str]],
) -> None:
    result, lines = story
    first, second = result.payment_instances["payment-1"], result.payment_instances["payment-2"]
    assert first.assignments[0].partitions == tuple(range(CONFIG.partitions))
    a, b = result.payment_split["payment-1"], result.payment_split["payment-2"]
    assert a.generation == b.generation > first.assignments[0].generation
    assert second.assignments[0] == b  # the joiner's first generation is the split
    assert len(a.partitions) == len(b.partitions) == CONFIG.partitions // 2
    assert sorted(a.partitions + b.partitions) == list(range(CONFIG.partitions))
    for p in result.ledgers["Payment"].processed:  # each record from a partition it owned
        if p.instance == "payment-2":
            assert p.partition in b.partitions
    assert any(f"payment-2: generation {b.generation}" in line for line in lines)


def test_analytics_replays_every_order_from_the_beginning(
    story: tuple[StoryResult, list[str]],
) -> None:
    result, lines = story
    analytics = result.analytics
    assert Counter(o.order_id for o in analytics.orders) == Counter(
        {o.order_id: 1 for o in result.orders}
    )
    assert sum(analytics.revenue_cents.values()) == sum(o.total_cents for o in result.orders)
    assert any(line.startswith("== 4. Replay") for line in lines)


def test_the_contract_evolves_refuses_a_breaking_change_and_a_malformed_event(
    story: tuple[StoryResult, list[str]],
) -> None:
    result, lines = story
    assert result.schema_versions == [1, 2]
    assert result.refused_change == (
        "a required property `currency` that version 2 does not declare, without a default,"
        " breaks BACKWARD: readers of the new version cannot read version 2's records"
    )
    assert result.refused_event == '/records/0/value/total_cents: "12.50" is not of type "integer"'
    assert any("refused (409)" in line for line in lines)
    assert all(o.order_id != "o-99999" for o in result.orders)
