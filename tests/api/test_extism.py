"""Extism plugins through a real server: deploy checks, invoke API and gateway, config, vars,
HTTP from plugins, logs in invocation records, outcome rules, sizes, time limits, concurrency.

Expected behaviour comes from EXTISM-ABI.md (sections 1-4).
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.api.support import (
    EXAMPLES,
    FIXTURES,
    assert_error,
    deploy,
    deployed,
    loopback_server,
    started_during,
    unique,
)
from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's guests call upstreams the tests start on loopback: allowed here."""
    with loopback_server(tmp_path_factory.mktemp("api")) as server:
        yield server


pytestmark = pytest.mark.integration

HELLO = EXAMPLES / "hello-plugin" / "hello.wasm"
VOWELS = EXAMPLES / "count-vowels" / "count_vowels.wasm"
FETCH = EXAMPLES / "http-plugin" / "fetch.wasm"
ERRORS = FIXTURES / "extism_errors.wat"
KERNEL = FIXTURES / "extism_kernel.wat"
ECHO = FIXTURES / "extism_echo.wat"
LOOP = FIXTURES / "extism_loop.wat"
LEGACY = FIXTURES / "extism_legacy.wat"
USER = FIXTURES / "extism_user.wat"
WASI = FIXTURES / "extism_wasi.wat"
UNKNOWN = FIXTURES / "extism_unknown_import.wat"
COUNTER = FIXTURES / "extism_counter.wat"


def invoke(
    client: httpx.Client, name: str, body: bytes = b"", export: str | None = None
) -> httpx.Response:
    path = f"/api/v1/functions/{name}/invoke" + (f"/{export}" if export else "")
    return client.post(path, content=body)


def plugin(client: httpx.Client, prefix: str, module, **fields: Any) -> str:
    name = unique(prefix)
    deployed(client, name, module, abi="extism", **fields)
    return name


def json_of(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    assert resp.headers["content-type"] == "application/json", resp.headers
    return resp.json()


def records(client: httpx.Client, name: str, limit: int = 50) -> list[dict]:
    resp = client.get(f"/api/v1/functions/{name}/invocations", params={"limit": limit})
    assert resp.status_code == 200, resp.text
    return resp.json()["invocations"]  # newest first


# -- hello-plugin -----------------------------------------------------------------------------


def test_hello_through_invoke_api_and_gateway(client: httpx.Client) -> None:
    name = plugin(client, "hello-plugin", HELLO, export="greet")
    view = client.get(f"/api/v1/functions/{name}").json()
    assert view["active_version"]["abi"] == "extism"

    assert json_of(invoke(client, name, b"Ada")) == {"message": "Hello Ada"}
    assert json_of(invoke(client, name, b"Ada", export="greet")) == {"message": "Hello Ada"}
    assert json_of(invoke(client, name)) == {"message": "Hello world"}
    assert json_of(client.post(f"/fn/{name}/", content=b"Grace")) == {"message": "Hello Grace"}
    assert json_of(client.post(f"/fn/{name}/any/path?x=1", content="Jürgen".encode())) == {
        "message": "Hello Jürgen"
    }
    assert json_of(client.get(f"/fn/{name}?export=greet")) == {"message": "Hello world"}
    assert_error(invoke(client, name, b"x", export="nope"), 404, "not_found", "nope")
    assert_error(client.get(f"/fn/{name}?export=nope"), 404, "not_found", "nope")


def test_hello_default_export_and_content_type(client: httpx.Client) -> None:
    name = plugin(client, "hello-auto", HELLO)  # the only callable export: greet
    view = client.get(f"/api/v1/functions/{name}").json()
    assert view["active_version"]["spec"]["export"] == "greet"
    assert json_of(invoke(client, name, b"Ada")) == {"message": "Hello Ada"}
    typed = plugin(client, "hello-typed", HELLO, spec={"content_type": "text/x-greeting"})
    resp = invoke(client, typed, b"Ada")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/x-greeting"
    assert resp.json() == {"message": "Hello Ada"}


def test_bundled_examples(client: httpx.Client) -> None:
    assert json_of(invoke(client, "hello-plugin", b"Ada")) == {"message": "Hello Ada"}
    assert json_of(client.post("/fn/count-vowels/", content=b"xyz"))["count"] == 0
    resp = invoke(client, "http-plugin", b"http://127.0.0.1:9/")
    assert_error(resp, 500, "guest_error", "not allowed")


def test_bundled_count_vowels_uses_manifest_config(client: httpx.Client) -> None:
    assert json_of(invoke(client, "count-vowels", b"AEIOU aeiou"))["vowels"] == "aeiou"


# -- count-vowels: config and vars ------------------------------------------------------------


def test_count_vowels_config_and_running_total(client: httpx.Client) -> None:
    name = plugin(client, "vowels", VOWELS, export="count_vowels", config=["vowels=aeiou"])
    text = b"Hello World, AEIOU"
    assert json_of(invoke(client, name, text)) == {"count": 3, "total": 3, "vowels": "aeiou"}
    assert json_of(client.post(f"/fn/{name}/", content=text))["total"] == 6
    assert json_of(invoke(client, name, b"aaaa"))["total"] == 10

    default = plugin(client, "vowels-default", VOWELS, export="count_vowels")
    assert json_of(invoke(client, default, text)) == {
        "count": 8,
        "total": 8,
        "vowels": "aeiouAEIOU",
    }
    # a new version (PATCH) of the same function keeps its vars and sees the new config
    resp = client.patch(f"/api/v1/functions/{default}", json={"config": {"vowels": "o"}})
    assert resp.status_code == 200, resp.text
    assert json_of(invoke(client, default, text)) == {"count": 2, "total": 10, "vowels": "o"}


def test_count_vowels_concurrent_calls_are_all_counted(api_server) -> None:
    with api_server.client() as client:
        name = plugin(client, "vowels-par", VOWELS, export="count_vowels", pool_size=8)
    inputs = [b"a" * (i % 5 + 1) + b"-" * 2000 for i in range(80)]
    limits = httpx.Limits(max_connections=16)
    with api_server.client(limits=limits) as shared, ThreadPoolExecutor(16) as ex:
        results = list(ex.map(lambda body: json_of(invoke(shared, name, body)), inputs))
    assert [r["count"] for r in results] == [i % 5 + 1 for i in range(80)]
    expected = sum(i % 5 + 1 for i in range(80))
    totals = sorted(r["total"] for r in results)
    assert len(set(totals)) == len(totals), "two calls saw the same running total"
    assert totals[-1] == expected
    with api_server.client() as client:
        assert json_of(invoke(client, name, b""))["total"] == expected


def test_overlapping_offloaded_calls_lose_no_update(api_server) -> None:
    # Each call reads var n, works for ~10 ms (so it runs off the event loop, on the
    # executor), then writes n + 1.
    with api_server.client() as client:
        name = plugin(client, "counter", COUNTER, export="bump", pool_size=4)
        for _ in range(3):  # long calls: the dispatcher learns to offload them
            assert invoke(client, name, b"x" * 400).status_code == 200

    with api_server.client(limits=httpx.Limits(max_connections=8)) as shared:

        def one(_: int) -> int:
            resp = invoke(shared, name, b"x" * 400)
            assert resp.status_code == 200, resp.text
            return int.from_bytes(resp.content, "little")

        with ThreadPoolExecutor(8) as ex:
            values = sorted(ex.map(one, range(24)))
    assert values == list(range(4, 28))


def test_deleted_function_takes_its_vars_along(client: httpx.Client) -> None:
    name = plugin(client, "vowels-gone", VOWELS, export="count_vowels")
    assert json_of(invoke(client, name, b"aaa"))["total"] == 3
    assert client.delete(f"/api/v1/functions/{name}").status_code == 200
    deployed(client, name, VOWELS, abi="extism", export="count_vowels")
    assert json_of(invoke(client, name, b"aaa"))["total"] == 3


def test_var_store_limit(client: httpx.Client) -> None:
    # One entry is len("total") + len("1") + 48 = 54 bytes; replacing it counts it twice.
    name = plugin(client, "vowels-cap", VOWELS, export="count_vowels", spec={"max_var_bytes": 54})
    assert json_of(invoke(client, name, b"a"))["total"] == 1
    assert_error(invoke(client, name, b"a"), 500, "guest_error", "Variable store is full")
    roomy = plugin(
        client, "vowels-roomy", VOWELS, export="count_vowels", spec={"max_var_bytes": 108}
    )
    for total in (1, 2, 3):
        assert json_of(invoke(client, roomy, b"a"))["total"] == total


def test_vars_disabled(client: httpx.Client) -> None:
    name = plugin(client, "vowels-off", VOWELS, export="count_vowels", spec={"max_var_bytes": 0})
    message = assert_error(invoke(client, name, b"abc"), 500, "guest_error")
    assert message == "Vars are disabled by this host"
    assert_error(invoke(client, name, b"abc"), 500, "guest_error", "Vars are disabled")


# -- http-plugin ------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/big/"):
            body, status = b"y" * int(self.path.rsplit("/", 1)[1]), 200
        elif self.path == "/missing":
            body, status = b"nothing here", 404
        else:
            body, status = b'{"greeting": "hi \\"there\\""}\n' + b"." * 300, 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def local_http() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    with local_http() as url:
        yield url


FIRST = b'{"greeting": "hi \\"there\\""}\n' + b"." * 300


def test_fetch_allowed_host(client: httpx.Client, web: str) -> None:
    name = plugin(client, "fetch", FETCH, export="fetch", allowed_host=["127.0.0.1"])
    result = json_of(invoke(client, name, f"{web}/page".encode()))
    assert result == {"status": 200, "length": len(FIRST), "body": FIRST[:200].decode()}
    assert json_of(client.post(f"/fn/{name}/", content=f"{web}/missing\n".encode())) == {
        "status": 404,
        "length": 12,
        "body": "nothing here",
    }
    logs = [r.get("logs") or "" for r in records(client, name)]
    assert any(f"[info] fetching {web}/page" in line for line in logs), logs
    assert any(f"[info] fetching {web}/missing" in line for line in logs), logs


@pytest.mark.parametrize(
    "hosts", [None, ["localhost"], ["example.com", "127.0.0.10"], ["*.127.0.0.1"]]
)
def test_fetch_denied(client: httpx.Client, web: str, hosts: list[str] | None) -> None:
    fields = {"allowed_host": hosts} if hosts else {}
    name = plugin(client, "fetch-denied", FETCH, export="fetch", **fields)
    resp = invoke(client, name, f"{web}/page".encode())
    message = assert_error(resp, 500, "guest_error", "not allowed")
    assert message == f"HTTP request to {web}/page is not allowed"
    # the server and the function keep serving
    assert client.get("/healthz").status_code == 200
    assert_error(invoke(client, name, f"{web}/page".encode()), 500, "guest_error", "not allowed")
    hello = plugin(client, "after-denied", HELLO, export="greet")
    assert json_of(invoke(client, hello, b"still here")) == {"message": "Hello still here"}


def test_fetch_denied_call_keeps_its_logs(client: httpx.Client, web: str) -> None:
    name = plugin(client, "fetch-denied-logs", FETCH, export="fetch")
    assert_error(invoke(client, name, f"{web}/page".encode()), 500, "guest_error")
    (record,) = records(client, name)
    assert record["status"] == 500, record
    assert f"[info] fetching {web}/page" in (record.get("logs") or ""), record


@pytest.mark.parametrize("hosts", [["127.0.0.*"], ["example.com", "127.*"], ["*"]])
def test_fetch_glob_patterns(client: httpx.Client, web: str, hosts: list[str]) -> None:
    name = plugin(client, "fetch-glob", FETCH, export="fetch", allowed_host=hosts)
    assert json_of(invoke(client, name, f"{web}/page".encode()))["status"] == 200


def test_fetch_response_limit(client: httpx.Client, web: str) -> None:
    name = plugin(
        client,
        "fetch-cap",
        FETCH,
        export="fetch",
        allowed_host=["127.0.0.1"],
        spec={"max_http_response_bytes": 4096},
    )
    assert json_of(invoke(client, name, f"{web}/big/4096".encode()))["length"] == 4096
    resp = invoke(client, name, f"{web}/big/4097".encode())
    assert_error(resp, 500, "guest_error", "4096", "exceeds")
    assert json_of(invoke(client, name, f"{web}/big/10".encode()))["length"] == 10


# -- outcome rules ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def errors(api_server) -> str:
    with api_server.client() as client:
        return plugin(client, "errors", ERRORS, export="void")


@pytest.mark.parametrize(
    ("export", "code", "message"),
    [
        ("error_return", "guest_error", "plugin says no"),
        ("error_zero", "guest_error", "plugin says no"),
        ("error_trap", "guest_error", "set before the trap"),
        ("nonzero", "guest_error", "Returned non-zero exit code: 42"),
        ("minus_one", "guest_error", "Returned non-zero exit code: -1"),
    ],
)
def test_failures(client: httpx.Client, errors: str, export: str, code: str, message: str) -> None:
    assert assert_error(invoke(client, errors, export=export), 500, code) == message
    assert_error(client.post(f"/fn/{errors}?export={export}"), 500, code)


def test_trap_without_error(client: httpx.Client, errors: str) -> None:
    assert_error(invoke(client, errors, export="trap"), 500, "guest_trap", "unreachable")


def test_successes_after_failures(client: httpx.Client, errors: str) -> None:
    for export in ("error_cleared", "void"):
        resp = invoke(client, errors, export=export)
        assert resp.status_code == 200, resp.text
        assert resp.content == b"ok"
        assert resp.headers["content-type"] == "application/octet-stream"


# -- kernel, legacy, user functions -----------------------------------------------------------


def test_kernel_functions_from_a_plugin(client: httpx.Client) -> None:
    name = plugin(client, "kernel", KERNEL, export="probe")
    resp = invoke(client, name, b"hello, kernel")
    assert resp.status_code == 200, resp.text
    words = [int.from_bytes(resp.content[i : i + 8], "little") for i in range(0, 240, 8)]
    assert len(resp.content) == 240
    assert words[:12] == [0, 1, 10, 10, 0x0102030405060708, 0xAB, 8, 0, 0, 0, 0, 1]
    assert words[12:15] == [13, 1, 13]
    assert words[29] == 0
    assert invoke(client, name, b"", export="own_input").content == b"abc"


def test_legacy_env_plugin(client: httpx.Client) -> None:
    name = plugin(client, "legacy", LEGACY, export="run", config=["suffix=1.0"])
    resp = invoke(client, name, b"pre-1.0")
    assert resp.status_code == 200, resp.text
    assert resp.content == b"legacy:pre-1.0:1.0"
    assert "[info] pre-1.0" in (records(client, name)[0].get("logs") or "")


def test_user_functions(client: httpx.Client) -> None:
    name = plugin(client, "user", USER, export="now")
    before = time.time() * 1000
    resp = invoke(client, name)
    after = time.time() * 1000
    assert resp.status_code == 200, resp.text
    assert before - 50 <= int.from_bytes(resp.content, "little") <= after + 50
    first = invoke(client, name, b"n" * 24, export="random")
    second = invoke(client, name, b"n" * 24, export="random")
    assert first.status_code == second.status_code == 200
    assert len(first.content) == len(second.content) == 24
    assert first.content != second.content
    assert_error(invoke(client, name, export="random"), 500, "guest_error", "1..65536")


# -- deploy checks ----------------------------------------------------------------------------


def test_unknown_host_function_is_refused(client: httpx.Client) -> None:
    name = unique("unknown-import")
    resp = deploy(client, name, UNKNOWN, abi="extism", export="run")
    assert_error(resp, 422, "invalid_request", "extism:host/env.teleport")
    assert client.get(f"/api/v1/functions/{name}").status_code == 404


# `alloc` imported with i32 instead of i64 parameters and result.
MISTYPED = b"""
(module
  (import "extism:host/env" "alloc" (func $alloc (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "run") (result i32) (drop (call $alloc (i32.const 1))) (i32.const 0)))
"""


def test_mistyped_host_import_is_refused(client: httpx.Client) -> None:
    name = unique("mistyped")
    resp = deploy(client, name, MISTYPED, abi="extism", export="run", filename="m.wat")
    assert_error(resp, 422, "invalid_request", "extism:host/env.alloc")


def test_wasi_needs_the_grant(client: httpx.Client) -> None:
    name = unique("wasi-plugin")
    resp = deploy(client, name, WASI, abi="extism", export="random")
    assert_error(resp, 422, "invalid_request", "wasi_snapshot_preview1.random_get")
    resp = deploy(client, name, WASI, abi="extism", export="random", spec={"wasi": True})
    assert resp.status_code == 201, resp.text
    first, second = invoke(client, name), invoke(client, name)
    assert first.status_code == second.status_code == 200, first.text
    assert len(first.content) == len(second.content) == 16
    assert first.content != second.content


def test_extism_options_as_form_fields(client: httpx.Client, web: str) -> None:
    name = unique("wasi-form")
    resp = deploy(client, name, WASI, abi="extism", export="random", wasi=True)
    assert resp.status_code == 201, resp.text
    assert len(invoke(client, name).content) == 16
    capped = unique("vars-form")
    deployed(client, capped, VOWELS, abi="extism", export="count_vowels", max_var_bytes=0)
    assert_error(invoke(client, capped, b"a"), 500, "guest_error", "Vars are disabled")
    fetch = unique("fetch-form")
    deployed(
        client,
        fetch,
        FETCH,
        abi="extism",
        allowed_host=["127.0.0.1"],
        max_http_response_bytes=100,
        content_type="application/x-fetch+json",
    )
    resp = invoke(client, fetch, f"{web}/big/100".encode())
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/x-fetch+json"
    assert_error(invoke(client, fetch, f"{web}/big/101".encode()), 500, "guest_error", "exceeds")


def test_cli_deploy_with_config_and_allowed_host(api_server, web: str) -> None:
    name = unique("cli-fetch")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    env["WASMLET_API_KEY"] = api_server.admin_key()
    cmd = [sys.executable, "-m", "wasmlet", "deploy", name, str(FETCH), "--abi", "extism"]
    cmd += ["--export", "fetch", "--config", "unused=1", "--allowed-host", "127.0.0.*"]
    cmd += ["--url", api_server.url]
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=60, text=True)
    assert proc.returncode == 0, proc.stderr
    with api_server.client() as client:
        spec = client.get(f"/api/v1/functions/{name}").json()["active_version"]["spec"]
        assert spec["config"] == {"unused": "1"}
        assert spec["allowed_hosts"] == ["127.0.0.*"]
        assert json_of(invoke(client, name, f"{web}/page".encode()))["status"] == 200


# -- sizes, time limits, concurrency ----------------------------------------------------------


def test_hundred_concurrent_callers(api_server) -> None:
    with api_server.client() as client:
        name = plugin(client, "hello-many", HELLO, export="greet")
    names = [f"caller {i} {'é' * (i % 9)}" for i in range(100)]
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)

    with api_server.client(limits=limits) as shared:

        def one(who: str) -> tuple[int, Any]:
            if len(who) % 2:  # half through the gateway
                resp = shared.post(f"/fn/{name}/", content=who.encode())
            else:
                resp = invoke(shared, name, who.encode())
            return resp.status_code, resp.json()

        barrier = threading.Barrier(100)

        def together(who: str) -> tuple[int, Any]:
            barrier.wait(timeout=30)
            return one(who)

        with ThreadPoolExecutor(100) as ex:
            results = list(ex.map(together, names))
    assert results == [(200, {"message": f"Hello {who}"}) for who in names]


def test_one_mib_round_trip(client: httpx.Client) -> None:
    name = plugin(client, "echo", ECHO, export="echo")
    data = os.urandom(1024 * 1024)
    resp = invoke(client, name, data)
    assert resp.status_code == 200, resp.text[:200]
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.content == data
    odd = data[: 1024 * 1024 - 3]
    assert client.post(f"/fn/{name}/", content=odd).content == odd


def test_endless_plugin_times_out_while_others_answer(api_server) -> None:
    with api_server.client() as client:
        spinner = plugin(client, "spin", LOOP, export="spin", timeout_ms=500)
        hello = plugin(client, "hello-beside", HELLO, export="greet")

    def spin() -> httpx.Response:
        with api_server.client() as c:
            return invoke(c, spinner, b"x")

    with ThreadPoolExecutor(2) as ex:
        spinning = [ex.submit(spin) for _ in range(2)]
        time.sleep(0.1)
        with api_server.client() as client:
            answered = 0
            while not all(f.done() for f in spinning):
                resp = invoke(client, hello, b"meanwhile")
                assert json_of(resp) == {"message": "Hello meanwhile"}
                answered += 1
                time.sleep(0.02)
        outcomes = [f.result() for f in spinning]
    for resp in outcomes:
        assert_error(resp, 504, "timeout", "500 ms")
    with api_server.client() as client:
        spins = records(client, spinner)
        hellos = records(client, hello, limit=1000)
    assert [r["error_code"] for r in spins] == ["timeout", "timeout"], spins
    # Each spun until its deadline (less an inline attempt before it moved off the loop) ...
    assert all(r["duration_ms"] >= 0.8 * 500 for r in spins), spins
    # ... while the server went on admitting and answering other calls.
    assert len(hellos) == answered
    meanwhile = {r["id"] for spin_record in spins for r in started_during(hellos, spin_record)}
    assert len(meanwhile) >= 5, (spins, hellos)


# -- declared error status and WASI preopens --------------------------------------------------


def test_declared_error_status_for_plugin_errors(client: httpx.Client) -> None:
    name = plugin(client, "errors-400", ERRORS, export="void", error_status=422)
    assert assert_error(invoke(client, name, export="error_return"), 422, "guest_error")
    assert assert_error(invoke(client, name, export="nonzero"), 422, "guest_error")
    # a trap is not something the plugin reported: still a 500
    assert_error(invoke(client, name, export="trap"), 500, "guest_trap")


FILES = FIXTURES / "extism_files.wasm"


def test_allowed_path_is_a_folder_of_the_function(client: httpx.Client, api_server) -> None:
    name = unique("files")
    r = deploy(
        client, name, FILES, abi="extism", export="note", wasi="true", allowed_path="store:/data"
    )
    assert r.status_code == 201, r.text
    resp = invoke(client, name, b"kept on disk")
    assert resp.status_code == 200, resp.text
    assert resp.content == b"kept on disk"
    on_host = api_server.data_dir / "files" / name / "store" / "note.txt"
    assert on_host.read_bytes() == b"kept on disk"


def test_read_only_allowed_path_refuses_writes(client: httpx.Client) -> None:
    name = unique("files-ro")
    r = deploy(
        client, name, FILES, abi="extism", export="note", wasi="true", allowed_path="ro:ro:/data"
    )
    assert r.status_code == 201, r.text
    message = assert_error(invoke(client, name, b"x"), 500, "guest_error")
    assert "cannot open /data/note.txt for writing" in message


@pytest.mark.parametrize("entry", ["../escape:/data", "/etc:/data", "a/../../b:/data"])
def test_allowed_path_cannot_leave_the_function_folder(client: httpx.Client, entry: str) -> None:
    r = deploy(
        client, unique("files-bad"), FILES, abi="extism", export="note", wasi="true",
        allowed_path=entry,
    )  # fmt: skip
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_no_preopen_without_a_grant(client: httpx.Client) -> None:
    name = unique("files-none")
    assert deploy(client, name, FILES, abi="extism", export="note", wasi="true").status_code == 201
    message = assert_error(invoke(client, name, b"x"), 500, "guest_error")
    assert "cannot open" in message


# -- multi-module functions ------------------------------------------------------------------

MATH_WAT = FIXTURES / "extism_math.wat"
LINKED_MAIN = FIXTURES / "extism_linked_main.wat"


def deploy_linked(client: httpx.Client, name: str, extras: dict[str, bytes]) -> httpx.Response:
    files = [("file", ("main.wat", LINKED_MAIN.read_bytes(), "application/octet-stream"))]
    files += [("module", (f"{n}.wat", b, "application/octet-stream")) for n, b in extras.items()]
    data = {"name": name, "abi": "extism", "export": "run", "module_name": list(extras)}
    return client.post("/api/v1/functions", data=data, files=files)


def test_linked_module_is_called_by_the_main_module(client: httpx.Client, api_server) -> None:
    name = unique("linked")
    r = deploy_linked(client, name, {"math": MATH_WAT.read_bytes()})
    assert r.status_code == 201, r.text
    assert set(r.json()["active_version"]["spec"]["modules"]) == {"math"}
    resp = invoke(client, name, b"abcd")
    assert resp.status_code == 200, resp.text
    assert int.from_bytes(resp.content, "little") == 5  # add_one(input_length)
    blobs = api_server.data_dir / "blobs" / "sha256"
    before = {p.name for p in blobs.rglob("*") if p.is_file()}
    assert client.delete(f"/api/v1/functions/{name}").status_code == 200
    after = {p.name for p in blobs.rglob("*") if p.is_file()}
    assert len(before - after) == 2  # main and linked module both collected


def test_linked_module_missing_or_mistyped_is_refused(client: httpx.Client) -> None:
    r = deploy_linked(client, unique("linked-none"), {})
    assert r.status_code == 422 and "math.add_one" in r.json()["error"]["message"]
    wrong = b'(module (func (export "add_one") (param i32) (result i32) (local.get 0)))'
    r = deploy_linked(client, unique("linked-wrong"), {"math": wrong})
    assert r.status_code == 422 and "math.add_one" in r.json()["error"]["message"]
