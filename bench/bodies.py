"""The request bodies the benchmarks send (bench/http.py over HTTP, bench/instructions.py
in-process), in a module of their own so that counting instructions imports no server."""

from __future__ import annotations

from typing import Any

import orjson

SINGLE_BODY = orjson.dumps(
    {"records": [{"key": "order-1", "value": {"id": 1, "sku": "widget", "price": 9.99}}]}
)
BATCH_BODY = orjson.dumps({"records": [{"value": "x" * 98} for _ in range(1000)]})  # 100 B each
# The schema section: an order of 10 properties (~190 bytes), and its schema.
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "customer_id": {"type": "string"},
        "amount": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "quantity": {"type": "integer", "minimum": 1},
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
        "paid": {"type": "boolean"},
        "created_at": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "note": {"type": ["string", "null"]},
    },
    "required": ["order_id", "customer_id", "amount", "currency", "quantity"],
    "additionalProperties": False,
}
SLOW_ORDER_SCHEMA = {
    **ORDER_SCHEMA,
    "properties": {
        **ORDER_SCHEMA["properties"],
        "created_at": {"type": "string", "format": "date-time"},
    },
}
ORDERS_BODY = orjson.dumps(
    {
        "records": [
            {
                "value": {
                    "order_id": f"o-{i}",
                    "customer_id": f"c-{i % 97}",
                    "amount": 12.5 + i,
                    "currency": "EUR",
                    "quantity": 1 + i % 5,
                    "sku": f"ABC-{i}",
                    "paid": i % 2 == 0,
                    "created_at": "2026-05-01T10:00:00Z",
                    "tags": ["gift"],
                    "note": None,
                }
            }
            for i in range(1000)
        ]
    }
)
