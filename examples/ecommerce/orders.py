"""The Order service: `POST /orders` publishes one `OrderCreated` and answers 201 at once.

It used to call Payment, Inventory and Notification in turn and wait for each. Now it
knows only the `orders` topic: the answer comes as soon as the event is durable in the log,
whatever state the other services are in. The record's key is the customer id, so all of a
customer's orders land in one partition and every consumer sees them in the order placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from logway_client import AsyncProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from examples.ecommerce.gateway import free_port

TOPIC = "orders"
EVENT_TYPE = "OrderCreated"


@dataclass(frozen=True, slots=True)
class Order:
    """An `OrderCreated` event as every service reads it."""

    order_id: str
    customer_id: str
    seq: int  # the customer's n-th order, as the Order service accepted them
    items: tuple[tuple[str, int], ...]  # (sku, quantity)
    total_cents: int

    def to_json(self) -> dict[str, Any]:
        return {
            "type": EVENT_TYPE,
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "seq": self.seq,
            "items": [{"sku": sku, "quantity": qty} for sku, qty in self.items],
            "total_cents": self.total_cents,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Order:
        return cls(
            order_id=str(doc["order_id"]),
            customer_id=str(doc["customer_id"]),
            seq=int(doc["seq"]),
            items=tuple((str(i["sku"]), int(i["quantity"])) for i in doc["items"]),
            total_cents=int(doc["total_cents"]),
        )


def order_app(producer: AsyncProducer) -> Starlette:
    """The Order service's HTTP API."""
    numbers = itertools.count(1)
    per_customer: dict[str, int] = {}

    async def create_order(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"detail": "the body is not JSON"}, 400)
        customer_id = body.get("customer_id") if isinstance(body, dict) else None
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(customer_id, str) or not customer_id or not isinstance(items, list):
            return JSONResponse({"detail": "customer_id and items are required"}, 422)
        try:
            parsed = tuple((str(i["sku"]), int(i["quantity"])) for i in items)
            total_cents = int(body.get("total_cents", 0))
        except (KeyError, TypeError, ValueError):
            return JSONResponse({"detail": "items are {sku, quantity}"}, 422)
        # Number and queue the order in one step (no await in between), so the log holds a
        # customer's orders in the order this service accepted them.
        seq = per_customer[customer_id] = per_customer.get(customer_id, 0) + 1
        order = Order(f"o-{next(numbers):05d}", customer_id, seq, parsed, total_cents)
        written = producer.send(
            TOPIC, order.to_json(), key=customer_id, headers={"event-type": EVENT_TYPE}
        )
        metadata = await written  # durable in the log; no downstream service was called
        return JSONResponse(
            {
                "order_id": order.order_id,
                "status": "accepted",
                "partition": metadata.partition,
                "offset": metadata.offset,
            },
            201,
        )

    return Starlette(routes=[Route("/orders", create_order, methods=["POST"])])


@contextlib.asynccontextmanager
async def running_order_service(producer: AsyncProducer) -> AsyncIterator[str]:
    """Serve the Order service on a free loopback port (Hypercorn, in this process); yields
    its URL."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    shutdown = asyncio.Event()
    task = asyncio.create_task(
        serve(order_app(producer), config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
    )
    try:
        await _until_listening(port, task)
        yield f"http://127.0.0.1:{port}"
    finally:
        shutdown.set()
        await task


async def _until_listening(port: int, server: asyncio.Task[None]) -> None:
    for _ in range(200):
        if server.done():
            server.result()  # raises what stopped it
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"the Order service is not listening on port {port}")
