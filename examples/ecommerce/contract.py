"""The `orders` topic's contract: the JSON Schema of `OrderCreated`, and how it evolves.

v1 is what the Order service writes today, with a closed content model
(`additionalProperties: false`): under Confluent's rules that is what lets a later version
add an optional property and stay BACKWARD compatible (with an open model, old records
might already hold anything under the new name). v2 adds an optional `coupon`. A change
that makes `currency` required would break every consumer reading old orders, so the
gateway refuses it and says why.
"""

from __future__ import annotations

from typing import Any

ORDER_CREATED_V1: dict[str, Any] = {
    "title": "OrderCreated",
    "type": "object",
    "properties": {
        "type": {"const": "OrderCreated"},
        "order_id": {"type": "string", "pattern": "^o-[0-9]+$"},
        "customer_id": {"type": "string", "minLength": 1},
        "seq": {"type": "integer", "minimum": 1},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                },
                "required": ["sku", "quantity"],
                "additionalProperties": False,
            },
        },
        "total_cents": {"type": "integer", "minimum": 0},
    },
    "required": ["type", "order_id", "customer_id", "seq", "items", "total_cents"],
    "additionalProperties": False,
}

ORDER_CREATED_V2: dict[str, Any] = {
    **ORDER_CREATED_V1,
    "properties": {**ORDER_CREATED_V1["properties"], "coupon": {"type": "string"}},
}

BREAKING_CHANGE: dict[str, Any] = {
    **ORDER_CREATED_V2,
    "properties": {
        **ORDER_CREATED_V2["properties"],
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
    },
    "required": [*ORDER_CREATED_V2["required"], "currency"],
}
