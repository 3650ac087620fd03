"""The OpenAPI description: valid OpenAPI 3, documents every route, and a bounded
property-based run (schemathesis) over it finds no server error.

The fuzz run gets its own server: it creates, drains and deletes random spaces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from http_support import Gateway, start_gateway
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

CONTRACT_ROUTES = {
    ("post", "/v1/spaces"), ("get", "/v1/spaces"), ("get", "/v1/spaces/{space}"), ("delete", "/v1/spaces/{space}"),
    ("post", "/v1/spaces/{space}/drain"), ("post", "/v1/spaces/{space}/hibernate"),
    ("post", "/v1/spaces/{space}/restart"), ("post", "/v1/spaces/{space}/memories"),
    ("post", "/v1/spaces/{space}/memories:batch"), ("get", "/v1/spaces/{space}/memories/{memory_id}"),
    ("delete", "/v1/spaces/{space}/memories/{memory_id}"), ("get", "/v1/spaces/{space}/memories"),
    ("post", "/v1/spaces/{space}/links"), ("post", "/v1/spaces/{space}/recall"),
    ("get", "/v1/spaces/{space}/events"), ("get", "/v1/spaces/{space}/export"), ("post", "/v1/spaces/{space}/import"),
    ("post", "/v1/memories"), ("post", "/v1/recall"), ("get", "/v1/memories/{memory_id}"),
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/v1/status"),
}


def test_openapi_is_valid_and_complete(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    validate(spec)   # raises on an invalid document
    assert spec["openapi"].startswith("3.")
    routes = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert CONTRACT_ROUTES <= routes, CONTRACT_ROUTES - routes
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (method, path)   # validation errors are 400 here
    remember = spec["paths"]["/v1/spaces/{space}/memories"]["post"]
    assert remember["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RememberIn")
    assert {"400", "404", "413", "429", "503"} <= set(remember["responses"])
    schemas = spec["components"]["schemas"]
    assert {"content", "embedding", "id", "confidence", "tags", "metadata", "links"} <= set(
        schemas["RememberIn"]["properties"])
    assert set(schemas["ErrorEnvelope"]["properties"]) == {"error"}
    headers = {p["name"] for p in remember.get("parameters", []) if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    compat = spec["paths"]["/v1/memories"]["post"]
    assert {("header", "X-Memory-Space"), ("query", "space")} <= {(p["in"], p["name"]) for p in compat["parameters"]}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("fuzz") / "data", MEMSPACE_MAX_ACTIVE_WORKERS="4")


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Gateway) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: object, value: object) -> bytes:
    """Import bodies: the generated value as text (mostly not valid NDJSON, which is the point)."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode() + b"\n"


# The change feed never ends by itself, so it is left out of the fuzz run (covered in test_http_sse).
@schema.exclude(path_regex=r"/events$").parametrize()
@settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzz_finds_no_server_error(case: schemathesis.Case) -> None:
    response = case.call(timeout=30)
    assert response.status_code < 500, \
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"]["code"], str), body
