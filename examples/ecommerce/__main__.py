"""`python -m examples.ecommerce`: run the e-commerce story and narrate it (under a minute)."""

from __future__ import annotations

import argparse
import asyncio
import time

from examples.ecommerce.story import StoryConfig, run_story


def main() -> None:
    defaults = StoryConfig()
    parser = argparse.ArgumentParser(prog="python -m examples.ecommerce", description=__doc__)
    parser.add_argument("--customers", type=int, default=defaults.customers)
    parser.add_argument(
        "--orders",
        type=int,
        default=defaults.fanout_orders,
        help="orders per phase (the backlog phase places this many per wave)",
    )
    args = parser.parse_args()  # fmt: skip
    config = StoryConfig(
        customers=args.customers,
        fanout_orders=args.orders,
        orders_per_wave=args.orders // 2,
        scaleout_orders=args.orders,
    )
    started = time.monotonic()
    asyncio.run(run_story(config))
    print(f"(the story took {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
