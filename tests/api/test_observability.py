"""Invocation records, /metrics, OpenAPI and docs, health, and the one error shape."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.support import (
    FIXTURES,
    GCD_WAT,
    assert_error,
    deployed,
    invoke,
    metric_samples,
    metric_value,
    result_of,
    unique,
    unique_module,
)

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}


def _records(client: httpx.Client, name: str, limit: int = 50) -> list[dict]:
    resp = client.get(f"/api/v1/functions/{name}/invocations", params={"limit": limit})
    assert resp.status_code == 200, resp.text
    return resp.json()["invocations"]  # newest first


def test_invocation_records(client: httpx.Client) -> None:
    name, greeter = unique("recorded"), unique("greeter")
    view = deployed(client, name, FIXTURES / "trap.wat", export="divide")
    version = view["active_version"]["digest"]
    deployed(client, greeter, FIXTURES.parent.parent / "examples" / "hello" / "hello.wasm")

    assert result_of(invoke(client, name, [10, 2])) == 5
    assert_error(invoke(client, name, [1, 0]), 500, "guest_trap")
    assert result_of(client.get(f"/fn/{name}?args=9,3")) == 3
    resp = client.post("/function/invoke", json={"function_name": name, "args": [8, 4]})
    assert result_of(resp) == 2
    assert client.get(f"/fn/{greeter}/?name=Ada").text == "Hello, Ada!\n"

    records = _records(client, name)
    assert len(records) == 4
    ok, trapped, gateway, compat = reversed(records)
    for record in records:
        assert record["function"] == name
        assert record["version"] == version
        assert isinstance(record["duration_ms"], int | float) and record["duration_ms"] > 0
        assert record["peak_memory"] > 0
        assert isinstance(record["fuel_used"], int), record
        assert record["started_at"]
    assert (ok["status"], ok["error_code"], ok["via"]) == (200, None, "api")
    assert (trapped["status"], trapped["error_code"]) == (500, "guest_trap")
    assert "divide by zero" in trapped["error_message"]
    assert (gateway["status"], gateway["via"]) == (200, "gateway")
    assert (compat["status"], compat["via"]) == (200, "compat")
    assert ok["fuel_used"] > 0
    assert ok["started_at"] <= trapped["started_at"] <= gateway["started_at"]
    assert [r["id"] for r in records] == sorted((r["id"] for r in records), reverse=True)
    assert len(_records(client, name, limit=2)) == 2

    [greeting] = _records(client, greeter)
    assert greeting["status"] == 200
    assert "hello: greeted Ada" in greeting["logs"]
    assert greeting["instantiated"] is True
    assert greeting["peak_memory"] >= 65536
    assert greeting["fuel_used"] > 0


def test_failed_guest_logs_are_kept(client: httpx.Client) -> None:
    name = unique("exit3")
    deployed(client, name, FIXTURES / "cgi_exit3.wat", abi="wasi-cgi")
    assert_error(client.post(f"/fn/{name}/"), 500, "guest_error", "3")
    [record] = _records(client, name)
    assert (record["status"], record["error_code"]) == (500, "guest_error")
    assert "3" in record["error_message"]


def test_invocation_limit_is_validated(client: httpx.Client) -> None:
    assert_error(client.get("/api/v1/functions/gcd/invocations?limit=0"), 422, "invalid_request")
    assert_error(client.get("/api/v1/functions/gcd/invocations?limit=x"), 422, "invalid_request")


def test_metrics(client: httpx.Client) -> None:
    name = unique("metered")
    # Bytes of its own: functions with equal module and spec share one instance pool.
    deployed(client, name, unique_module(name), export="twice")
    for k in range(1, 4):
        assert result_of(invoke(client, name, [k])) == 2 * k
    assert_error(invoke(client, name, ["x"]), 422, "invalid_request")

    assert metric_value(client, "wasmlet_invocations_total", function=name, status="200") == 3
    assert metric_value(client, "wasmlet_invocations_total", function=name, status="422") == 1
    labels = [s for s, _ in metric_samples(client, "wasmlet_invocations_total")]
    assert {"function", "status"} <= set(labels[0])
    assert metric_value(client, "wasmlet_invocation_seconds_count", function=name) == 4
    assert metric_value(client, "wasmlet_instantiations_total", function=name) >= 1
    resp = client.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain")


def test_openapi_docs_health(client: httpx.Client) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    schema = json.loads(resp.text)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/v1/functions",
        "/api/v1/functions/{name}",
        "/api/v1/functions/{name}/versions",
        "/api/v1/functions/{name}/rollback",
        "/api/v1/functions/{name}/invoke",
        "/api/v1/functions/{name}/invocations",
        "/fn/{name}/{path}",
        "/function/deploy",
        "/function/invoke",
        "/function/list",
        "/function/query",
        "/function/delete",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, f"{path} missing from /openapi.json"
    assert {"get", "post"} <= set(paths["/api/v1/functions"])
    assert {"get", "patch", "delete"} <= set(paths["/api/v1/functions/{name}"])

    resp = client.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "<html" in resp.text.lower()
    assert "openapi.json" in resp.text

    resp = client.get("/healthz")
    assert resp.status_code == 200
    health = resp.json()
    assert health["status"] == "ok"
    assert health["functions"] >= 4  # the examples


def test_every_error_has_the_same_shape(client: httpx.Client) -> None:
    deployed(client, unique("shape"), GCD_WAT)
    cases: list[tuple[httpx.Response, int, str]] = [
        (client.get("/no/such/route"), 404, "not_found"),
        (client.get("/api/v1/functions/gcd/invoke"), 405, "invalid_request"),
        (client.put("/api/v1/functions"), 405, "invalid_request"),
        (client.post("/api/v1/functions", data={"name": "x"}), 422, "invalid_request"),
        (client.post("/api/v1/functions", content=b"{}"), 422, "invalid_request"),
        (client.get("/api/v1/functions/nope-nope"), 404, "not_found"),
        (client.get("/api/v1/functions/BAD"), 422, "invalid_request"),
        (client.post("/api/v1/functions/gcd/invoke", content=b"[1,"), 400, "invalid_request"),
        (invoke(client, "gcd", [1]), 422, "invalid_request"),
        (client.post("/api/v1/blobs", content=b""), 422, "invalid_request"),
        (client.post("/function/query", json={}), 422, "invalid_request"),
        (client.post("/function/query", content=b"nope", headers=JSON), 400, "invalid_request"),
        (client.get("/function/invoke"), 405, "invalid_request"),
        (client.post("/function/invoke", content=b"[]"), 422, "invalid_request"),
        (client.get("/fn/nope-nope/"), 404, "not_found"),
    ]
    for resp, status, code in cases:
        assert_error(resp, status, code)
