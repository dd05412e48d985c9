"""The listener with raw frames: what no client library sends (unsupported versions,
malformed requests, duplicates and gaps of an idempotent producer, acks=0), and that
bad input changes nothing in the log."""

from __future__ import annotations

import asyncio
import struct

import httpx
import pytest

from gateway.kafka.dispatch import ApiKey
from gateway.kafka.errors import ErrorCode
from gateway.kafka.server import KafkaListener
from tests.gateway.kafka.batches import Record as KafkaRecord
from tests.gateway.kafka.batches import produced_batch
from tests.gateway.kafka.conftest import RawKafka

WAIT_S = 10.0  # a guard against hanging only


async def _topic(client: httpx.AsyncClient, name: str, partitions: int = 1) -> None:
    response = await client.put(f"/v1/topics/{name}", json={"partitions": partitions})
    assert response.status_code == 201


async def _records(client: httpx.AsyncClient, topic: str, partition: int = 0) -> list[dict]:  # type: ignore[type-arg]
    response = await client.get(f"/v1/topics/{topic}/partitions/{partition}/records?offset=0")
    records: list[dict] = response.json()["records"]  # type: ignore[type-arg]
    return records


def _produce(topic: str, batch: bytes, partition: int = 0, acks: int = -1) -> dict[str, object]:
    return {
        "acks": acks,
        "timeout_ms": 5000,
        "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": batch}]}],
    }


def _partition_answer(answer: dict) -> dict:  # type: ignore[type-arg]
    result: dict = answer["responses"][0]["partition_responses"][0]  # type: ignore[type-arg]
    return result


async def test_api_versions_lists_the_registry_and_answers_newer_clients_at_v0(
    raw: RawKafka,
) -> None:
    answer = await raw.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "raw"})
    served = {a["api_key"]: (a["min_version"], a["max_version"]) for a in answer["api_keys"]}
    assert served[ApiKey.PRODUCE] == (3, 11)
    assert served[ApiKey.FETCH] == (4, 12)
    # a version from the future: the v0 answer with UNSUPPORTED_VERSION and the list
    frame = raw.frame(ApiKey.API_VERSIONS, 0, {})
    await raw.send(frame[:6] + struct.pack(">h", 9) + frame[8:])
    v0 = raw.decode(ApiKey.API_VERSIONS, 0, await raw.read_frame())
    assert v0["error_code"] == ErrorCode.UNSUPPORTED_VERSION
    assert {a["api_key"] for a in v0["api_keys"]} == set(served)


async def test_an_unserved_version_is_unsupported_version_and_the_connection_lives(
    raw: RawKafka, client: httpx.AsyncClient
) -> None:
    await _topic(client, "t")
    answer = await raw.call(ApiKey.PRODUCE, 2, _produce("t", b"whatever"))
    assert _partition_answer(answer)["error_code"] == ErrorCode.UNSUPPORTED_VERSION
    assert await _records(client, "t") == []
    assert (await raw.call(ApiKey.METADATA, 1, {"topics": None}))["brokers"]


async def test_a_malformed_request_is_invalid_request(raw: RawKafka) -> None:
    frame = raw.frame(ApiKey.METADATA, 4, {"topics": [{"name": "x"}]})
    broken = frame[:4] + frame[4:-3]  # cut inside the body, size field kept: re-frame it
    payload = broken[4:]
    await raw.send(struct.pack(">i", len(payload)) + payload)
    answer = raw.decode(ApiKey.METADATA, 4, await raw.read_frame())
    assert answer["topics"] == []  # nothing decoded, so nothing to name
    assert (await raw.call(ApiKey.METADATA, 4, {"topics": None}))["brokers"]


async def test_an_unknown_api_key_closes_the_connection(kafka: KafkaListener) -> None:
    raw = await RawKafka.connect(kafka.port)
    await raw.send(struct.pack(">ihhi", 10, 4242, 0, 1) + b"\x00\x00")
    assert await asyncio.wait_for(raw.reader.read(), WAIT_S) == b""
    await raw.close()


async def test_idempotent_duplicates_are_answered_once_and_gaps_refused(
    raw: RawKafka, client: httpx.AsyncClient
) -> None:
    await _topic(client, "t")
    init = await raw.call(ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": None,
                                                        "transaction_timeout_ms": 1000})  # fmt: skip
    assert init["error_code"] == 0
    assert init["producer_id"] > 0
    pid, epoch = init["producer_id"], init["producer_epoch"]

    def batch(first: int, count: int) -> bytes:
        records: list[KafkaRecord] = [(b"k", f"{first + i}".encode(), []) for i in range(count)]
        return produced_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=first)

    first = _partition_answer(await raw.call(ApiKey.PRODUCE, 9, _produce("t", batch(0, 3))))
    assert (first["error_code"], first["base_offset"]) == (0, 0)
    again = _partition_answer(await raw.call(ApiKey.PRODUCE, 9, _produce("t", batch(0, 3))))
    assert (again["error_code"], again["base_offset"]) == (0, 0)  # the first write's answer
    gap = _partition_answer(await raw.call(ApiKey.PRODUCE, 9, _produce("t", batch(5, 1))))
    assert gap["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    old = produced_batch([(None, b"x", [])], producer_id=pid, producer_epoch=epoch - 1,
                         base_sequence=3)  # fmt: skip
    stale = _partition_answer(await raw.call(ApiKey.PRODUCE, 9, _produce("t", old)))
    assert stale["error_code"] == ErrorCode.INVALID_PRODUCER_EPOCH
    nxt = _partition_answer(await raw.call(ApiKey.PRODUCE, 9, _produce("t", batch(3, 2))))
    assert (nxt["error_code"], nxt["base_offset"]) == (0, 3)
    assert [r["value"] for r in await _records(client, "t")] == [0, 1, 2, 3, 4]


async def test_bad_batches_and_unknown_partitions_write_nothing(
    raw: RawKafka, client: httpx.AsyncClient
) -> None:
    await _topic(client, "t", partitions=2)
    good = produced_batch([(b"k", b"v", [])])
    corrupt = good[:-2] + bytes([good[-2] ^ 0xFF]) + good[-1:]  # a value byte
    answer = await raw.call(ApiKey.PRODUCE, 8, _produce("t", corrupt))
    assert _partition_answer(answer)["error_code"] == ErrorCode.CORRUPT_MESSAGE
    assert _partition_answer(answer)["error_message"]
    missing = await raw.call(ApiKey.PRODUCE, 8, _produce("t", good, partition=5))
    assert _partition_answer(missing)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    nowhere = await raw.call(ApiKey.PRODUCE, 8, _produce("nope", good))
    assert _partition_answer(nowhere)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    acks = await raw.call(ApiKey.PRODUCE, 8, _produce("t", good, acks=2))
    assert _partition_answer(acks)["error_code"] == ErrorCode.INVALID_REQUIRED_ACKS
    assert await _records(client, "t") == []
    assert await _records(client, "t", 1) == []
    assert (await client.get("/v1/topics/nope")).status_code == 404


async def test_acks_zero_gets_no_answer_but_is_written(
    raw: RawKafka, client: httpx.AsyncClient
) -> None:
    await _topic(client, "t")
    await raw.send(
        raw.frame(ApiKey.PRODUCE, 9, _produce("t", produced_batch([(None, b"1", [])]), acks=0))
    )
    # the next request's answer is the next frame on the wire
    answer = await raw.call(ApiKey.METADATA, 9, {"topics": [{"name": "t"}]})
    assert answer["topics"][0]["name"] == "t"
    assert [r["value"] for r in await _records(client, "t")] == [1]


async def test_fetch_long_polls_until_a_write_and_stops_at_max_wait(
    raw: RawKafka, client: httpx.AsyncClient
) -> None:
    await _topic(client, "t")
    request = {
        "max_wait_ms": 30_000,
        "min_bytes": 1,
        "max_bytes": 1 << 20,
        "topics": [{"topic": "t", "partitions": [{"partition": 0, "fetch_offset": 0,
                                                  "partition_max_bytes": 1 << 20}]}],
    }  # fmt: skip
    await raw.send(raw.frame(ApiKey.FETCH, 11, request))
    pending = asyncio.ensure_future(raw.read_frame())
    await asyncio.sleep(0.05)
    assert not pending.done()
    await client.post("/v1/topics/t/records", json={"records": [{"key": "a", "value": {"x": 1}}]})
    answer = raw.decode(ApiKey.FETCH, 11, await asyncio.wait_for(pending, WAIT_S))
    partition = answer["responses"][0]["partitions"][0]
    assert partition["high_watermark"] == 1
    assert len(partition["records"]) > 61
    request["max_wait_ms"] = 10
    request["topics"][0]["partitions"][0]["fetch_offset"] = 1  # type: ignore[index]
    empty = await raw.call(ApiKey.FETCH, 11, request)
    assert len(empty["responses"][0]["partitions"][0]["records"]) == 0
    request["topics"][0]["partitions"][0]["fetch_offset"] = 7  # type: ignore[index]
    beyond = await raw.call(ApiKey.FETCH, 11, request)
    assert beyond["responses"][0]["partitions"][0]["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE


async def test_topics_created_and_deleted_over_kafka_are_the_http_topics(
    raw: RawKafka, client: httpx.AsyncClient
) -> None:
    create = {
        "topics": [
            {"name": "orders", "num_partitions": 4, "replication_factor": -1, "assignments": [],
             "configs": [{"name": "retention.ms", "value": "60000"}]},
            {"name": "bad name", "num_partitions": 1, "replication_factor": 1, "assignments": [],
             "configs": []},
            {"name": "replicated", "num_partitions": 1, "replication_factor": 3,
             "assignments": [], "configs": []},
            {"name": "odd", "num_partitions": 1, "replication_factor": 1, "assignments": [],
             "configs": [{"name": "cleanup.policy", "value": "compact"}]},
        ],
        "timeout_ms": 1000,
    }  # fmt: skip
    answer = await raw.call(ApiKey.CREATE_TOPICS, 7, create)
    codes = [t["error_code"] for t in answer["topics"]]
    assert codes == [0, ErrorCode.INVALID_TOPIC_EXCEPTION, ErrorCode.INVALID_REPLICATION_FACTOR,
                     ErrorCode.INVALID_CONFIG]  # fmt: skip
    described = (await client.get("/v1/topics/orders")).json()
    assert len(described["partitions"]) == 4
    assert described["config"]["retention.ms"] == 60000
    assert (await client.get("/v1/topics/odd")).status_code == 404
    again = await raw.call(ApiKey.CREATE_TOPICS, 7, {"topics": create["topics"][:1]})  # type: ignore[index]
    assert again["topics"][0]["error_code"] == ErrorCode.TOPIC_ALREADY_EXISTS
    deleted = await raw.call(ApiKey.DELETE_TOPICS, 5, {"topic_names": ["orders", "nope"]})
    assert [r["error_code"] for r in deleted["responses"]] == [
        0,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ]
    assert (await client.get("/v1/topics/orders")).status_code == 404


async def test_list_offsets_by_time(raw: RawKafka, client: httpx.AsyncClient) -> None:
    await _topic(client, "t")
    first = (await client.post("/v1/topics/t/records", json={"records": [{"value": 1}]})).json()
    await asyncio.sleep(0.005)
    second = (await client.post("/v1/topics/t/records", json={"records": [{"value": 2}]})).json()
    t1, t2 = first["offsets"][0]["timestamp"], second["offsets"][0]["timestamp"]

    async def offset(timestamp: int) -> tuple[int, int]:
        answer = await raw.call(ApiKey.LIST_OFFSETS, 7, {
            "replica_id": -1,
            "topics": [{"name": "t", "partitions": [{"partition_index": 0, "timestamp": timestamp}]}],
        })  # fmt: skip
        found = answer["topics"][0]["partitions"][0]
        return found["offset"], found["timestamp"]

    assert await offset(-2) == (0, -1)
    assert await offset(-1) == (2, -1)
    assert await offset(-3) == (1, t2)
    assert await offset(t1) == (0, t1)
    assert await offset(t1 + 1) == (1, t2)
    assert await offset(t2 + 1) == (-1, -1)


@pytest.mark.parametrize("version", [1, 4, 9, 12])
async def test_metadata_auto_creates_only_when_the_server_does(
    raw: RawKafka, client: httpx.AsyncClient, version: int
) -> None:
    answer = await raw.call(ApiKey.METADATA, version, {"topics": [{"name": "fresh"}],
                                                       "allow_auto_topic_creation": True})  # fmt: skip
    assert answer["topics"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert (await client.get("/v1/topics/fresh")).status_code == 404
    assert answer["brokers"][0]["port"] == raw.writer.get_extra_info("peername")[1]


async def test_sasl_is_refused_when_auth_is_off(raw: RawKafka) -> None:
    answer = await raw.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
    assert answer == {"error_code": ErrorCode.UNSUPPORTED_SASL_MECHANISM, "mechanisms": []}


async def test_a_topic_schema_checks_kafka_records_too(
    raw: RawKafka, client: httpx.AsyncClient
) -> None:
    await _topic(client, "t")
    schema = {"type": "object", "required": ["amount"], "properties": {"amount": {"minimum": 0}}}
    assert (await client.post("/v1/topics/t/schemas", json={"schema": schema})).is_success
    bad = produced_batch([(None, b'{"amount": 1}', []), (None, b'{"amount": -5}', [])])
    answer = _partition_answer(await raw.call(ApiKey.PRODUCE, 9, _produce("t", bad)))
    assert answer["error_code"] == ErrorCode.INVALID_RECORD
    assert answer["error_message"].startswith("/records/1/value/amount")
    binary = produced_batch([(None, b"\x00avro", [])])
    answer = _partition_answer(await raw.call(ApiKey.PRODUCE, 9, _produce("t", binary)))
    assert answer["error_code"] == ErrorCode.INVALID_RECORD
    assert await _records(client, "t") == []
    good = produced_batch([(None, b'{"amount": 2}', [])])
    answer = _partition_answer(await raw.call(ApiKey.PRODUCE, 9, _produce("t", good)))
    assert answer["error_code"] == 0
    [record] = await _records(client, "t")
    assert record["value"] == {"amount": 2}
    assert record["headers"] == {"logway-schema-version": "1"}
