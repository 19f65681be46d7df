"""Deploy → invoke through every route → restart → still served, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.api.support import (
    GCD_WASM,
    GCD_WAT,
    HELLO_WASM,
    assert_error,
    deployed,
    invoke,
    metric_value,
    result_of,
    sha256,
    unique,
)

pytestmark = pytest.mark.integration


def _compat(client: httpx.Client, action: str, **body: object) -> httpx.Response:
    return client.post(f"/function/{action}", json=body)


def _compat_names(client: httpx.Client) -> dict[str, dict]:
    resp = client.get("/function/list")
    assert resp.status_code == 200, resp.text
    return {f["function_name"]: f for f in resp.json()["functions"]}


def _check_served(client: httpx.Client, api_name: str, compat_gcd: str, compat_hello: str) -> None:
    """Every route answers every function correctly."""
    assert result_of(invoke(client, api_name, [1071, 462])) == 21
    assert result_of(invoke(client, api_name, {"a": 1071, "b": 462})) == 21
    assert result_of(invoke(client, api_name, ["1071", "462"])) == 21
    assert result_of(invoke(client, api_name, {"a": "-12", "b": "18"})) == 6
    assert result_of(client.get(f"/fn/{api_name}?a=1071&b=462")) == 21
    assert result_of(client.get(f"/fn/{api_name}/?args=84,36")) == 12

    for name in ("hello", compat_hello):
        resp = client.get(f"/fn/{name}/?name=Ada")
        assert resp.status_code == 200, resp.text
        assert resp.text == "Hello, Ada!\n"

    resp = _compat(client, "invoke", function_name=compat_gcd, args={"a": 1071, "b": 462})
    assert result_of(resp) == 21
    resp = _compat(client, "invoke", function_name=api_name, args={"a": 30, "b": 42})
    assert result_of(resp) == 6
    resp = _compat(client, "invoke", function_name="gcd", args={"a": 1071, "b": 462})
    assert result_of(resp) == 21

    listed = _compat_names(client)
    assert {api_name, compat_gcd, compat_hello, "gcd", "hello", "echo"} <= set(listed)
    assert listed[compat_gcd]["abi"] == "core"
    assert listed[compat_hello]["abi"] == "wasi-cgi"

    resp = _compat(client, "query", function_name=compat_gcd)
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["function_name"] == compat_gcd
    assert info["abi"] == "core"
    assert "gcd" in info["exports"]
    assert info["digest"] == listed[compat_gcd]["digest"]


def test_deploy_invoke_every_route_then_restart(server_factory, db_url: str) -> None:
    server = server_factory(database_url=db_url, examples=True)
    api_name, compat_gcd = unique("gcd-api"), unique("gcd-compat")
    compat_hello, doomed = unique("hello-import"), unique("gcd-doomed")

    with server.client() as client:
        # Management API: a .wat upload is converted to the same bytes as the built .wasm.
        view = deployed(client, api_name, GCD_WAT)
        version = view["active_version"]
        assert view["name"] == api_name
        assert version["abi"] == "core"
        assert version["spec"]["export"] == "gcd"
        assert version["module_digest"] == sha256(GCD_WASM.read_bytes())

        # WasmEngine compat deploy from an uploaded blob...
        resp = client.post("/api/v1/blobs", content=GCD_WASM.read_bytes())
        assert resp.status_code == 201, resp.text
        digest = resp.json()["digest"]
        assert digest == sha256(GCD_WASM.read_bytes())
        resp = _compat(
            client, "deploy", function_name=compat_gcd, function_image=digest, wasi_cap=False
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["function_name"] == compat_gcd

        # ...and from a file placed in <data_dir>/import/.
        import_dir = server.data_dir / "import"
        import_dir.mkdir(exist_ok=True)
        shutil.copy(HELLO_WASM, import_dir / "hello-copy.wasm")
        resp = _compat(
            client,
            "deploy",
            function_name=compat_hello,
            function_image="hello-copy.wasm",
            wasi_cap=True,
        )
        assert resp.status_code == 200, resp.text

        # Compat delete: gone from query, invoke and list at once.
        resp = _compat(client, "deploy", function_name=doomed, function_image=digest)
        assert resp.status_code == 200, resp.text
        assert result_of(_compat(client, "invoke", function_name=doomed, args=[8, 12])) == 4
        resp = _compat(client, "delete", function_name=doomed)
        assert resp.status_code == 200, resp.text
        assert_error(_compat(client, "query", function_name=doomed), 404, "not_found")
        assert_error(
            _compat(client, "invoke", function_name=doomed, args=[8, 12]), 404, "not_found"
        )
        assert doomed not in _compat_names(client)

        _check_served(client, api_name, compat_gcd, compat_hello)

    # The import file is gone before the restart: serving must not depend on it.
    (server.data_dir / "import" / "hello-copy.wasm").unlink()
    server.restart()

    with server.client() as client:
        _check_served(client, api_name, compat_gcd, compat_hello)
        assert doomed not in _compat_names(client)
        assert_error(invoke(client, doomed, [8, 12]), 404, "not_found")
        # Compiled artifacts survived too: the restarted server deserialised, not recompiled
        # (the gcd and hello copies share module and spec, so two versions were loaded).
        assert metric_value(client, "wasmlet_compile_cache_total", result="hit") >= 2
        assert metric_value(client, "wasmlet_compile_cache_total", result="miss") == 0
