"""Break 5: KV keys must be unambiguous in every backend. On Redis the operator's global
key `b:cfg` and tenant b's global key `cfg` were one Redis key (`wasmlet:kv:global:b:cfg`),
so each could read and overwrite the other's. Tried here end to end, over HTTP and from
guests, on the SQL store, on Redis, and on the in-memory store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.api.support import deployed
from tests.helpers import ServerProcess
from tests.security.guests import guest_bytes
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
KV = "/api/v1/kv"
GRANTS = ["kv", "kv:global", "call:none"]


def redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis not reachable at {REDIS_URL} (CI requires Redis): {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return client


@pytest.fixture(scope="module")
def probe() -> bytes:
    return guest_bytes("tenant_probe.c", plugin=True)


@pytest.fixture(scope="module", params=["sql", "redis"])
def kv_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env: dict[str, str] = {}
    conn = None
    prefix = f"wasmlet:test:{uuid.uuid4().hex}:"  # this run's own keys
    if request.param == "redis":
        conn = redis_or_skip()
        env = {"WASMLET_REDIS_URL": REDIS_URL, "WASMLET_REDIS_KV_PREFIX": prefix}
    try:
        with ServerProcess(tmp_path_factory.mktemp("kv") / "data", env=env) as proc:
            yield proc
    finally:
        if conn is not None:
            leftovers = list(conn.scan_iter(match=prefix.replace(":", r"\:") + "*"))
            if leftovers:
                conn.delete(*leftovers)
            conn.close()


def kset(client: httpx.Client, fn: str, flags: int, key: str, value: str) -> None:
    resp = client.post(f"/api/v1/functions/{fn}/invoke/kset", content=f"{flags} {key}\n{value}")
    assert resp.status_code == 200, resp.text


def kget(client: httpx.Client, fn: str, flags: int, key: str) -> bytes:
    resp = client.post(f"/api/v1/functions/{fn}/invoke/kget", content=f"{flags} {key}")
    assert resp.status_code == 200, resp.text
    return resp.content


def api_get(client: httpx.Client, key: str) -> bytes | None:
    resp = client.get(f"{KV}/global/{key}")
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    return resp.content


def test_operator_global_b_cfg_is_not_tenant_b_global_cfg(
    kv_server: ServerProcess, probe: bytes
) -> None:
    with kv_server.client() as operator:
        token = mint_key(operator, "b")
        with client_with(kv_server, token) as tenant:
            deployed(operator, "kvop", probe, abi="extism", export="kget", capability=GRANTS)
            deployed(tenant, "kvb", probe, abi="extism", export="kget", capability=GRANTS)

            # Over the management API, the persistent store.
            assert operator.put(f"{KV}/global/b:cfg", content=b"operator").status_code == 200
            assert tenant.get(f"{KV}/global/keys").json()["keys"] == []
            assert api_get(tenant, "cfg") is None
            assert tenant.put(f"{KV}/global/cfg", content=b"tenant").status_code == 200
            assert api_get(operator, "b:cfg") == b"operator"
            assert api_get(tenant, "cfg") == b"tenant"
            assert operator.get(f"{KV}/global/keys", params={"pattern": "b*"}).json()["keys"] == [
                "b:cfg"
            ]
            assert tenant.get(f"{KV}/global/keys").json()["keys"] == ["cfg"]
            assert tenant.delete(f"{KV}/global/cfg").json() == {"deleted": True}
            assert api_get(operator, "b:cfg") == b"operator"

            # From guests: persistent (flags 1) and in-memory (flags 3) global scopes.
            for flags in (1, 3):
                kset(operator, "kvop", flags, "b:cfg", f"op-{flags}")
                assert kget(tenant, "kvb", flags, "cfg") == b""
                kset(tenant, "kvb", flags, "cfg", f"b-{flags}")
                assert kget(operator, "kvop", flags, "b:cfg") == f"op-{flags}".encode()
                assert kget(tenant, "kvb", flags, "cfg") == f"b-{flags}".encode()
            assert api_get(operator, "b:cfg") == b"op-1"
            assert api_get(tenant, "cfg") == b"b-1"
