"""CPU cost of the produce parse and the record render as instruction counts (callgrind).

The machine is shared and noisy, so wall-clock micro-benchmarks say little; instructions
counted by valgrind do not depend on what else runs. Each case runs `count` times in a
fresh interpreter and once with 0, and the difference per call is reported; the cyclic GC
is off meanwhile (what a collection costs depends on the whole heap, not on the call), or
as `logway serve` runs it with `--gc served`.
`--root` points at another copy of the code, counted the same way side by side (without
its bench/, which would shadow this one's), e.g. main's:

    git archive main | tar -x -C /tmp/main && rm -r /tmp/main/bench

    .venv/bin/python -m bench.instructions                 # this checkout
    .venv/bin/python -m bench.instructions --root /tmp/main
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.bodies import BATCH_BODY, ORDER_SCHEMA, ORDERS_BODY, SINGLE_BODY

ROOT = Path(__file__).resolve().parent.parent
CASES = (
    "bare-batch", "parse-batch", "parse-single", "render-batch", "parse-orders", "schema-orders",
)  # fmt: skip


def _case(name: str) -> Callable[[], object]:
    """The call to count; imported from whichever checkout is first on sys.path."""
    if name == "bare-batch":  # what bench/baseline_app.py does with a body
        dumps = orjson.dumps
        return lambda: [dumps(r["value"]) for r in orjson.loads(BATCH_BODY)["records"]]
    from gateway.produce.parse import Limits, parse_json_body

    limits = Limits(1024 * 1024, 10_000)
    if name == "parse-batch":
        return lambda: parse_json_body(BATCH_BODY, limits)
    if name == "parse-single":
        return lambda: parse_json_body(SINGLE_BODY, limits)
    if name == "parse-orders":  # 1,000 ten-property orders, no schema
        return lambda: parse_json_body(ORDERS_BODY, limits)
    if name == "schema-orders":  # the same checked against bench/http.py's ORDER_SCHEMA
        from gateway.schemas.document import Contract
        from gateway.schemas.registry import Compiled, enforce
        from storage.types import SchemaVersion

        compiled = Compiled.build(SchemaVersion(1, Contract(ORDER_SCHEMA).encode(), 0))
        return lambda: enforce(
            compiled, "orders", parse_json_body(ORDERS_BODY, limits).records, "/records/"
        )
    from gateway.streams.render import render_records
    from storage.types import Record

    stored = parse_json_body(BATCH_BODY, limits).records
    records = [Record(i, 1764680000000 + i, *r) for i, r in enumerate(stored)]
    return lambda: render_records("bench", 2, records)


def _count(root: Path, case: str, calls: int, gc_mode: str) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "bench.instructions", "run", case, str(calls), gc_mode]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}", "PYTHONHASHSEED": "0"}
    return collected(
        subprocess.run(command, cwd=root, env=env, capture_output=True, text=True).stderr
    )


def collected(output: str) -> int:
    """The instruction count in callgrind's report (its stderr); RuntimeError if none."""
    found = re.search(r"Collected : (\d+)", output)
    if found is None:
        raise RuntimeError(output)
    return int(found[1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        call = _case(argv[1])
        call()  # first-call costs (imports, caches) are the same in both runs
        if argv[3:] == ["served"]:  # the GC as `logway serve` runs it (gateway/process.py)
            from gateway.process import tune_for_serving

            tune_for_serving()
        else:
            gc.disable()  # its collections cost what this process's heap holds, not the call
        for _ in range(int(argv[2])):
            call()
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--gc", choices=("off", "served"), default="off", help="the cyclic GC")
    args = parser.parse_args(argv)
    for case in args.cases.split(","):
        counts = [_count(args.root, case, calls, args.gc) for calls in (args.calls, 0)]
        per_call = (counts[0] - counts[1]) / args.calls
        print(f"{case}: {per_call:,.0f} instructions per call ({args.root})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
