"""The e-commerce story: an Order service publishes `OrderCreated` once and returns, and
Payment, Inventory and Notification react on their own, each a consumer group.

- `orders`: the Order service, a small Starlette app (`POST /orders` → 201).
- `services`: the downstream services (group members that commit after processing) and
  Analytics, which replays the topic from the beginning.
- `gateway`: runs a real `logway serve` on a free loopback port with a temporary data dir.
- `story`: places orders and narrates fan-out, load leveling, scale-out and replay;
  `python -m examples.ecommerce` runs it, and tests/e2e/test_ecommerce.py runs it smaller.
"""
