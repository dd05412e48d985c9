"""Kafka listener throughput with confluent-kafka (librdkafka), beside HTTP from the same run.

    .venv/bin/python -m bench.kafka                 # 3 repeats, a minute or two, loopback only
    .venv/bin/python -m bench.kafka --records 300000 --repeats 5

One `logway serve --kafka-port` (Granian, fsync always, data in a temp dir) per repeat;
records are 100 bytes, keyless, on a 3-partition topic. Figures (records/s):

- kafka produce: a confluent-kafka Producer (acks=all, idempotence on, librdkafka's own
  batching: linger.ms 5, batch.size 1 MB), from the first produce() to the end of flush();
- http batch produce: wrk posting 1,000 x 100 B JSON records per request over 4
  connections (bench.http's batch section), for the same number of seconds;
- kafka fetch: a confluent-kafka Consumer assigned all partitions from the start, until it
  has every record; "first" converts each stored batch to a Kafka batch, "again" is a
  second consumer served from the conversion cache;
- http pull: GET .../records?max_records=1000 over each partition, one client.

The producer and the consumers run in this process (their librdkafka threads compete with
the gateway for the 2 cores, as wrk does); the gateway is its own process.

CPU cost per record, repeatable on a noisy machine, as instruction counts:

    valgrind --tool=callgrind .venv/bin/python -m bench.kafka cpu kafka-produce 5   # minus 0
    (kafka-produce, http-produce, kafka-fetch, http-fetch)

runs LOOPS conversions of 1,000 x 100 B records: a Kafka batch decoded for the log against
an HTTP JSON body parsed; a stored batch converted to a Kafka batch against the same
records rendered as HTTP JSON. (total(LOOPS) - total(0)) / (LOOPS x 1000) is the cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from bench.bodies import BATCH_BODY
from bench.http import TOPIC, _free_port, gateway, wrk
from gateway.kafka.records import decode_produced, encode_batch
from gateway.produce.parse import Limits, parse_json_body
from gateway.streams.render import render_records
from storage import codec
from tests.gateway.kafka.batches import produced_batch

PARTITIONS = 3
VALUE = b"x" * 100


@dataclass
class Run:
    kafka_produce: float
    http_batch: float
    kafka_fetch_first: float
    kafka_fetch_again: float
    http_pull: float


def kafka_produce(bootstrap: str, records: int) -> float:
    failures: list[KafkaError] = []

    def report(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error)

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5})  # fmt: skip
    started = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(TOPIC, VALUE, on_delivery=report)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.001)
        producer.poll(0)
    if producer.flush(120) or failures:
        raise RuntimeError(f"undelivered records: {failures[:3]}")
    return records / (time.perf_counter() - started)


def kafka_fetch(bootstrap: str, records: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                         "enable.auto.commit": False, "fetch.max.bytes": 52_428_800})  # fmt: skip
    consumer.assign([KafkaPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    seen = 0
    started = time.perf_counter()
    deadline = started + 120
    while seen < records and time.perf_counter() < deadline:
        for message in consumer.consume(10_000, 1.0):
            if message.error() is None:
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    if seen < records:
        raise RuntimeError(f"fetched {seen} of {records}")
    return records / elapsed


def http_pull(url: str) -> float:
    count = 0
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        for p in range(PARTITIONS):
            offset = 0
            while True:
                page = client.get(
                    f"/v1/topics/{TOPIC}/partitions/{p}/records",
                    params={"offset": offset, "max_records": 1000},
                ).json()
                count += len(page["records"])
                offset = page["next_offset"]
                if offset >= page["end_offset"]:
                    break
    return count / (time.perf_counter() - started)


def one_run(records: int, workdir: Path, index: int) -> Run:
    kafka_port = _free_port()
    data_dir = workdir / f"data-{index}"
    with gateway("granian", data_dir, "--kafka-port", str(kafka_port)) as server:
        bootstrap = f"127.0.0.1:{kafka_port}"
        produce_rate = kafka_produce(bootstrap, records)
        first = kafka_fetch(bootstrap, records)
        again = kafka_fetch(bootstrap, records)
        seconds = max(3, round(records / produce_rate))
        body = workdir / "batch.json"
        body.write_bytes(BATCH_BODY)
        batch = wrk(f"{server.url}/v1/topics/{TOPIC}/records", body, 4, seconds, workdir)
        pull = http_pull(server.url)
    return Run(produce_rate, batch.requests_per_s * 1000, first, again, pull)


def _range(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


CPU_WORK = ("kafka-produce", "http-produce", "kafka-fetch", "http-fetch")


def cpu(what: str, loops: int) -> None:
    """`loops` conversions of 1,000 records, for callgrind (see the module docstring)."""
    kafka = produced_batch([(None, VALUE, [])] * 1000, producer_id=1, producer_epoch=0,
                           base_sequence=0)  # fmt: skip
    stored = codec.encode_batch(0, 1, decode_produced(kafka, 1 << 24).records)
    header = codec.read_header(stored, 0)
    assert header is not None
    limits = Limits(max_record_bytes=1 << 20, max_records=100_000)
    for _ in range(loops):
        if what == "kafka-produce":
            decode_produced(kafka, 1 << 24)
        elif what == "http-produce":
            parse_json_body(BATCH_BODY, limits)
        elif what == "kafka-fetch":
            encode_batch(0, 1, codec.decode_batch(stored, header))
        else:
            render_records(TOPIC, 0, codec.decode_batch(stored, header))


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["cpu"]:
        cpu(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="bench.kafka", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        for i in range(args.repeats):
            run = one_run(args.records, Path(tmp), i)
            runs.append(run)
            print(
                f"run {i + 1}: kafka produce {run.kafka_produce:,.0f}/s, http batch "
                f"{run.http_batch:,.0f}/s (ratio {run.kafka_produce / run.http_batch:.2f}); "
                f"kafka fetch {run.kafka_fetch_first:,.0f}/s, again {run.kafka_fetch_again:,.0f}/s, "
                f"http pull {run.http_pull:,.0f}/s (ratio {run.kafka_fetch_first / run.http_pull:.2f})",
                flush=True,
            )
    print(f"\n{args.records:,} records of 100 B, {args.repeats} runs (min-max, records/s):")
    rows = [
        ("kafka produce (confluent-kafka, idempotent)", [r.kafka_produce for r in runs]),
        ("http batch produce (1,000 per request)", [r.http_batch for r in runs]),
        ("kafka produce / http batch", [r.kafka_produce / r.http_batch for r in runs]),
        ("kafka fetch, first reader", [r.kafka_fetch_first for r in runs]),
        ("kafka fetch, second reader (cached)", [r.kafka_fetch_again for r in runs]),
        ("http pull (1,000 per request)", [r.http_pull for r in runs]),
        ("kafka fetch first / http pull", [r.kafka_fetch_first / r.http_pull for r in runs]),
    ]
    for name, values in rows:
        shown = f"{min(values):.2f}-{max(values):.2f}" if max(values) < 20 else _range(values)
        print(f"  {name:<46} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
