"""aiokafka (a client nobody here wrote) against the in-process listener: one log for both
protocols, and keys on the same partitions."""

from __future__ import annotations

import base64

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

TIMEOUT_MS = 10_000


async def _topic(client: httpx.AsyncClient, name: str, partitions: int) -> None:
    assert (await client.put(f"/v1/topics/{name}", json={"partitions": partitions})).is_success


async def test_aiokafka_produces_what_http_reads_on_the_partitions_http_picks(
    bootstrap: str, client: httpx.AsyncClient
) -> None:
    await _topic(client, "orders", 6)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                compression_type="gzip")  # fmt: skip
    await producer.start()
    try:
        sent = []
        for i in range(20):
            key = f"customer-{i}".encode()
            value = b'{"order": %d}' % i if i % 2 else b"\x00binary"
            sent.append(await producer.send_and_wait("orders", value, key=key,
                                                     headers=[("source", b"kafka")]))  # fmt: skip
    finally:
        await producer.stop()
    for i, metadata in enumerate(sent):
        http = await client.post("/v1/topics/orders/records",
                                 json={"records": [{"key": f"customer-{i}", "value": i}]})  # fmt: skip
        assert http.json()["offsets"][0]["partition"] == metadata.partition  # murmur2 both ways
        page = await client.get(
            f"/v1/topics/orders/partitions/{metadata.partition}/records",
            params={"offset": metadata.offset, "max_records": 1},
        )
        record = page.json()["records"][0]
        assert record["key"] == f"customer-{i}"
        assert record["headers"] == {"source": "kafka"}
        assert record["timestamp"] == metadata.timestamp  # log-append time, reported to the client
        if i % 2:
            assert record["value"] == {"order": i}
        else:
            assert base64.b64decode(record["value_base64"]) == b"\x00binary"


async def test_aiokafka_consumes_what_http_produced(
    bootstrap: str, client: httpx.AsyncClient
) -> None:
    await _topic(client, "events", 1)
    records = [
        {"key": "a", "value": {"n": 1}, "headers": {"h": "1"}},
        {"key": None, "value_base64": base64.b64encode(b"\xffraw").decode()},
        {"key": "c", "value": "text"},
    ]
    written = (await client.post("/v1/topics/events/records", json={"records": records})).json()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        consumer.assign([TopicPartition("events", 0)])
        got = await consumer.getmany(timeout_ms=TIMEOUT_MS, max_records=3)
        fetched = [r for batch in got.values() for r in batch]
        while len(fetched) < 3:
            more = await consumer.getmany(timeout_ms=TIMEOUT_MS)
            assert more, "no more records"
            fetched += [r for batch in more.values() for r in batch]
    finally:
        await consumer.stop()
    assert [(r.offset, r.timestamp, r.timestamp_type) for r in fetched] == [
        (o["offset"], o["timestamp"], 1) for o in written["offsets"]
    ]
    assert [(r.key, r.value, list(r.headers)) for r in fetched] == [
        (b"a", b'{"n":1}', [("h", b"1")]),
        (None, b"\xffraw", []),
        (b"c", b'"text"', []),
    ]
