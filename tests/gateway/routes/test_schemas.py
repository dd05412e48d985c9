"""A topic's schemas over the API: register, evolve under the compatibility rule, read,
delete the newest; records checked on produce (422 with pointers, nothing written) and
stamped with the version; every bad input a problem that changes nothing; who may do what."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from storage.types import TopicConfig
from tests.gateway.conftest import (
    BASE_URL,
    check_response,
    end_offsets,
    problem_type,
    with_settings,
)

SCHEMAS = "/v1/topics/{topic}/schemas"
VERSION = "/v1/topics/{topic}/schemas/{version}"
COMPATIBILITY = "/v1/topics/{topic}/schemas/compatibility"
RECORDS = "/v1/topics/{topic}/records"

V1: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "amount": {"type": "number", "minimum": 0},
    },
    "required": ["order_id", "amount"],
    "additionalProperties": False,
}
V2: dict[str, Any] = {
    **V1,
    "properties": {**V1["properties"], "coupon": {"type": "string"}},
}  # optional: fine
BREAKING: dict[str, Any] = {
    **V2,
    "properties": {**V2["properties"], "currency": {"type": "string"}},
    "required": ["order_id", "amount", "currency"],
}


async def _topic(client: httpx.AsyncClient, name: str = "orders", partitions: int = 1) -> None:
    assert (
        await client.put(f"/v1/topics/{name}", json={"partitions": partitions})
    ).status_code == 201


async def _versions(client: httpx.AsyncClient, topic: str = "orders") -> list[int]:
    listed = await client.get(f"/v1/topics/{topic}/schemas")
    body = check_response(listed, SCHEMAS)
    return [v["version"] for v in body["versions"]]


async def test_register_evolve_and_refuse_a_breaking_change(client: httpx.AsyncClient) -> None:
    await _topic(client)
    first = await client.post("/v1/topics/orders/schemas", json={"schema": V1})
    assert first.status_code == 201
    assert first.headers["location"] == "/v1/topics/orders/schemas/1"
    assert check_response(first, SCHEMAS)["version"] == 1
    again = await client.post("/v1/topics/orders/schemas", json={"schema": V1})
    assert (again.status_code, again.json()["version"]) == (200, 1)

    second = await client.post("/v1/topics/orders/schemas", json={"schema": V2})
    assert (second.status_code, second.json()["version"]) == (201, 2)

    refused = await client.post("/v1/topics/orders/schemas", json={"schema": BREAKING})
    assert problem_type(refused) == "incompatible-schema"
    body = check_response(refused, SCHEMAS)
    assert body["detail"] == (
        "a required property `currency` that version 2 does not declare, without a default,"
        " breaks BACKWARD: readers of the new version cannot read version 2's records"
    )
    assert body["compatibility"] == "BACKWARD"
    assert body["incompatibilities"] == [
        {
            "rule": "BACKWARD",
            "reader_version": None,
            "writer_version": 2,
            "change": "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
            "location": "/schema/properties/currency",
            "detail": body["detail"],
        }
    ]
    assert await _versions(client) == [1, 2]

    described = check_response(await client.get("/v1/topics/orders"), "/v1/topics/{topic}")
    assert (described["schema_version"], described["compatibility"]) == (2, "BACKWARD")
    latest = check_response(await client.get("/v1/topics/orders/schemas/latest"), VERSION)
    assert (latest["version"], latest["schema"]) == (2, V2)
    assert list(latest["schema"]["properties"]) == ["order_id", "amount", "coupon"]  # as written
    one = check_response(await client.get("/v1/topics/orders/schemas/1"), VERSION)
    assert (one["topic"], one["schema"]) == ("orders", V1)


async def test_the_rule_is_per_topic_and_applies_from_then_on(client: httpx.AsyncClient) -> None:
    await _topic(client)
    got = await client.get("/v1/topics/orders/schemas/compatibility")
    assert check_response(got, COMPATIBILITY) == {"topic": "orders", "compatibility": "BACKWARD"}
    assert (await client.post("/v1/topics/orders/schemas", json={"schema": V1})).status_code == 201
    put = await client.put(
        "/v1/topics/orders/schemas/compatibility", json={"compatibility": "FULL"}
    )
    assert check_response(put, COMPATIBILITY)["compatibility"] == "FULL"
    # adding an optional property to a closed model: BACKWARD yes, FORWARD no
    refused = await client.post("/v1/topics/orders/schemas", json={"schema": V2})
    assert problem_type(refused) == "incompatible-schema"
    assert (
        "breaks FULL: readers of version 1 cannot read the new version's records"
        in refused.json()["detail"]
    )
    none = await client.put(
        "/v1/topics/orders/schemas/compatibility", json={"compatibility": "NONE"}
    )
    assert none.status_code == 200
    anything = {"type": "array"}
    assert (
        await client.post("/v1/topics/orders/schemas", json={"schema": anything})
    ).status_code == 201
    assert await _versions(client) == [1, 2]


@pytest.mark.parametrize(
    ("body", "slug", "pointer"),
    [
        ({"schema": {"type": "object", "requried": ["a"]}}, "invalid-schema", "/schema/requried"),
        ({"schema": {"type": "strin"}}, "invalid-schema", "/schema/type"),
        (
            {"schema": {"properties": {"a": {"minLength": -1}}}},
            "invalid-schema",
            "/schema/properties/a/minLength",
        ),
        (
            {"schema": {"$schema": "http://json-schema.org/draft-07/schema#"}},
            "invalid-schema",
            "/schema/$schema",
        ),
        ({"schema": {"$ref": "https://example.com/order.json"}}, "invalid-schema", "/schema"),
        ({"schema": {"$ref": "#/$defs/missing"}}, "invalid-schema", "/schema"),
        ({"schema": {"type": "string", "format": "datetime"}}, "invalid-schema", "/schema/format"),
        (
            {"schema": {"type": "string", "pattern": "(unclosed"}},
            "invalid-schema",
            "/schema/pattern",
        ),
        ({"schema": {"dependencies": {}}}, "invalid-schema", "/schema/dependencies"),
        ({"schema": {"type": "object"}, "key_schema": 3}, "invalid-schema", "/key_schema"),
        ({"schema": '{"type": "object"}'}, "validation-error", "/schema"),
        ({"schemaType": "JSON", "schema": {}}, "validation-error", ""),
        ({}, "validation-error", "/schema"),
        ([], "validation-error", ""),
    ],
)
async def test_bad_registrations_are_problems_that_change_nothing(
    client: httpx.AsyncClient, body: Any, slug: str, pointer: str
) -> None:
    await _topic(client)
    assert (await client.post("/v1/topics/orders/schemas", json={"schema": V1})).status_code == 201
    refused = await client.post("/v1/topics/orders/schemas", json=body)
    assert problem_type(refused) == slug, refused.text
    problem = check_response(refused, SCHEMAS)
    assert problem["errors"][0]["pointer"] == pointer
    assert await _versions(client) == [1]


async def test_malformed_bodies_and_unknown_names(client: httpx.AsyncClient) -> None:
    await _topic(client)
    headers = {"content-type": "application/json"}
    for response, slug in [
        (await client.post("/v1/topics/orders/schemas", content=b"{", headers=headers), "bad-json"),
        (
            await client.post(
                "/v1/topics/orders/schemas", content=b"{}", headers={"content-type": "text/plain"}
            ),
            "unsupported-media-type",
        ),
        (
            await client.post(
                "/v1/topics/orders/schemas", content=b" " * (1024 * 1024 + 1), headers=headers
            ),
            "body-too-large",
        ),
        (await client.post("/v1/topics/nope/schemas", json={"schema": V1}), "unknown-topic"),
        (await client.get("/v1/topics/nope/schemas"), "unknown-topic"),
        (await client.get("/v1/topics/orders/schemas/latest"), "unknown-schema-version"),
        (await client.get("/v1/topics/orders/schemas/7"), "unknown-schema-version"),
        (await client.get("/v1/topics/orders/schemas/0"), "unknown-schema-version"),
        (await client.get("/v1/topics/orders/schemas/v1"), "unknown-schema-version"),
        (await client.delete("/v1/topics/orders/schemas/latest"), "unknown-schema-version"),
        (
            await client.put(
                "/v1/topics/orders/schemas/compatibility", json={"compatibility": "full"}
            ),
            "validation-error",
        ),
        (
            await client.put("/v1/topics/orders/schemas/compatibility", json={"level": "FULL"}),
            "validation-error",
        ),
        (
            await client.put(
                "/v1/topics/nope/schemas/compatibility", json={"compatibility": "FULL"}
            ),
            "unknown-topic",
        ),
    ]:
        assert problem_type(response) == slug, response.text
    assert await _versions(client) == []
    got = await client.get("/v1/topics/orders/schemas/compatibility")
    assert got.json()["compatibility"] == "BACKWARD"


async def test_only_the_newest_version_is_deleted_and_numbers_are_not_reused(
    client: httpx.AsyncClient,
) -> None:
    await _topic(client)
    for schema in (V1, V2):
        assert (
            await client.post("/v1/topics/orders/schemas", json={"schema": schema})
        ).status_code == 201
    older = await client.delete("/v1/topics/orders/schemas/1")
    assert problem_type(older) == "schema-version-conflict"
    assert check_response(older, VERSION)["latest_version"] == 2
    deleted = await client.delete("/v1/topics/orders/schemas/2")
    assert deleted.status_code == 204
    assert await _versions(client) == [1]
    assert (await client.get("/v1/topics/orders")).json()["schema_version"] == 1
    again = await client.post("/v1/topics/orders/schemas", json={"schema": V2})
    assert again.json()["version"] == 3
    assert (await client.delete("/v1/topics/orders/schemas/latest")).status_code == 204
    assert (await client.delete("/v1/topics/orders/schemas/latest")).status_code == 204
    assert (await client.get("/v1/topics/orders")).json()["schema_version"] is None
    anything = await client.post("/v1/topics/orders/records", json={"records": [{"value": [1]}]})
    assert anything.status_code == 200


async def test_deleting_the_topic_deletes_its_schemas(client: httpx.AsyncClient) -> None:
    await _topic(client)
    await client.put("/v1/topics/orders/schemas/compatibility", json={"compatibility": "NONE"})
    assert (await client.post("/v1/topics/orders/schemas", json={"schema": V1})).status_code == 201
    assert (await client.delete("/v1/topics/orders")).status_code == 204
    await _topic(client)
    assert await _versions(client) == []
    assert (await client.get("/v1/topics/orders/schemas/compatibility")).json()[
        "compatibility"
    ] == "BACKWARD"
    again = await client.post("/v1/topics/orders/schemas", json={"schema": V2})
    assert again.json()["version"] == 1


# -- produce --------------------------------------------------------------------------------


async def test_a_record_that_breaks_the_schema_fails_the_whole_request(
    client: httpx.AsyncClient,
) -> None:
    await _topic(client, partitions=2)
    assert (await client.post("/v1/topics/orders/schemas", json={"schema": V1})).status_code == 201
    good = {"value": {"order_id": "o-1", "amount": 10}}
    records = [good] * 7 + [
        {"value": {"order_id": "o-8", "amount": "ten"}},
        {"value": {"amount": -1, "extra": True}},
    ]
    refused = await client.post("/v1/topics/orders/records", json={"records": records})
    assert problem_type(refused) == "schema-violation"
    body = check_response(refused, RECORDS)
    assert body["schema_version"] == 1
    assert body["detail"].startswith(
        '/records/7/value/amount: "ten" is not of type "number" (keyword `type` of schema version 1)'
    )
    assert [(e["pointer"], e["keyword"], e["schema_pointer"]) for e in body["errors"]] == [
        ("/records/7/value/amount", "type", "/properties/amount/type"),
        ("/records/8/value/order_id", "required", "/required"),
        ("/records/8/value/amount", "minimum", "/properties/amount/minimum"),
        ("/records/8/value/extra", "additionalProperties", "/additionalProperties"),
    ]
    assert await end_offsets(client, "orders") == [0, 0]

    ndjson = (
        b'{"value": {"order_id": "a", "amount": 1}}\n\n{"value": {"order_id": "", "amount": 1}}\n'
    )
    lines = await client.post(
        "/v1/topics/orders/records",
        content=ndjson,
        headers={"content-type": "application/x-ndjson"},
    )
    assert problem_type(lines) == "schema-violation"
    assert [e["pointer"] for e in lines.json()["errors"]] == ["/1/value/order_id"]

    raw = await client.post(
        "/v1/topics/orders/records", json={"records": [{"value_base64": "e30="}]}
    )
    assert problem_type(raw) == "schema-violation"
    assert raw.json()["errors"][0]["pointer"] == "/records/0/value_base64"

    forged = {**good, "headers": {"logway-schema-version": "9"}}
    refused = await client.post("/v1/topics/orders/records", json={"records": [forged]})
    assert problem_type(refused) == "validation-error"
    assert refused.json()["errors"][0]["pointer"] == "/records/0/headers/logway-schema-version"
    assert await end_offsets(client, "orders") == [0, 0]


async def test_accepted_records_carry_the_version_they_were_checked_against(
    client: httpx.AsyncClient,
) -> None:
    await _topic(client)
    assert (await client.post("/v1/topics/orders/schemas", json={"schema": V1})).status_code == 201
    first = {"value": {"order_id": "a", "amount": 1}, "headers": {"trace": "t1"}}
    assert (
        await client.post("/v1/topics/orders/records", json={"records": [first]})
    ).status_code == 200
    assert (await client.post("/v1/topics/orders/schemas", json={"schema": V2})).status_code == 201
    second = {"key": "k", "value": {"order_id": "b", "amount": 2.5, "coupon": "X"}}
    assert (
        await client.post("/v1/topics/orders/records", json={"records": [second]})
    ).status_code == 200
    pulled = await client.get("/v1/topics/orders/partitions/0/records")
    records = check_response(pulled, "/v1/topics/{topic}/partitions/{partition}/records")["records"]
    assert [r["headers"] for r in records] == [
        {"trace": "t1", "logway-schema-version": "1"},
        {"logway-schema-version": "2"},
    ]
    assert records[1]["value"] == second["value"]


async def test_key_and_header_schemas(client: httpx.AsyncClient) -> None:
    await _topic(client)
    contract = {
        "schema": True,
        "key_schema": {"type": "string", "pattern": "^order-"},
        "headers_schema": {"type": "object", "required": ["trace"]},
    }
    registered = await client.post("/v1/topics/orders/schemas", json=contract)
    assert check_response(registered, SCHEMAS)["key_schema"] == contract["key_schema"]
    refused = await client.post(
        "/v1/topics/orders/records",
        json={"records": [{"key": "x-1", "value": 1, "headers": {"other": "1"}}, {"value": 2}]},
    )
    assert problem_type(refused) == "schema-violation"
    assert [(e["pointer"], e["keyword"]) for e in refused.json()["errors"]] == [
        ("/records/0/key", "pattern"),
        ("/records/0/headers/trace", "required"),
        ("/records/1/key", "type"),
        ("/records/1/headers/trace", "required"),
    ]
    ok = {"key": "order-1", "value": 1, "headers": {"trace": "t"}}
    assert (
        await client.post("/v1/topics/orders/records", json={"records": [ok]})
    ).status_code == 200


async def test_an_idempotent_retry_replays_after_the_schema_changed(
    client: httpx.AsyncClient,
) -> None:
    await _topic(client)
    await client.put("/v1/topics/orders/schemas/compatibility", json={"compatibility": "NONE"})
    key = {"Idempotency-Key": "order-7"}
    body = {"records": [{"value": {"order_id": "a", "amount": 1}}]}
    first = await client.post("/v1/topics/orders/records", json=body, headers=key)
    assert first.status_code == 200
    assert (
        await client.post("/v1/topics/orders/schemas", json={"schema": {"type": "string"}})
    ).status_code == 201
    replay = await client.post("/v1/topics/orders/records", json=body, headers=key)
    assert (replay.status_code, replay.json()) == (200, first.json())
    fresh = await client.post(
        "/v1/topics/orders/records", json=body, headers={"Idempotency-Key": "order-8"}
    )
    assert problem_type(fresh) == "schema-violation"
    assert await end_offsets(client, "orders") == [1]


# -- who may --------------------------------------------------------------------------------


def _key(name: str) -> str:
    return f"lw_{name}_0123456789"


async def test_reading_needs_consume_or_produce_and_changing_needs_admin(
    settings: Settings, backend: EmbeddedBackend, tmp_path: Path
) -> None:
    grants = {
        "producer": ["produce:topic:orders"],
        "consumer": ["consume:topic:orders"],
        "admin": ["admin:topic:orders"],
        "outsider": ["admin:topic:other", "admin:group:*"],
    }
    keys = tmp_path / "keys.toml"
    keys.write_text(
        "".join(
            f'[keys.{name}]\nsha256 = "{hashlib.sha256(_key(name).encode()).hexdigest()}"\n'
            f"permissions = {permissions!r}\n".replace("'", '"')
            for name, permissions in grants.items()
        )
    )
    app = create_app(with_settings(settings, auth_api_keys_file=keys), backend)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL) as client:

        def as_(name: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {_key(name)}"}

        await backend.create_topic("orders", 1, TopicConfig())
        for name in ("producer", "consumer", "outsider"):
            refused = await client.post(
                "/v1/topics/orders/schemas", json={"schema": V1}, headers=as_(name)
            )
            assert problem_type(refused) == "forbidden", name
        put = await client.put(
            "/v1/topics/orders/schemas/compatibility",
            json={"compatibility": "NONE"},
            headers=as_("consumer"),
        )
        assert problem_type(put) == "forbidden"
        assert await backend.schema_versions("orders") == []
        registered = await client.post(
            "/v1/topics/orders/schemas", json={"schema": V1}, headers=as_("admin")
        )
        assert registered.status_code == 201
        for name in ("producer", "consumer", "admin"):
            for path in (
                "/v1/topics/orders/schemas",
                "/v1/topics/orders/schemas/1",
                "/v1/topics/orders/schemas/compatibility",
            ):
                assert (await client.get(path, headers=as_(name))).status_code == 200, (name, path)
        outsider = await client.get("/v1/topics/orders/schemas", headers=as_("outsider"))
        assert problem_type(outsider) == "forbidden"
        assert outsider.json()["detail"] == "'outsider' may not consume or produce topic 'orders'"
        assert (
            problem_type(
                await client.delete("/v1/topics/orders/schemas/1", headers=as_("producer"))
            )
            == "forbidden"
        )
        assert [v.version for v in await backend.schema_versions("orders")] == [1]
        for name, shown in (("consumer", ["orders"]), ("outsider", [])):
            described = await client.get("/asyncapi.json", headers=as_(name))
            assert (described.status_code, list(described.json()["channels"])) == (200, shown)
