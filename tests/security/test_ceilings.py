"""Attack: a tenant asks for more than its namespace may have.

A tenant could deploy with memory_mb 4096 (the node's maximum, meant for the operator).
Now each namespace has ceilings for memory_mb, timeout_ms, fuel and pool_size
(`wasmlet namespace quota NS --memory-mb ...`; tenants default to the `quota_max_*`
settings): a deploy or PATCH asking above one is refused (422, naming the field and the
ceiling) on every deploy path (form fields, JSON spec, Extism manifest, WasmEngine compat),
a spec that omits one gets a default held under it, and a version stored before a
ceiling was lowered runs held to the new one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.support import assert_error
from tests.helpers import ServerProcess
from tests.security.guests import guest_bytes
from tests.security.support import client_with, mint_key


@pytest.fixture(scope="module")
def operator(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _tenant(server: ServerProcess, operator: httpx.Client, namespace: str) -> httpx.Client:
    return client_with(server, mint_key(operator, namespace))


def _deploy(client: httpx.Client, name: str, wasm: bytes, **fields: object) -> httpx.Response:
    data = {"name": name, **{k: str(v) for k, v in fields.items()}}
    files = {"file": (f"{name}.wasm", wasm, "application/octet-stream")}
    return client.post("/api/v1/functions", data=data, files=files)


def _spec(client: httpx.Client, name: str) -> dict:
    resp = client.get(f"/api/v1/functions/{name}")
    assert resp.status_code == 200, resp.text
    return resp.json()["active_version"]["spec"]


def _cli(server: ServerProcess, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    env.update(WASMLET_URL=server.url, WASMLET_API_KEY=key)
    return subprocess.run(
        [sys.executable, "-m", "wasmlet", *args], capture_output=True, text=True, env=env
    )


def test_asking_past_a_ceiling_is_refused(server: ServerProcess, operator: httpx.Client) -> None:
    wasm = guest_bytes("grow.c")
    with _tenant(server, operator, "greedy") as tenant:
        for field, value, ceiling in [
            ("memory_mb", 4096, 256),
            ("timeout_ms", 120_000, 60_000),
            ("pool_size", 100, 64),
        ]:
            resp = _deploy(tenant, "grow", wasm, **{field: value})
            assert_error(resp, 422, "invalid_request", field, str(ceiling))
            resp = _deploy(tenant, "grow", wasm, spec=json.dumps({field: value}))
            assert_error(resp, 422, "invalid_request", field, str(ceiling))
        assert tenant.get("/api/v1/functions/grow").status_code == 404  # nothing stored
        assert _deploy(tenant, "grow", wasm, memory_mb=256).status_code == 201
        resp = tenant.patch("/api/v1/functions/grow", json={"memory_mb": 4096})
        assert_error(resp, 422, "invalid_request", "memory_mb", "256")
        assert _spec(tenant, "grow")["memory_mb"] == 256
    # The operator's own namespace has no ceilings.
    assert _deploy(operator, "grow-big", wasm, memory_mb=4096).status_code == 201


def test_host_buffers_a_spec_asks_for_are_capped(
    server: ServerProcess, operator: httpx.Client
) -> None:
    """An Extism plugin's var store and an outbound response are held in the host's
    memory: no spec, the operator's included, may ask more than the node's caps."""
    wasm = guest_bytes("extism_big.c", plugin=True)
    for field, most in [
        ("max_var_bytes", 16 * 1024 * 1024),
        ("max_http_response_bytes", 64 * 1024 * 1024),
    ]:
        resp = _deploy(operator, "buffers", wasm, abi="extism", export="big", **{field: 1 << 30})
        assert_error(resp, 422, "invalid_request", field, str(most))
    with _tenant(server, operator, "buffers") as tenant:
        resp = _deploy(tenant, "buffers", wasm, abi="extism", export="big", max_var_bytes=1 << 30)
        assert_error(resp, 422, "invalid_request", "max_var_bytes")
        created = _deploy(
            tenant, "buffers", wasm, abi="extism", export="big", max_var_bytes=1 << 20
        )
        assert created.status_code == 201, created.text


def test_fuel_ceiling_set_with_the_cli(server: ServerProcess, operator: httpx.Client) -> None:
    done = _cli(server, server.admin_key(), "namespace", "quota", "fueled", "--fuel", "5000000000")
    assert done.returncode == 0, done.stderr
    wasm = guest_bytes("grow.c")
    with _tenant(server, operator, "fueled") as tenant:
        resp = _deploy(tenant, "grow", wasm, fuel=5_000_000_001)
        assert_error(resp, 422, "invalid_request", "fuel", "5000000000")
        assert _deploy(tenant, "grow", wasm).status_code == 201
        assert _spec(tenant, "grow")["fuel"] == 5_000_000_000  # no fuel asked: the ceiling
        assert tenant.get("/fn/grow", params={"mb": 1}).status_code == 200


def test_manifest_max_pages_is_held_to_the_ceiling(
    server: ServerProcess, operator: httpx.Client, tmp_path: Path
) -> None:
    (tmp_path / "big.wasm").write_bytes(guest_bytes("extism_big.c", plugin=True))
    manifest = tmp_path / "big.json"
    manifest.write_text(
        json.dumps({"wasm": [{"path": "big.wasm"}], "memory": {"max_pages": 65536}})
    )
    token = mint_key(operator, "manifested")
    done = _cli(server, token, "deploy", "big", "--manifest", str(manifest), "--export", "big")
    assert done.returncode != 0, done.stdout
    assert "memory_mb" in done.stderr + done.stdout and "256" in done.stderr + done.stdout
    with client_with(server, token) as tenant:
        assert tenant.get("/api/v1/functions/big").status_code == 404


def test_compat_deploy_gets_defaults_under_the_ceilings(
    server: ServerProcess, operator: httpx.Client
) -> None:
    resp = operator.put(
        "/api/v1/namespaces/compat/quota", json={"max_memory_mb": 32, "max_pool_size": 4}
    )
    assert resp.status_code == 200, resp.text
    with _tenant(server, operator, "compat") as tenant:
        first = _deploy(tenant, "grow", guest_bytes("grow.c"))
        assert first.status_code == 201, first.text
        digest = first.json()["active_version"]["module_digest"]
        resp = tenant.post(
            "/function/deploy",
            json={"function_name": "grow2", "function_image": digest, "wasi_cap": True},
        )
        assert resp.status_code == 200, resp.text
        for name in ("grow", "grow2"):
            spec = _spec(tenant, name)
            assert (spec["memory_mb"], spec["pool_size"]) == (32, 4), spec


def test_lowered_ceiling_holds_a_version_stored_before(
    server: ServerProcess, operator: httpx.Client
) -> None:
    with _tenant(server, operator, "shrunk") as tenant:
        assert _deploy(tenant, "grow", guest_bytes("grow.c"), memory_mb=128).status_code == 201
        ok = tenant.get("/fn/grow", params={"mb": 48})
        assert ok.status_code == 200 and b"grew 48 MiB" in ok.content, ok.text
        done = _cli(server, server.admin_key(), "namespace", "quota", "shrunk", "--memory-mb", "32")
        assert done.returncode == 0, done.stderr
        assert _spec(tenant, "grow")["memory_mb"] == 128  # stored as it was, not trusted
        resp = tenant.get("/fn/grow", params={"mb": 48})
        assert_error(resp, 500, "memory_limit", "32 MiB")
        assert tenant.get("/fn/grow", params={"mb": 8}).status_code == 200
        assert httpx.get(server.url + "/healthz").status_code == 200
