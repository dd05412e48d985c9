"""The at-least-once soak, short: `bench/soak.py` for 45 s against a real `logway serve`.

Four groups read while producers write with idempotent retries: two with the Python
client's defaults, two raw (SSE and NDJSON) with commit=auto that reconnect with their
cursor. Members reconnect every 5-10 s, a consumer process is killed with SIGKILL every 5 s
(raw readers and Python ones in turn), and the gateway restarts twice. Every acknowledged
record must reach every group, and no record may be delivered again that a member had
processed well before it stopped reading the partition: the design bounds this
redelivery window by about one commit interval (1-1.25 s); the limit checked is 3 s, so
that a lost bound fails, not a slow machine. The raw readers process each record 0.5 s
after it arrived, half a commit interval, as a pipeline behind a socket does.

(Before commit=auto waited for proof of receipt, the raw groups lost the records in that
pipeline at each kill, and the Python client never committed by default, so every new
member read the group's whole history again.)
"""

from __future__ import annotations

import pytest

from bench import soak

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("memory")]


async def test_every_acknowledged_record_arrives_and_redeliveries_stay_bounded() -> None:
    args = soak.main_parser().parse_args(
        [
            "--minutes", "0.75", "--rate", "600", "--partitions", "4", "--members", "2",
            "--reconnect-s", "5", "10", "--kill-every-s", "5", "--restarts", "2",
            "--lag-ms", "500", "--max-window-s", "3",
        ]
    )  # fmt: skip
    result = await soak.run(args)
    soak.print_summary(result, args)
    assert result.acknowledged > 1_000  # enough to cross every kill and restart, even under load
    assert len(result.kills) >= 8
    assert len(result.restarts) == 2
    missing = {g.group: g.missing for g in result.groups}
    assert not any(missing.values()), f"acknowledged records missing: {missing}"
    widest = {g.group: round(max(g.windows_s, default=0.0), 2) for g in result.groups}
    assert max(widest.values()) <= args.max_window_s, (
        f"redelivered records their member had processed this long (s) before it stopped"
        f" reading the partition: {widest}"
    )
