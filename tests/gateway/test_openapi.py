"""openapi/openapi.yaml against the code: the problem catalog, the routes, and /openapi.json."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.http.problems import CATALOG
from gateway.routes.ops import openapi_document
from tests.gateway.conftest import check_response


def test_problem_catalog_matches_the_spec_both_ways() -> None:
    spec = openapi_document()
    in_code = {(t.uri, t.status, t.title) for t in CATALOG.values()}
    listed = {(t["type"], t["status"], t["title"]) for t in spec["components"]["x-problem-types"]}
    assert listed == in_code
    enum = spec["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    assert sorted(enum) == sorted(t.uri for t in CATALOG.values())
    assert len(enum) == len(set(enum))


def test_routes_match_the_spec_both_ways(app: Starlette) -> None:
    in_app: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                in_app.add((route.path.replace("{partition}", "{partition}"), method.lower()))
    spec = openapi_document()
    in_spec = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert in_app == in_spec


def test_every_problem_response_documents_the_problem_schema() -> None:
    spec = openapi_document()
    for name, response in spec["components"]["responses"].items():
        schema = response["content"]["application/problem+json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}, name
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status in operation["responses"]:
                assert status.isdigit(), (path, method, status)


async def test_openapi_json_serves_the_yaml(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = check_response(response, "/openapi.json")
    assert doc["openapi"].startswith("3.1")
    assert doc["paths"] == openapi_document()["paths"]
    assert doc["servers"] == [{"url": "/"}]


async def test_served_servers_follow_the_root_path(app: Starlette) -> None:
    transport = httpx.ASGITransport(app, root_path="/logway")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/logway/openapi.json")
    assert response.status_code == 200
    assert response.json()["servers"] == [{"url": "/logway"}]
