"""The services that react to `OrderCreated`: Payment, Inventory, Notification and Analytics.

Each of Payment, Inventory and Notification is a consumer group (`payments`, `inventory`,
`notifications`), so each gets every order once, however many instances it runs: the
gateway splits the topic's partitions among the group's live instances. An instance
processes a record, then commits the offset after it (`consumer.commit([record])`), and only
then takes the next one. Stopping is clean: an instance finishes and commits the record in
hand, then leaves; what it was sent but had not started is not committed, so the group's
next owner of that partition gets it. That is exactly-once processing for clean stops and
for rebalances at quiet moments. A crash or a rebalance between processing and committing
would deliver a record again (at least once), which a real service makes harmless by keeping
its effects idempotent by order id; `fenced` counts the commits a rebalance refused, the
records that would come again.

Analytics joins later and needs the whole history, not just new orders: it reads the topic
from `from=earliest`, outside any group, and rebuilds its figures from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from logway_client import (
    Assignment,
    AsyncConsumer,
    AsyncLogwayClient,
    FencedGeneration,
    NotPartitionOwner,
    Record,
    UnknownMember,
)

from examples.ecommerce.orders import TOPIC, Order

Narrate = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Processed:
    """One order handled by one instance of a service."""

    instance: str
    order: Order
    partition: int
    offset: int


@dataclass
class Ledger:
    """What a service (all its instances) did, in the order it happened."""

    service: str
    processed: list[Processed] = field(default_factory=list)
    fenced: list[Processed] = field(default_factory=list)  # done, but the commit was refused

    def by_instance(self) -> Counter[str]:
        return Counter(p.instance for p in self.processed)


@dataclass(frozen=True, slots=True)
class ServiceKind:
    """A downstream service: its group, what it does to an order, and how long that takes."""

    name: str
    group: str
    verb: str  # narrated: "charged", "reserved stock for", "emailed"
    work_s: float


PAYMENT = ServiceKind("Payment", "payments", "charged", 0.004)
INVENTORY = ServiceKind("Inventory", "inventory", "reserved stock for", 0.002)
NOTIFICATION = ServiceKind("Notification", "notifications", "emailed", 0.006)


class ServiceInstance:
    """One running instance of a service: a member of the service's consumer group."""

    def __init__(
        self,
        client: AsyncLogwayClient,
        kind: ServiceKind,
        instance: str,
        ledger: Ledger,
        narrate: Narrate,
    ) -> None:
        self.kind = kind
        self.instance = instance
        self.ledger = ledger
        self.narrate = narrate
        self.assignments: list[Assignment] = []
        self.assigned = asyncio.Event()  # set on every new assignment
        self.consumer = AsyncConsumer(
            client,
            TOPIC,
            group=kind.group,
            start="earliest",  # where a partition starts when the group has no commit yet
            commit="manual",
            on_assignment=self._on_assignment,
        )
        self._lock = asyncio.Lock()  # held while a record is processed and committed
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.instance)

    async def stop(self) -> None:
        """Finish the record in hand, then leave the group."""
        async with self._lock:
            self._stopping = True
            await self.consumer.close()
        if self._task is not None:
            await self._task

    async def _on_assignment(self, assignment: Assignment) -> None:
        self.assignments.append(assignment)
        partitions = ", ".join(map(str, assignment.partitions)) or "none"
        self.narrate(
            f"    [assignment] {self.instance}: generation {assignment.generation}, "
            f"partitions {partitions}"
        )
        self.assigned.set()

    async def _run(self) -> None:
        async for record in self.consumer:
            async with self._lock:
                if self._stopping:
                    return  # sent but never started: the group's next owner gets it
                await self._process(record)

    async def _process(self, record: Record) -> None:
        order = Order.from_json(record.value)
        await asyncio.sleep(self.kind.work_s)  # the work: a charge, a reservation, an email
        done = Processed(self.instance, order, record.partition, record.offset)
        try:
            await self.consumer.commit([record])
        except (FencedGeneration, NotPartitionOwner, UnknownMember) as exc:
            self.ledger.fenced.append(done)
            self.narrate(
                f"    [{self.instance}] commit of {order.order_id} refused "
                f"({type(exc).__name__}): it will be delivered again"
            )
        self.ledger.processed.append(done)


@dataclass
class Analytics:
    """Rebuilds revenue per customer from the whole log (no group: it reads everything)."""

    orders: list[Order] = field(default_factory=list)
    revenue_cents: Counter[str] = field(default_factory=Counter)

    async def replay(self, client: AsyncLogwayClient, expected: int, timeout_s: float) -> None:
        """Read from the earliest offset of every partition until `expected` orders are in."""
        consumer = AsyncConsumer(client, TOPIC, start="earliest")
        try:
            async with asyncio.timeout(timeout_s):
                async for record in consumer:
                    order = Order.from_json(record.value)
                    self.orders.append(order)
                    self.revenue_cents[order.customer_id] += order.total_cents
                    if len(self.orders) >= expected:
                        break
        finally:
            with contextlib.suppress(Exception):
                await consumer.close()
