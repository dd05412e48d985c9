"""The CPU cost of checking records against a topic's schema, in instructions (callgrind),
which repeat on a shared, noisy machine where seconds do not.

    apt-get install -y valgrind
    .venv/bin/python -m bench.schemas              # a few minutes
    .venv/bin/python -m bench.schemas --requests 10
    git archive main | tar -x -C /tmp/main && rm -r /tmp/main/bench
    .venv/bin/python -m bench.schemas --root /tmp/main --sections produce   # another checkout

Two sections, each measured beside its baseline in the same run:

- produce: one 1,000-order batch request (bench.http's ORDERS_BODY, 10 properties each)
  through the gateway's ASGI app in process (embedded backend, fsync never), to a topic
  without a schema, with ORDER_SCHEMA (the msgspec fast path), the same without its
  `pattern`, and with the same schema plus a `format` (no fast path: jsonschema_rs checks
  every value). `--root` runs another checkout's gateway with this bench (as
  bench/instructions.py does), for a before/after in one run. Each variant runs in its own
  process under callgrind twice, with 0 and with N requests; the difference divided by N is
  the instructions per request, startup excluded. The ratio to the no-schema request is
  what a CPU-bound batch producer loses.
- validators: instructions per record of the candidates on the same 1,000 values, beside
  the parse they follow: jsonschema (Python, a cached Draft202012Validator), jsonschema_rs
  (loads + is_valid), and the msgspec type compiled from the schema.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import jsonschema_rs
import msgspec
import orjson

from bench.bodies import ORDER_SCHEMA, ORDERS_BODY, SLOW_ORDER_SCHEMA
from gateway.app import create_app
from gateway.schemas.validation import fast_type
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from storage.types import Durability, DurabilityPolicy

NO_PATTERN_SCHEMA = {
    **ORDER_SCHEMA,
    "properties": {**ORDER_SCHEMA["properties"], "sku": {"type": "string"}},
}
VARIANTS = {
    "plain": None,
    "checked": ORDER_SCHEMA,
    "checked-no-pattern": NO_PATTERN_SCHEMA,
    "checked-slow": SLOW_ORDER_SCHEMA,
}
ROOT = Path(__file__).resolve().parent.parent
VALIDATORS = ("parse", "jsonschema", "jsonschema_rs", "msgspec")


# -- what runs under callgrind ----------------------------------------------------------------


async def _produce(variant: str, requests: int) -> None:

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), durability=DurabilityPolicy(Durability.NEVER))
        backend = await EmbeddedBackend.open(settings.data_dir, settings.durability)
        transport = httpx.ASGITransport(create_app(settings, backend))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await client.put("/v1/topics/bench", json={"partitions": 3})
            schema = VARIANTS[variant]
            if schema is not None:
                (
                    await client.post("/v1/topics/bench/schemas", json={"schema": schema})
                ).raise_for_status()
            headers = {"content-type": "application/json"}
            warm = await client.post(
                "/v1/topics/bench/records", content=ORDERS_BODY, headers=headers
            )
            warm.raise_for_status()
            for _ in range(requests):
                answer = await client.post(
                    "/v1/topics/bench/records", content=ORDERS_BODY, headers=headers
                )
                answer.raise_for_status()
        await backend.close()


def _validator(name: str, rounds: int) -> None:

    values = [orjson.dumps(r["value"]) for r in orjson.loads(ORDERS_BODY)["records"]]
    checker = jsonschema.Draft202012Validator(ORDER_SCHEMA)
    rs = jsonschema_rs.Draft202012Validator(ORDER_SCHEMA)
    decode = msgspec.json.Decoder(fast_type(ORDER_SCHEMA)).decode

    def parse() -> Any:
        return [orjson.dumps(r["value"]) for r in orjson.loads(ORDERS_BODY)["records"]]

    def python() -> Any:
        return all(checker.is_valid(orjson.loads(v)) for v in values)

    def rust() -> Any:
        return all(rs.is_valid(orjson.loads(v)) for v in values)

    def fast() -> Any:
        return [decode(v) for v in values]

    run: Callable[[], Any] = {
        "parse": parse, "jsonschema": python, "jsonschema_rs": rust, "msgspec": fast
    }[name]  # fmt: skip
    run()
    for _ in range(rounds):
        assert run() is not False


# -- the parent: callgrind runs and the report --------------------------------------------------


def _instructions(args: list[str], root: Path = ROOT) -> int:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as out:
        target = os.path.join(out, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={target}", sys.executable,
             "-m", "bench.schemas", *args],
            check=True, capture_output=True, cwd=root, env=env,
        )  # fmt: skip
        summary = re.search(r"^(?:summary|totals): (\d+)", Path(target).read_text(), re.M)
        assert summary is not None
        return int(summary[1])


def _per_run(args: list[str], count: int, root: Path = ROOT) -> float:
    return (_instructions([*args, str(count)], root) - _instructions([*args, "0"], root)) / count


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child-produce"]:
        asyncio.run(_produce(argv[1], int(argv[2])))
        return 0
    if argv[:1] == ["child-validator"]:
        _validator(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.schemas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--sections", default="produce,validators")
    args = parser.parse_args(argv)
    if "produce" in args.sections:
        print(f"produce: instructions per 1,000-order request ({args.root}, startup excluded)")
        per_request = {
            v: _per_run(["child-produce", v], args.requests, args.root) for v in VARIANTS
        }
        for variant, cost in per_request.items():
            extra = cost / per_request["plain"] - 1
            print(
                f"  {variant:18s} {cost / 1e6:8.1f} M instructions  (+{extra:.1%} over no"
                f" schema; throughput x {per_request['plain'] / cost:.2f} when CPU-bound)",
                flush=True,
            )
    if "validators" not in args.sections:
        return 0
    print("validators: instructions per record on the same values")
    per_record = {v: _per_run(["child-validator", v], args.rounds) / 1000 for v in VALIDATORS}
    for name, cost in per_record.items():
        print(f"  {name:13s} {cost:10,.0f}  ({cost / per_record['parse']:.2f} x the parse)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
