"""wasi-cgi details: CGI status and headers, exit codes, the request as the guest sees it."""

from __future__ import annotations

import httpx
import pytest

from tests.api.support import (
    FIXTURES,
    HELLO_WASM,
    assert_error,
    deployed,
    unique,
)

pytestmark = pytest.mark.integration

# A WASI command that prints a CGI header block and then its whole environment, one
# NAME=value per line: what the platform hands a guest, seen from inside.
ENV_DUMP = b"""
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 8)
  (data (i32.const 512) "Content-Type: text/plain\\n\\n")
  (func $out (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (if (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))
      (then unreachable)))
  (func (export "_start")
    (local $i i32) (local $end i32)
    (if (call $sizes (i32.const 0) (i32.const 4)) (then unreachable))
    (if (call $get (i32.const 1024) (i32.const 65536)) (then unreachable))
    (local.set $i (i32.const 65536))
    (local.set $end (i32.add (i32.const 65536) (i32.load (i32.const 4))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.eqz (i32.load8_u (local.get $i)))
          (then (i32.store8 (local.get $i) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $out (i32.const 512) (i32.const 26))
    (call $out (i32.const 65536) (i32.load (i32.const 4)))))
"""

# A WASI command whose stdout has no header block: all of it is the body.
PLAIN = b"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "just text, no headers")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 21))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


def _env(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    pairs = [line.partition("=") for line in resp.text.splitlines() if line]
    return {key: value for key, _, value in pairs}


def test_cgi_status_location_and_json_body(client: httpx.Client) -> None:
    name = unique("created")
    deployed(client, name, FIXTURES / "cgi_status.wat")
    for resp in (client.post(f"/api/v1/functions/{name}/invoke"), client.put(f"/fn/{name}/x")):
        assert resp.status_code == 201, resp.text
        assert resp.headers["location"] == "/things/7"
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == {"id": 7}
        assert "status" not in resp.headers  # the CGI Status line is not passed on as a header
    records = client.get(f"/api/v1/functions/{name}/invocations").json()["invocations"]
    assert [r["status"] for r in records] == [201, 201]
    assert all(r["logs"] == "created 7\n" for r in records)


def test_cgi_exit_status_is_a_guest_error(client: httpx.Client) -> None:
    name = unique("exit3")
    deployed(client, name, FIXTURES / "cgi_exit3.wat")
    for resp in (client.post(f"/api/v1/functions/{name}/invoke"), client.get(f"/fn/{name}/")):
        # The error shape only: the partial stdout of the failed run is not sent.
        assert_error(resp, 500, "guest_error", "status 3")


def test_output_without_headers_is_the_body(client: httpx.Client) -> None:
    name = unique("plain")
    deployed(client, name, PLAIN)
    resp = client.get(f"/fn/{name}/")
    assert resp.status_code == 200
    assert resp.content == b"just text, no headers"


def test_echo_sees_method_path_query_and_body(client: httpx.Client) -> None:
    body = bytes(range(256)) * 64
    resp = client.put(
        "/fn/echo/a/b%20c/?x=1&y=two%20words",
        content=body,
        headers={"content-type": "application/x-thing"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.content == body
    assert resp.headers["x-echo-method"] == "PUT"
    assert resp.headers["x-echo-path"] == "/a/b c/"
    assert resp.headers["x-echo-query"] == "x=1&y=two%20words"
    assert resp.headers["content-type"] == "application/x-thing"

    resp = client.delete("/fn/echo")
    assert resp.headers["x-echo-method"] == "DELETE"
    assert resp.headers["x-echo-path"] == "/"
    assert resp.content == b""

    big = b"0123456789abcdef" * 65536  # 1 MiB, more than the guest's 32 KiB buffer
    resp = client.post("/api/v1/functions/echo/invoke", content=big)
    assert resp.status_code == 200
    assert resp.content == big
    assert resp.headers["x-echo-path"] == "/"


def test_hello_reads_query_then_body(client: httpx.Client) -> None:
    assert client.get("/fn/hello/?name=Ada%20Lovelace").text == "Hello, Ada Lovelace!\n"
    assert client.post("/fn/hello/", content=b"  Grace\n").text == "Hello, Grace!\n"
    assert client.get("/fn/hello/").text == "Hello, world!\n"
    resp = client.post("/fn/hello/")  # a POST with no name: the guest's own 400
    assert resp.status_code == 400


def test_guest_sees_cgi_variables_and_nothing_else(client: httpx.Client) -> None:
    name = unique("env")
    deployed(client, name, ENV_DUMP, env=["GREETING=hi there", "MODE=test"], visibility="public")
    resp = client.post(
        f"/fn/{name}/some/path?q=1&r=2",
        content=b"abc",
        headers={
            "content-type": "text/x-test",
            "x-custom-thing": "yes",
            "authorization": "Bearer secret-token",
        },
    )
    env = _env(resp)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/some/path"
    assert env["QUERY_STRING"] == "q=1&r=2"
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "3"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SCRIPT_NAME"] == f"/fn/{name}"
    assert env["HTTP_X_CUSTOM_THING"] == "yes"
    assert env["GREETING"] == "hi there"  # granted with --env
    assert env["MODE"] == "test"
    # Credentials and the host's own environment stay outside.
    assert "HTTP_AUTHORIZATION" not in env
    assert "secret-token" not in resp.text
    for leaked in ("PATH", "HOME", "USER", "PWD", "WASMLET_DATA_DIR", "VIRTUAL_ENV"):
        assert leaked not in env, f"host variable {leaked} reached the guest"


def test_each_function_sees_its_own_name(client: httpx.Client) -> None:
    """Two functions deployed from the same bytes and spec are still two functions."""
    first, second = unique("twin-a"), unique("twin-b")
    deployed(client, first, ENV_DUMP)
    deployed(client, second, ENV_DUMP)
    assert _env(client.get(f"/fn/{first}/"))["SCRIPT_NAME"] == f"/fn/{first}"
    assert _env(client.get(f"/fn/{second}/"))["SCRIPT_NAME"] == f"/fn/{second}"


def test_wasi_cgi_instances_are_fresh(client: httpx.Client) -> None:
    name = unique("hello-fresh")
    view = deployed(client, name, HELLO_WASM)
    assert view["active_version"]["abi"] == "wasi-cgi"
    assert view["active_version"]["spec"]["reuse"] is False
    for who in ("a", "b", "c"):
        assert client.get(f"/fn/{name}/?name={who}").text == f"Hello, {who}!\n"
    records = client.get(f"/api/v1/functions/{name}/invocations").json()["invocations"]
    assert [r["instantiated"] for r in records] == [True, True, True]
    assert [r["logs"] for r in records] == [f"hello: greeted {w}\n" for w in "cba"]
    # Reuse cannot be turned on for a command.
    resp = client.patch(f"/api/v1/functions/{name}", json={"reuse": True})
    assert_error(resp, 422, "invalid_request")
