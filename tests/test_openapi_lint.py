"""openapi/openapi.yaml through the tools users point at it: openapi-spec-validator, Redocly
(`recommended` rules) and Spectral (`spectral:oas`), each with no error and no warning.

Where a rule is wrong for us, openapi/redocly.yaml, openapi/.redocly.lint-ignore.yaml and
openapi/.spectral.yaml say so, one reason per line. None of the three looks inside schema
objects for keywords JSON Schema does not have (OpenAPI 3.1 allows any), so a YAML slip like
`{ type: integer, description: Log-append time, ms since the epoch. }`, where the comma ends
the flow mapping's value and adds the key "ms since the epoch." with a null value, passed
them all and was served in /openapi.json; `schema_slips` catches that class.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import OpenAPIV31SpecValidator

from gateway.routes.ops import openapi_document
from gateway.schemas.document import KEYWORDS
from tests.e2e.js_harness import NODE_MODULES, node_modules_or_skip, node_or_skip

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "openapi"
SPEC = SPEC_DIR / "openapi.yaml"
LINT_TIMEOUT_S = 120

# JSON Schema 2020-12's keywords (the list topic schemas are checked against, without the
# older drafts' `definitions`) and the keywords OpenAPI 3.1 adds to it.
SCHEMA_KEYWORDS = (KEYWORDS - {"definitions"}) | {"discriminator", "xml", "externalDocs", "example"}
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")
_SCHEMA_ONES = (
    "items", "contains", "additionalProperties", "propertyNames", "if", "then", "else", "not",
    "unevaluatedItems", "unevaluatedProperties", "contentSchema",
)  # fmt: skip


def _nulls(node: Any, at: str) -> Iterator[str]:
    if node is None:
        yield f"{at}: null"
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _nulls(value, f"{at}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nulls(value, f"{at}/{i}")


def _schema_slips(schema: Any, at: str) -> Iterator[str]:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        yield f"{at}: a schema must be an object or a boolean"
        return
    for key in schema:
        if key not in SCHEMA_KEYWORDS and not key.startswith("x-"):
            yield f"{at}: unknown keyword {key!r}"
    for key in _SCHEMA_MAPS:
        for name, sub in schema.get(key, {}).items():
            yield from _schema_slips(sub, f"{at}/{key}/{name}")
    for key in _SCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key, [])):
            yield from _schema_slips(sub, f"{at}/{key}/{i}")
    for key in _SCHEMA_ONES:
        if key in schema:
            yield from _schema_slips(schema[key], f"{at}/{key}")


def _schemas(node: Any, at: str) -> Iterator[tuple[Any, str]]:
    """Every schema object outside other schemas: parameters', headers' and media types'
    `schema`, and the members of components.schemas."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("x-"):
                continue
            if key == "schema" or at == "#/components/schemas":
                yield value, f"{at}/{key}"
            else:
                yield from _schemas(value, f"{at}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schemas(value, f"{at}/{i}")


def schema_slips(doc: dict[str, Any]) -> list[str]:
    """Null values anywhere, and keywords in schema objects that neither JSON Schema nor
    OpenAPI defines."""
    slips = list(_nulls(doc, "#"))
    for schema, at in _schemas(doc, "#"):
        slips += _schema_slips(schema, at)
    return slips


def test_the_spec_has_no_null_value_and_no_unknown_schema_keyword() -> None:
    assert schema_slips(openapi_document()) == []


@pytest.mark.parametrize(
    "text",
    [
        "{ type: integer, description: Log-append time, ms since the epoch. }",
        "{ type: object, properties: { offset: { type: integer, minimum: 0, maxiumum: 9 } } }",
        "{ oneOf: [{ type: string }, { type: integer, descripton: typo }] }",
    ],
)
def test_schema_slips_catches_flow_mapping_and_keyword_mistakes(text: str) -> None:
    doc = {"components": {"schemas": {"Example": yaml.safe_load(text)}}}
    assert schema_slips(doc)


def test_openapi_spec_validator_accepts_the_spec() -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in OpenAPIV31SpecValidator(openapi_document()).iter_errors()
    ]
    assert errors == []


def _lint_report(package: str, script: str, *args: str) -> Any:
    """Run an npm package's CLI (clients/js devDependencies) on the spec; its JSON report."""
    node_modules_or_skip(package)
    env = {
        **os.environ,
        "REDOCLY_TELEMETRY": "off",
        "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [node_or_skip(), str(NODE_MODULES / package / script), "lint", *args, str(SPEC)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT_S,
        check=False,
    )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{package} printed no JSON report:\n{result.stdout}\n{result.stderr}")


def test_redocly_recommended_rules_find_nothing() -> None:
    config = str(SPEC_DIR / "redocly.yaml")
    report = _lint_report("@redocly/cli", "bin/cli.js", "--config", config, "--format", "json")
    found = [
        f"{p['severity']} {p['ruleId']} at {p['location'][0]['pointer']}: {p['message']}"
        for p in report["problems"]
        if not p.get("ignored")
    ]
    assert (report["totals"]["errors"], report["totals"]["warnings"], found) == (0, 0, [])


def test_spectral_oas_ruleset_finds_nothing() -> None:
    ruleset = str(SPEC_DIR / ".spectral.yaml")
    results = _lint_report(
        "@stoplight/spectral-cli",
        "dist/index.js",
        "--ruleset", ruleset,
        "--format", "json",
        "--quiet",  # the report alone on stdout
    )  # fmt: skip
    found = [f"{r['code']} at {'/'.join(map(str, r['path']))}: {r['message']}" for r in results]
    assert found == []
