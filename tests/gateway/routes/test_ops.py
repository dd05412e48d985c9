"""Operations: health, readiness, problems for unknown routes and methods, and the lifespan
that opens and closes the embedded backend itself."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette

from gateway.app import begin_shutdown, create_app
from gateway.settings import Settings
from storage.embedded import EmbeddedBackend
from tests.gateway.conftest import check_response, problem_type, serve_app


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert check_response(await client.get("/healthz"), "/healthz") == {"status": "ok"}
    assert check_response(await client.get("/readyz"), "/readyz") == {"status": "ready"}


async def test_not_ready_when_storage_is_closed(
    client: httpx.AsyncClient, backend: EmbeddedBackend
) -> None:
    await backend.close()
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert problem_type(response) == "storage-unavailable"
    assert response.headers["retry-after"] == "1"
    check_response(response, "/readyz")
    assert (await client.get("/healthz")).status_code == 200


async def test_not_ready_while_shutting_down(app: Starlette, client: httpx.AsyncClient) -> None:
    begin_shutdown(app)
    begin_shutdown(app)  # idempotent
    response = await client.get("/readyz")
    assert problem_type(response) == "shutting-down"


async def test_unknown_routes_and_methods_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v2/nothing")
    assert missing.status_code == 404
    assert problem_type(missing) == "not-found"
    wrong = await client.post("/v1/topics/t")
    assert wrong.status_code == 405
    assert problem_type(wrong) == "method-not-allowed"
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {
        "GET",
        "HEAD",
        "PUT",
        "DELETE",
    }


async def test_lifespan_opens_and_closes_its_own_backend(settings: Settings) -> None:
    """Without a backend passed in, the app opens the embedded one at startup and closes it
    (flushing) at shutdown; a second app on the same directory reads what the first wrote."""
    data_settings = Settings(
        data_dir=settings.data_dir.parent / "own", durability=settings.durability
    )
    for round_ in range(2):
        url, stop, task = await serve_app(create_app(data_settings))
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                if round_ == 0:
                    assert (
                        await client.put("/v1/topics/t", json={"partitions": 1})
                    ).status_code == 201
                    body = {"records": [{"value": "kept"}]}
                    assert (await client.post("/v1/topics/t/records", json=body)).status_code == 200
                else:
                    pulled = (await client.get("/v1/topics/t/partitions/0/records")).json()
                    assert [r["value"] for r in pulled["records"]] == ["kept"]
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
