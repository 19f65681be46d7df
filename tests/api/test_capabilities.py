"""Host capabilities through a real server: grants and denials, KV scopes and stores,
function-to-function calls, outbound HTTP records, secrets kept out of every answer.

Guests: tests/fixtures/capability_probe.wat (an Extism plugin, one export per operation,
using wasmlet's `extism:host/user` functions) and core modules generated here that import
the same operations from the `wasmlet` namespace (pointer/length binding).
"""

from __future__ import annotations

import http.server
import os
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.api.support import FIXTURES, assert_error, deploy, deployed, loopback_server, unique
from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's guests call upstreams the tests start on loopback: allowed here."""
    with loopback_server(tmp_path_factory.mktemp("api")) as server:
        yield server


pytestmark = pytest.mark.integration

PROBE = FIXTURES / "capability_probe.wat"
ECHO = FIXTURES / "extism_echo.wat"
ALL = ["kv", "kv:global", "http"]
SECRET = "s3cr3t-value-8c1f2e"


def probe(client: httpx.Client, *, grants: list[str] | None = None, **fields: Any) -> str:
    name = unique("probe")
    capability = ALL + [f"call:{c}" for c in fields.pop("callees", ["nobody"])]
    deployed(
        client,
        name,
        PROBE,
        abi="extism",
        export="get",
        capability=grants if grants is not None else capability,
        **fields,
    )
    return name


def run(client: httpx.Client, name: str, export: str, body: bytes | str = b"") -> httpx.Response:
    return client.post(f"/api/v1/functions/{name}/invoke/{export}", content=body)


def ok(resp: httpx.Response) -> bytes:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    return resp.content


def records(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/functions/{name}/invocations")
    assert resp.status_code == 200, resp.text
    return resp.json()["invocations"]


# -- grants -----------------------------------------------------------------------------------


def test_ungranted_imports_fail_the_deploy_naming_them(client: httpx.Client) -> None:
    resp = deploy(client, unique("probe"), PROBE, abi="extism", export="get")
    message = assert_error(resp, 422, "invalid_request")
    for name in ("wasmlet_kv_get", "wasmlet_http_request", "wasmlet_call"):
        assert f"extism:host/user.{name}" in message, message
    # kv alone still leaves http and call ungranted.
    resp = deploy(client, unique("probe"), PROBE, abi="extism", export="get", capability=["kv"])
    message = assert_error(resp, 422, "invalid_request")
    assert "wasmlet_http_request" in message and "wasmlet_kv_get" not in message, message


def test_unknown_capability_is_refused(client: httpx.Client) -> None:
    resp = deploy(client, unique("probe"), PROBE, abi="extism", capability=["root"])
    assert "unknown capability 'root'" in assert_error(resp, 422, "invalid_request")


def test_global_namespace_needs_its_own_grant(client: httpx.Client) -> None:
    local_only = probe(client, grants=["kv", "http", "call:x"])
    resp = run(client, local_only, "gset", "nope")
    assert "kv:global" in assert_error(resp, 500, "guest_error")
    writer, reader = probe(client), probe(client)
    ok(run(client, writer, "gset", "shared-" + writer))
    assert ok(run(client, reader, "gget")) == ("shared-" + writer).encode()


# -- key-value ---------------------------------------------------------------------------------


def test_function_keys_are_isolated(client: httpx.Client) -> None:
    a, b = probe(client), probe(client)
    ok(run(client, a, "set", "alpha"))
    assert ok(run(client, b, "get")) == b""  # same key, other function: nothing
    ok(run(client, b, "set", "beta"))
    assert ok(run(client, a, "get")) == b"alpha"
    assert ok(run(client, b, "get")) == b"beta"
    assert ok(run(client, b, "keys", "*")) == b'["k"]'
    # Operators see each function's namespace separately.
    assert client.get(f"/api/v1/kv/{a}/k").content == b"alpha"
    assert client.get(f"/api/v1/kv/{b}/k").content == b"beta"
    assert struct.unpack("<q", ok(run(client, a, "del")))[0] == 1
    assert ok(run(client, a, "get")) == b""
    assert ok(run(client, b, "get")) == b"beta"


def test_increments_are_atomic_under_concurrency(client: httpx.Client) -> None:
    name = probe(client)
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda _: ok(run(client, name, "incr")), range(48)))
    values = sorted(struct.unpack("<q", out)[0] for out in outs)
    assert values == list(range(1, 49))


def test_keys_and_values_are_capped(client: httpx.Client, api_server: ServerProcess) -> None:
    name = probe(client)
    big = b"x" * (1024 * 1024 + 1)  # over the default kv_max_value_bytes
    resp = client.post(f"/api/v1/functions/{name}/invoke/set", content=big)
    assert "larger than" in assert_error(resp, 500, "guest_error")
    assert ok(run(client, name, "get")) == b""


def test_operator_writes_are_visible_to_the_guest(client: httpx.Client) -> None:
    name = probe(client)
    assert client.put(f"/api/v1/kv/{name}/k", content=b"from-operator").status_code == 200
    assert ok(run(client, name, "get")) == b"from-operator"


def test_deleting_a_function_drops_its_keys(client: httpx.Client) -> None:
    name = probe(client)
    ok(run(client, name, "set", "old"))
    assert client.delete(f"/api/v1/functions/{name}").status_code == 200
    deployed(client, name, PROBE, abi="extism", export="get", capability=[*ALL, "call:x"])
    assert ok(run(client, name, "get")) == b""


def test_memory_store_is_per_process_and_persistent_store_survives_restart(
    server_factory: Any,
) -> None:
    server = server_factory()
    with server.client() as c:
        name = probe(c)
        ok(run(c, name, "set", "kept"))
        ok(run(c, name, "mset", "volatile"))
        assert ok(run(c, name, "mget")) == b"volatile"
    server.restart()
    with server.client() as c:
        assert ok(run(c, name, "get")) == b"kept"
        assert ok(run(c, name, "mget")) == b""


def _redis() -> Any:
    import redis

    try:
        conn = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        conn.ping()
        return conn
    except redis.RedisError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("Redis is not running on 127.0.0.1:6379")


def test_persistent_store_on_redis(server_factory: Any) -> None:
    conn = _redis()
    server = server_factory(env={"WASMLET_REDIS_URL": "redis://127.0.0.1:6379/0"})
    with server.client() as c:
        name = probe(c)
        ok(run(c, name, "set", "in-redis"))
        assert conn.get(redis_name(f"fn:{name}", "k")) == b"in-redis"
        server.restart()
    with server.client() as c:
        assert ok(run(c, name, "get")) == b"in-redis"
        assert client_delete(c, name)
    assert conn.get(redis_name(f"fn:{name}", "k")) is None  # dropped with the function


def redis_name(scope: str, key: str) -> str:
    """Where the Redis store keeps a key: `<prefix><scope length>:<scope>:<key>`."""
    return f"wasmlet:kv:{len(scope.encode())}:{scope}:{key}"


def client_delete(c: httpx.Client, name: str) -> bool:
    return c.delete(f"/api/v1/functions/{name}").status_code == 200


# -- function-to-function calls ----------------------------------------------------------------


def test_a_granted_call_runs_the_callee(client: httpx.Client) -> None:
    callee = unique("echo")
    deployed(client, callee, ECHO, abi="extism", export="echo")
    caller = probe(client, callees=[callee], config=[f"callee={callee}"])
    assert ok(run(client, caller, "call", "ping through")) == b"ping through"
    vias = [r["via"] for r in records(client, callee)]
    assert "call" in vias, vias


def test_a_call_that_is_not_granted_fails(client: httpx.Client) -> None:
    callee = unique("echo")
    deployed(client, callee, ECHO, abi="extism", export="echo")
    caller = probe(client, callees=["someone-else"], config=[f"callee={callee}"])
    resp = run(client, caller, "call", "x")
    assert f"call:{callee}" in assert_error(resp, 500, "guest_error")


def test_a_call_cycle_ends_with_an_error(client: httpx.Client) -> None:
    a, b = unique("cyc-a"), unique("cyc-b")
    for me, other in ((a, b), (b, a)):
        deployed(
            client,
            me,
            PROBE,
            abi="extism",
            export="call",
            capability=[*ALL, f"call:{other}"],
            config=[f"callee={other}"],
        )
    resp = run(client, a, "call", "round")
    message = assert_error(resp, 500, "guest_error")
    assert f"call cycle: {a} -> {b} -> {a}" in message, message


def test_call_depth_is_bounded(server_factory: Any) -> None:
    server = server_factory(env={"WASMLET_MAX_CALL_DEPTH": "2"})
    with server.client() as c:
        names = [unique(f"d{i}") for i in range(3)]
        deployed(c, names[2], ECHO, abi="extism", export="echo")
        for me, nxt in ((names[1], names[2]), (names[0], names[1])):
            deployed(
                c, me, PROBE, abi="extism", export="call",
                capability=[*ALL, f"call:{nxt}"], config=[f"callee={nxt}"],
            )  # fmt: skip
        assert ok(run(c, names[1], "call", "one hop")) == b"one hop"
        message = assert_error(run(c, names[0], "call", "two hops"), 500, "guest_error")
        assert "call depth exceeds 2" in message, message


# -- outbound HTTP -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"from": "upstream"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_calls_are_allowed_by_host_and_recorded(client: httpx.Client, upstream: str) -> None:
    name = probe(client, allowed_host=["127.0.0.1"], allowed_method=["GET"])
    body = ok(run(client, name, "http", f'{{"url": "{upstream}/x"}}'))
    assert body == b'{"from": "upstream"}'
    denied = run(client, name, "http", '{"url": "http://example.com/"}')
    assert "not allowed" in assert_error(denied, 500, "guest_error")
    post = run(client, name, "http", f'{{"url": "{upstream}/x", "method": "POST"}}')
    assert "method POST is not allowed" in assert_error(post, 500, "guest_error")
    calls = [r["http_calls"] for r in records(client, name)]  # newest first
    assert calls[1][0]["host"] == "example.com" and calls[1][0]["status"] == 0
    first = calls[2][0]
    assert first["method"] == "GET" and first["host"] == "127.0.0.1"
    assert first["status"] == 200 and first["duration_ms"] >= 0


def test_http_needs_an_allowed_host(client: httpx.Client, upstream: str) -> None:
    name = probe(client)  # granted http, but no allowed hosts: nothing is reachable
    resp = run(client, name, "http", f'{{"url": "{upstream}/x"}}')
    assert "not allowed" in assert_error(resp, 500, "guest_error")


# -- secrets ------------------------------------------------------------------------------------


def test_secrets_reach_the_guest_and_nothing_else(
    client: httpx.Client, api_server: ServerProcess
) -> None:
    name = probe(client)
    resp = client.put(f"/api/v1/functions/{name}/secrets/token", json={"value": SECRET})
    assert resp.status_code == 200, resp.text
    assert ok(run(client, name, "secret", "token")) == SECRET.encode()
    assert ok(run(client, name, "secret2", "token")) == SECRET.encode()
    other = probe(client)
    assert ok(run(client, other, "secret2", "token")) == b""  # another function's secret
    leak = run(client, name, "leak", "token")
    assert "[redacted]" in assert_error(leak, 500, "guest_error")
    ok(run(client, name, "logsecret", "token"))
    seen = [
        leak.text,
        client.get(f"/api/v1/functions/{name}").text,
        client.get(f"/api/v1/functions/{name}/versions").text,
        client.get(f"/api/v1/functions/{name}/secrets").text,
        client.get(f"/api/v1/functions/{name}/invocations").text,
        client.get("/api/v1/functions").text,
        client.get("/metrics").text,
    ]
    assert any("[redacted]" in r["logs"] for r in records(client, name))
    for text in seen:
        assert SECRET not in text
    assert SECRET not in api_server.log()


# -- core modules: the same operations by import name ---------------------------------------------


def core_module(callee: str) -> str:
    """A core module using the `wasmlet` namespace: counter, big value, log, call."""
    big = "B" * 100
    return f"""
(module
  (import "wasmlet" "kv_incr" (func $incr (param i32 i32 i32 i64) (result i64)))
  (import "wasmlet" "kv_set" (func $set (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "wasmlet" "kv_get" (func $get (param i32 i32 i32 i32 i32) (result i64)))
  (import "wasmlet" "result_read" (func $result_read (param i32 i32) (result i64)))
  (import "wasmlet" "log" (func $log (param i32 i32 i32)))
  (import "wasmlet" "call" (func $call (param i32 i32 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "counter")
  (data (i32.const 16) "big")
  (data (i32.const 32) "hello from core")
  (data (i32.const 64) "{callee}")
  (data (i32.const 128) "core says hi")
  (data (i32.const 1024) "{big}")
  (func (export "bump") (param $by i64) (result i64)
    (call $incr (i32.const 0) (i32.const 0) (i32.const 7) (local.get $by)))
  ;; stores 100 bytes, reads them back through an 8-byte buffer: the result does not fit,
  ;; so it is fetched with result_read; returns (length from kv_get) * 1000 + bytes read
  (func (export "roundtrip") (result i64)
    (local $n i64)
    (drop (call $set (i32.const 0) (i32.const 16) (i32.const 3)
                     (i32.const 1024) (i32.const 100) (i64.const 0)))
    (local.set $n (call $get (i32.const 0) (i32.const 16) (i32.const 3)
                             (i32.const 4096) (i32.const 8)))
    (i64.add (i64.mul (local.get $n) (i64.const 1000))
             (call $result_read (i32.const 8192) (i32.const 200))))
  (func (export "missing") (result i64)
    (call $get (i32.const 0) (i32.const 32) (i32.const 5) (i32.const 4096) (i32.const 8)))
  (func (export "shout") (result i32)
    (call $log (i32.const 2) (i32.const 32) (i32.const 15))
    (i32.const 0))
  (func (export "relay") (result i64)
    (call $call (i32.const 64) (i32.const {len(callee)}) (i32.const 128) (i32.const 12)
                (i32.const 4096) (i32.const 64)))
)
"""


def test_core_modules_import_capabilities_by_name(client: httpx.Client) -> None:
    callee = unique("echo")
    deployed(client, callee, ECHO, abi="extism", export="echo")
    name = unique("core-kv")
    source = core_module(callee).encode()
    resp = deploy(client, name, source, filename="m.wat", abi="core", export="bump")
    message = assert_error(resp, 422, "invalid_request")
    assert "wasmlet.kv_incr" in message and "wasmlet.call" in message, message
    deployed(
        client, name, source, filename="m.wat", abi="core", export="bump",
        capability=["kv", f"call:{callee}"],
    )  # fmt: skip
    assert client.post(f"/fn/{name}?args=5").json() == {"result": 5}
    assert client.post(f"/fn/{name}?args=2").json() == {"result": 7}
    assert run(client, name, "roundtrip").json() == {"result": 100 * 1000 + 100}
    assert run(client, name, "missing").json() == {"result": -1}
    assert run(client, name, "shout").json() == {"result": 0}
    assert "[info] hello from core" in records(client, name)[0]["logs"]
    assert run(client, name, "relay").json() == {"result": 12}  # "core says hi" echoed
