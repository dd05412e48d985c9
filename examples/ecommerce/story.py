"""The story, start to end: a gateway, the Order service, three consumer groups, Analytics.

0. The contract: `OrderCreated` v1 is registered as the topic's JSON Schema, v2 adds an
   optional `coupon` (accepted under BACKWARD), a change that requires `currency` is
   refused with the reason, and an event that breaks the schema never reaches the log.
1. Fan-out: every order reaches Payment, Inventory and Notification, each on its own.
2. Load leveling: Notification is stopped while orders keep coming; its lag (read from
   `GET /v1/groups/notifications`) grows, Payment and Inventory do not notice, and when a
   Notification instance comes back it drains the backlog.
3. Scale-out: a second Payment instance joins; the group rebalances and each instance owns
   half of the partitions (the `assignment` events say which).
4. Replay: Analytics, deployed last, reads the topic from the beginning.

`run_story(config, narrate)` does all of it against a gateway it starts and stops, and
returns what every service did, so tests/e2e/test_ecommerce.py checks the same run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from logway_client import (
    Assignment,
    AsyncLogwayClient,
    AsyncProducer,
    IncompatibleSchema,
    SchemaViolation,
)

from examples.ecommerce.contract import BREAKING_CHANGE, ORDER_CREATED_V1, ORDER_CREATED_V2
from examples.ecommerce.gateway import running_gateway
from examples.ecommerce.orders import TOPIC, Order, running_order_service
from examples.ecommerce.services import (
    INVENTORY,
    NOTIFICATION,
    PAYMENT,
    Analytics,
    Ledger,
    Narrate,
    ServiceInstance,
    ServiceKind,
)

CATALOG = (("mug", 1250), ("t-shirt", 2400), ("sticker", 300), ("hoodie", 5900), ("cap", 1800))


@dataclass(frozen=True, slots=True)
class StoryConfig:
    customers: int = 8
    partitions: int = 6
    fanout_orders: int = 40
    backlog_waves: int = 3
    orders_per_wave: int = 20
    scaleout_orders: int = 40
    guard_s: float = 30.0  # the longest any one step may take before the story gives up
    seed: int = 7


@dataclass
class StoryResult:
    orders: list[Order] = field(default_factory=list)  # as accepted, per customer in order
    ledgers: dict[str, Ledger] = field(default_factory=dict)  # by service name
    analytics: Analytics = field(default_factory=Analytics)
    backlog_lag: list[int] = field(default_factory=list)  # Notification down, after each wave
    drain_lag: list[int] = field(default_factory=list)  # Notification back, until 0
    payment_instances: dict[str, ServiceInstance] = field(default_factory=dict)
    payment_split: dict[str, Assignment] = field(default_factory=dict)  # after payment-2 joined
    order_latency_ms: list[float] = field(default_factory=list)
    schema_versions: list[int] = field(default_factory=list)  # registered, in order
    refused_change: str = ""  # why the breaking change was refused
    refused_event: str = ""  # why the malformed event was refused


async def group_lag(client: AsyncLogwayClient, group: str) -> int:
    """Records of `orders` the group has not committed yet (GET /v1/groups/{group})."""
    described = await client.describe_group(group)
    return sum(
        p.lag if p.lag is not None else p.end_offset
        for p in described.partitions
        if p.topic == TOPIC
    )


async def _until(
    what: str, check: Callable[[], Awaitable[bool]], guard_s: float, poll_s: float = 0.05
) -> None:
    """Poll `check` until it holds; `guard_s` only stops a broken run from hanging."""
    deadline = time.monotonic() + guard_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting until {what} after {guard_s} s")
        await asyncio.sleep(poll_s)


class Shop:
    """The running system: clients, services by name, and the orders placed so far."""

    def __init__(
        self,
        client: AsyncLogwayClient,
        orders_url: str,
        config: StoryConfig,
        result: StoryResult,
        narrate: Narrate,
    ) -> None:
        self.client = client
        self.orders_url = orders_url
        self.config = config
        self.result = result
        self.narrate = narrate
        self.random = random.Random(config.seed)
        self.customers = [f"c-{i:02d}" for i in range(1, config.customers + 1)]
        self.running: dict[str, ServiceInstance] = {}

    def start(self, kind: ServiceKind, instance: str) -> ServiceInstance:
        ledger = self.result.ledgers.setdefault(kind.name, Ledger(kind.name))
        service = ServiceInstance(self.client, kind, instance, ledger, self.narrate)
        self.running[instance] = service
        service.start()
        return service

    async def stop(self, instance: str) -> None:
        await self.running.pop(instance).stop()

    async def place_orders(self, count: int) -> list[Order]:
        """POST `count` orders to the Order service: customers in parallel, each customer's
        orders one after the other (so "in order per customer" has a meaning)."""
        plan: dict[str, list[dict[str, object]]] = {c: [] for c in self.customers}
        for i in range(count):
            customer = self.customers[i % len(self.customers)]
            picks = self.random.sample(CATALOG, k=self.random.randint(1, 3))
            items = [{"sku": sku, "quantity": self.random.randint(1, 3)} for sku, _ in picks]
            total = sum(
                price * int(str(item["quantity"]))
                for (_, price), item in zip(picks, items, strict=True)
            )
            plan[customer].append({"customer_id": customer, "items": items, "total_cents": total})
        placed: list[Order] = []
        async with httpx.AsyncClient(base_url=self.orders_url, timeout=10.0) as http:

            async def customer_session(bodies: list[dict[str, object]]) -> None:
                for body in bodies:
                    started = time.perf_counter()
                    response = await http.post("/orders", json=body)
                    self.result.order_latency_ms.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 201:
                        raise RuntimeError(f"POST /orders: {response.status_code} {response.text}")
                    customer = str(body["customer_id"])
                    seq = 1 + sum(o.customer_id == customer for o in self.result.orders)
                    order = Order.from_json(
                        {**body, "order_id": response.json()["order_id"], "seq": seq}
                    )
                    self.result.orders.append(order)
                    placed.append(order)

            await asyncio.gather(*(customer_session(b) for b in plan.values() if b))
        return placed

    async def lag(self, group: str) -> int:
        return await group_lag(self.client, group)

    async def until_caught_up(self, *groups: str) -> None:
        async def caught_up() -> bool:
            return all([await self.lag(g) == 0 for g in groups])

        await _until(f"{', '.join(groups)} caught up", caught_up, self.config.guard_s)

    def handled(self, service: str) -> int:
        return len(self.result.ledgers[service].processed)


async def run_story(config: StoryConfig, narrate: Narrate = print) -> StoryResult:
    """Run the whole story against a gateway of its own; returns what every service did."""
    result = StoryResult()
    async with running_gateway() as gateway:
        narrate(f"logway gateway running at {gateway.url} (pid {gateway.pid})")
        async with (
            AsyncLogwayClient(gateway.url) as client,
            AsyncProducer(client, linger_ms=2) as producer,
            running_order_service(producer) as orders_url,
        ):
            await client.create_topic(TOPIC, partitions=config.partitions)
            narrate(
                f"topic '{TOPIC}' has {config.partitions} partitions; the Order service "
                f"listens at {orders_url}"
            )
            shop = Shop(client, orders_url, config, result, narrate)
            try:
                await _contract(shop)
                await _fan_out(shop)
                await _load_leveling(shop)
                await _scale_out(shop)
                await _replay(shop)
            finally:
                for instance in list(shop.running):
                    await shop.stop(instance)
            narrate("")
            narrate("All services stopped cleanly; the gateway is stopped next.")
    return result


async def _contract(shop: Shop) -> None:
    narrate, client, result = shop.narrate, shop.client, shop.result
    narrate("")
    narrate("== 0. The contract: OrderCreated has a schema, and it evolves safely ==")
    v1 = await client.register_schema(TOPIC, ORDER_CREATED_V1)
    narrate(
        f"OrderCreated v{v1.version} registered: every record on '{TOPIC}' must match it, "
        "and its content model is closed (additionalProperties: false)."
    )
    v2 = await client.register_schema(TOPIC, ORDER_CREATED_V2)
    narrate(
        f"v{v2.version} adds an optional `coupon`: accepted under BACKWARD, since v2 reads "
        "every v1 order (v1's closed model never wrote a `coupon`)."
    )
    result.schema_versions = [v1.version, v2.version]
    try:
        await client.register_schema(TOPIC, BREAKING_CHANGE)
    except IncompatibleSchema as refused:
        result.refused_change = refused.detail
        narrate(f"A change making `currency` required is refused (409): {refused.detail}.")
        narrate("  Payment, Inventory and Notification keep reading old orders unharmed.")
    # a buggy deploy of the Order service formats money as text
    bad = {
        "type": "OrderCreated",
        "order_id": "o-99999",
        "customer_id": "c-01",
        "seq": 1,
        "items": [{"sku": "mug", "quantity": 1}],
        "total_cents": "12.50",
    }
    try:
        await client.produce(TOPIC, [{"key": "c-01", "value": bad}])
    except SchemaViolation as refused:
        first = refused.extensions["errors"][0]
        result.refused_event = f"{first['pointer']}: {first['detail']}"
        narrate(
            f"A malformed OrderCreated is refused (422) at {first['pointer']} "
            f"(keyword {first['keyword']}); nothing reached the log, no consumer saw it."
        )


async def _fan_out(shop: Shop) -> None:
    narrate, config = shop.narrate, shop.config
    narrate("")
    narrate("== 1. Fan-out: one event, three independent consumers ==")
    narrate(
        "Payment, Inventory and Notification each run as a consumer group "
        "(payments, inventory, notifications) and join the topic:"
    )
    instances = [
        shop.start(PAYMENT, "payment-1"),
        shop.start(INVENTORY, "inventory-1"),
        shop.start(NOTIFICATION, "notification-1"),
    ]
    for service in instances:
        await asyncio.wait_for(service.assigned.wait(), config.guard_s)
    placed = await shop.place_orders(config.fanout_orders)
    latencies = sorted(shop.result.order_latency_ms)
    narrate(
        f"Placed {len(placed)} orders for {config.customers} customers. POST /orders answered "
        f"201 in {latencies[len(latencies) // 2]:.1f} ms (median): the Order service waits for "
        "the log, not for the services."
    )
    await shop.until_caught_up("payments", "inventory", "notifications")
    first = placed[0]
    narrate(
        f"Every service got every order: Payment {shop.handled('Payment')}, "
        f"Inventory {shop.handled('Inventory')}, Notification {shop.handled('Notification')}."
    )
    narrate(
        f"For example {first.order_id} of {first.customer_id}: "
        + "; ".join(
            f"{kind.name} {kind.verb} it"
            for kind in (PAYMENT, INVENTORY, NOTIFICATION)
            if any(p.order == first for p in shop.result.ledgers[kind.name].processed)
        )
        + "."
    )


async def _load_leveling(shop: Shop) -> None:
    narrate, config = shop.narrate, shop.config
    narrate("")
    narrate("== 2. Load leveling: Notification goes down, orders keep coming ==")
    await shop.stop("notification-1")
    narrate("notification-1 stopped (it committed what it had processed and left its group).")
    for wave in range(1, config.backlog_waves + 1):
        await shop.place_orders(config.orders_per_wave)
        await shop.until_caught_up("payments", "inventory")
        lag = await shop.lag("notifications")
        shop.result.backlog_lag.append(lag)
        narrate(
            f"  wave {wave}: {config.orders_per_wave} more orders accepted and processed by "
            f"Payment and Inventory (lag 0); notifications lag = {lag}"
        )
    narrate("The orders wait in the log: no request failed, no other service slowed down.")
    drain = shop.result.drain_lag
    drain.append(await shop.lag("notifications"))
    narrate(
        f"notification-2 starts (notifications lag = {drain[0]}) and resumes from the group's "
        "committed offsets:"
    )
    shop.start(NOTIFICATION, "notification-2")

    async def drained() -> bool:
        lag = await shop.lag("notifications")
        if not drain or lag != drain[-1]:
            drain.append(lag)
            narrate(f"  notifications lag = {lag}")
        return lag == 0

    await _until("notifications drained", drained, config.guard_s, poll_s=0.1)
    narrate(f"Backlog drained: Notification has now emailed {shop.handled('Notification')} orders.")


async def _scale_out(shop: Shop) -> None:
    narrate, config = shop.narrate, shop.config
    narrate("")
    narrate("== 3. Scale-out: a second Payment instance joins ==")
    first = shop.running["payment-1"]
    await shop.until_caught_up("payments")  # a quiet moment: nothing processed and uncommitted
    first.assigned.clear()
    second = shop.start(PAYMENT, "payment-2")
    shop.result.payment_instances = {"payment-1": first, "payment-2": second}

    async def rebalanced() -> bool:
        a, b = first.consumer.assignment, second.consumer.assignment
        return (
            a is not None
            and b is not None
            and a.generation == b.generation
            and sorted(a.partitions + b.partitions) == list(range(config.partitions))
        )

    await _until("the payments group rebalanced", rebalanced, config.guard_s)
    shop.result.payment_split = {
        s.instance: s.consumer.assignment for s in (first, second) if s.consumer.assignment
    }
    before = shop.result.ledgers["Payment"].by_instance()
    await shop.place_orders(config.scaleout_orders)
    await shop.until_caught_up("payments", "inventory", "notifications")
    after = shop.result.ledgers["Payment"].by_instance()
    narrate(
        f"{config.scaleout_orders} more orders: payment-1 handled "
        f"{after['payment-1'] - before['payment-1']}, payment-2 handled "
        f"{after['payment-2'] - before['payment-2']} (each owns its partitions, so each "
        "customer's orders still go through one instance, in order)."
    )


async def _replay(shop: Shop) -> None:
    narrate, config = shop.narrate, shop.config
    narrate("")
    narrate("== 4. Replay: Analytics is deployed and reads the history ==")
    total = len(shop.result.orders)
    analytics = shop.result.analytics
    await analytics.replay(shop.client, total, config.guard_s)
    top, cents = analytics.revenue_cents.most_common(1)[0]
    narrate(
        f"Analytics read all {len(analytics.orders)} orders from offset 0 (from=earliest): "
        f"revenue {sum(analytics.revenue_cents.values()) / 100:.2f}, top customer {top} "
        f"with {cents / 100:.2f}. The Order service was never changed to feed it."
    )
