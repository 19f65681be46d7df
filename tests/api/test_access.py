"""Access control through a real server: the bootstrap admin key, scopes, revocation,
namespaces kept apart, public and private functions, quotas and rate limits, CORS.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import stat
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.api.support import EXAMPLES, FIXTURES, assert_error, deploy, deployed, unique
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

GCD = EXAMPLES / "gcd" / "gcd.wat"
PROBE = FIXTURES / "capability_probe.wat"
LOOP = FIXTURES / "loop.wat"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with ServerProcess(tmp_path_factory.mktemp("access") / "data") as proc:
        yield proc


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_key(admin: httpx.Client, scopes: list[str], namespace: str | None = None) -> str:
    resp = admin.post("/api/v1/keys", json={"scopes": scopes, "namespace": namespace})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["token"].startswith(f"wl_{body['key_id']}_")
    return body["token"]


def as_key(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers=bearer(token))


# -- the bootstrap key ----------------------------------------------------------------------


def test_first_start_writes_the_admin_key_once(server: ServerProcess) -> None:
    path = server.data_dir / "admin.key"
    token = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token in server.log()  # printed once, at the first start
    with sqlite3.connect(server.data_dir / "wasmlet.db") as db:
        stored = [row[0] for row in db.execute("select secret_hash from api_keys")]
    assert stored and all(h.startswith("$argon2id$") for h in stored)
    assert not any(token.split("_", 2)[2] in h for h in stored)
    server.restart()
    assert server.log().count(token) == 1  # not again
    assert path.read_text().strip() == token


def test_management_needs_a_key(server: ServerProcess) -> None:
    with server.client(auth=False) as anon:
        assert_error(anon.get("/api/v1/functions"), 401, "unauthorized")
        assert_error(deploy(anon, unique("x"), GCD), 401, "unauthorized")
        bad = anon.get("/api/v1/functions", headers=bearer("wl_0123456789ab_not-the-secret"))
        assert "invalid or revoked" in assert_error(bad, 401, "unauthorized")
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/openapi.json").status_code == 200


def test_scopes_limit_what_a_key_may_do(server: ServerProcess) -> None:
    with server.client() as admin:
        name = unique("gcd")
        deployed(admin, name, GCD)
        reader = new_key(admin, ["read"])
        deployer = new_key(admin, ["deploy"])
    with as_key(server, reader) as c:
        assert c.get(f"/api/v1/functions/{name}").status_code == 200
        assert "'deploy' scope" in assert_error(deploy(c, unique("x"), GCD), 403, "forbidden")
        assert "'admin' scope" in assert_error(c.get("/api/v1/keys"), 403, "forbidden")
        resp = c.post(f"/api/v1/functions/{name}/invoke", json={"args": [12, 18]})
        assert "'invoke' scope" in assert_error(resp, 403, "forbidden")
    with as_key(server, deployer) as c:
        assert deploy(c, unique("y"), GCD).status_code == 201
        assert "'read' scope" in assert_error(c.get("/api/v1/functions"), 403, "forbidden")


def test_revoked_keys_stop_working_at_once(server: ServerProcess) -> None:
    with server.client() as admin:
        token = new_key(admin, ["read"])
        with as_key(server, token) as c:
            assert c.get("/api/v1/functions").status_code == 200
            key_id = token.split("_")[1]
            assert admin.delete(f"/api/v1/keys/{key_id}").json() == {"revoked": True}
            assert_error(c.get("/api/v1/functions"), 401, "unauthorized")
        listed = {k["key_id"]: k for k in admin.get("/api/v1/keys").json()["keys"]}
        assert listed[key_id]["revoked_at"] is not None
        assert "token" not in listed[key_id] and token not in admin.get("/api/v1/keys").text


# -- public and private functions --------------------------------------------------------------


def test_private_functions_need_an_invoke_key_of_their_namespace(server: ServerProcess) -> None:
    with server.client() as admin:
        private, public = unique("priv"), unique("pub")
        deployed(admin, private, GCD)
        deployed(admin, public, GCD, visibility="public")
        invoker = new_key(admin, ["invoke"])
        other = new_key(admin, ["admin"], namespace=unique("ns")[:20])
    with server.client(auth=False) as anon:
        # Without a key a private function is answered as a missing one is (no existence
        # oracle); the message says what a private function needs.
        missing = unique("none")
        refused = assert_error(anon.post(f"/fn/{private}?args=12,18"), 404, "not_found")
        absent = assert_error(anon.post(f"/fn/{missing}?args=12,18"), 404, "not_found")
        assert refused.replace(private, "NAME") == absent.replace(missing, "NAME")
        assert "private" in refused and "'invoke' scope" in refused
        assert anon.post(f"/fn/{public}?args=12,18").json() == {"result": 6}
    with as_key(server, invoker) as c:
        assert c.post(f"/fn/{private}?args=12,18").json() == {"result": 6}
    with as_key(server, other) as c:  # another tenant's key: its own namespace has no such name
        assert_error(c.post(f"/fn/{private}?args=12,18"), 404, "not_found")


def test_the_guest_never_sees_the_api_key(server: ServerProcess) -> None:
    with server.client() as admin:
        name = unique("echo")
        deployed(admin, name, FIXTURES / "extism_echo.wat", abi="extism", export="echo")
        token = server.admin_key()
        # An Otoroshi plugin would get the request headers; here the CGI ABI shows them.
        cgi = unique("cgi")
        deployed(admin, cgi, EXAMPLES / "echo" / "echo.wasm")
        resp = admin.post(f"/fn/{cgi}/", content=b"x", headers={"X-API-Key": token})
        assert resp.status_code == 200, resp.text
        assert token not in resp.text and token not in str(resp.headers)


# -- namespaces -----------------------------------------------------------------------------------


def test_namespaces_are_kept_apart(server: ServerProcess) -> None:
    ns_a, ns_b = unique("a")[:20], unique("b")[:20]
    with server.client() as admin:
        key_a, key_b = new_key(admin, ["admin"], ns_a), new_key(admin, ["admin"], ns_b)
        for ns, host in ((ns_a, "from-a.example"), (ns_b, "from-b.example")):  # hosts to route
            resp = admin.post(f"/api/v1/namespaces/{ns}/hosts", json={"patterns": [host]})
            assert resp.status_code == 200, resp.text
    with as_key(server, key_a) as a, as_key(server, key_b) as b:
        grants = ["kv", "kv:global", "http", "call:x"]
        for c, tag in ((a, "from-a"), (b, "from-b")):  # the same name in both namespaces
            deployed(c, "probe", PROBE, abi="extism", export="get", capability=grants)
            assert c.post("/api/v1/functions/probe/invoke/set", content=tag).status_code == 200
            assert c.post("/api/v1/functions/probe/invoke/gset", content=tag).status_code == 200
            secret = c.put("/api/v1/functions/probe/secrets/T", json={"value": tag + "-secret"})
            assert secret.status_code == 200, secret.text
            route = {"host": f"{tag}.example", "path": "/", "function": "probe"}
            assert c.post("/api/v1/routes", json=route).status_code == 201
        assert a.post("/api/v1/functions/probe/invoke/get").content == b"from-a"
        assert b.post("/api/v1/functions/probe/invoke/get").content == b"from-b"
        assert a.post("/api/v1/functions/probe/invoke/gget").content == b"from-a"  # own global
        assert b.get("/api/v1/kv/global/k").content == b"from-b"
        assert b.get("/api/v1/kv/probe/k").content == b"from-b"
        names_a = [f["name"] for f in a.get("/api/v1/functions").json()["functions"]]
        assert names_a == ["probe"]
        assert [r["host"] for r in a.get("/api/v1/routes").json()["routes"]] == ["from-a.example"]
        # b can neither see nor touch a's function by its qualified name.
        assert_error(b.get(f"/api/v1/functions/{ns_a}~probe"), 404, "not_found")
        assert_error(b.delete(f"/api/v1/functions/{ns_a}~probe"), 404, "not_found")
        assert_error(b.get(f"/api/v1/kv/{ns_a}~probe/k"), 404, "not_found")
        assert_error(b.get(f"/api/v1/functions/{ns_a}~probe/invocations"), 404, "not_found")
        # Nor invoke it: the answer is a missing function's, word for word.
        refused = assert_error(b.post(f"/fn/{ns_a}~probe"), 404, "not_found")
        absent = assert_error(b.post(f"/fn/{ns_a}~nothing"), 404, "not_found")
        assert refused.replace("probe", "NAME") == absent.replace("nothing", "NAME")
        route_a = a.get("/api/v1/routes").json()["routes"][0]["id"]
        assert_error(b.delete(f"/api/v1/routes/{route_a}"), 404, "not_found")
        assert_error(b.get("/api/v1/keys", params={"namespace": ns_a}), 403, "forbidden")
        # Routes by host reach each tenant's own function.
        with server.client(auth=False) as anon:
            r = anon.get("/get", headers={"Host": "from-a.example", **bearer(key_a)})
            assert r.content == b"from-a"
    with server.client() as operator:  # the operator sees tenants' functions by full name
        assert operator.get(f"/api/v1/functions/{ns_a}~probe").status_code == 200


def test_public_tenant_functions_by_qualified_name(server: ServerProcess) -> None:
    ns = unique("t")[:20]
    with server.client() as admin:
        key = new_key(admin, ["admin"], ns)
    with as_key(server, key) as c:
        deployed(c, "gcd", GCD, visibility="public")
    with server.client(auth=False) as anon:
        assert anon.post(f"/fn/{ns}~gcd?args=12,18").json() == {"result": 6}


# -- quotas -------------------------------------------------------------------------------------


def test_quotas_and_rate_limits(server_factory: Any) -> None:
    server = server_factory(
        env={
            "WASMLET_QUOTA_REQUESTS_PER_SECOND": "2",
            "WASMLET_QUOTA_BURST": "3",
            "WASMLET_QUOTA_MAX_FUNCTIONS": "1",
        }
    )
    ns = unique("q")[:20]
    with server.client() as admin:
        key = new_key(admin, ["admin"], ns)
        with as_key(server, key) as c:
            codes = [c.get("/api/v1/functions").status_code for _ in range(8)]
            assert codes[:3] == [200, 200, 200] and 429 in codes
            limited = c.get("/api/v1/functions")
            assert_error(limited, 429, "rate_limited")
            assert int(limited.headers["retry-after"]) >= 1
        # The operator's namespace has no quota by default.
        assert all(admin.get("/api/v1/functions").status_code == 200 for _ in range(10))
        # Raise the rate, keep one function at most.
        quota = {"requests_per_second": 1000, "burst": 1000}
        resp = admin.put(f"/api/v1/namespaces/{ns}/quota", json=quota)
        assert resp.status_code == 200 and resp.json()["max_functions"] == 1, resp.text
        with as_key(server, key) as c:
            assert_error(c.put(f"/api/v1/namespaces/{ns}/quota", json=quota), 403, "forbidden")
            assert deploy(c, "first", GCD).status_code == 201
            assert deploy(c, "first", GCD, timeout_ms=900).status_code == 201  # same function
            second = deploy(c, "second", GCD)
            assert "limit of 1 functions" in assert_error(second, 429, "quota_exceeded")
            assert int(second.headers["retry-after"]) >= 1


def test_concurrent_invocations_are_capped(server_factory: Any) -> None:
    server = server_factory(env={"WASMLET_QUOTA_MAX_CONCURRENCY": "1"})
    ns = unique("c")[:20]
    with server.client() as admin:
        key = new_key(admin, ["admin"], ns)
    with as_key(server, key) as c:
        deployed(c, "spin", LOOP, timeout_ms=2000)
        deployed(c, "gcd", GCD)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(c.post, "/api/v1/functions/spin/invoke", json={"args": []})
            seen = []
            while not slow.done():  # until `spin` ends (its 2 s limit)
                resp = c.post("/api/v1/functions/gcd/invoke", json={"args": [12, 18]})
                seen.append(resp.status_code)
                if resp.status_code == 429:
                    assert_error(resp, 429, "rate_limited")
                    break
                time.sleep(0.05)
            assert 429 in seen, seen  # the namespace's one place was taken by `spin`
            assert slow.result().status_code == 504  # which ran to its time limit
        resp = c.post("/api/v1/functions/gcd/invoke", json={"args": [12, 18]})
        assert resp.json() == {"result": 6}  # the place is free again


# -- transport -------------------------------------------------------------------------------------


def test_cors_is_off_by_default(server: ServerProcess) -> None:
    with server.client() as c:
        resp = c.get("/api/v1/functions", headers={"Origin": "https://evil.example"})
        assert resp.status_code == 200
        assert "access-control-allow-origin" not in resp.headers


def test_warns_when_serving_beyond_loopback(server_factory: Any) -> None:
    server = server_factory(env={"WASMLET_HOST": "0.0.0.0"})
    assert "not a loopback address" in server.log()


def test_cli_keys(server: ServerProcess) -> None:
    env = {"WASMLET_API_KEY": server.admin_key(), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "wasmlet", "keys"]
    made = subprocess.run(
        [*run, "create", "--scope", "read", "--url", server.url],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    with as_key(server, token) as c:
        assert c.get("/api/v1/functions").status_code == 200
    listed = subprocess.run(
        [*run, "ls", "--url", server.url], capture_output=True, text=True, env=env, timeout=60
    )
    assert token.split("_")[1] in listed.stdout and token not in listed.stdout
    local = subprocess.run(
        [*run, "create", "--local", "--scope", "admin", "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    with as_key(server, local.stdout.strip().splitlines()[-1]) as c:
        assert c.get("/api/v1/keys").status_code == 200
