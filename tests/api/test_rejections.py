"""Every kind of bad input gets its own error code and HTTP status, and a rejected deploy
stores nothing: no function, no version, no blob, no compiled artifact."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.api.support import (
    FIXTURES,
    GCD_WASM,
    GCD_WAT,
    HELLO_WASM,
    assert_error,
    deploy,
    deployed,
    files_under,
    function_names,
    invoke,
    result_of,
    unique,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

MAX_BODY = 1024
MAX_MODULE = 32 * 1024  # the bundled examples (~25 KiB) still fit


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "WASMLET_MAX_BODY_BYTES": str(MAX_BODY),
        "WASMLET_MAX_MODULE_BYTES": str(MAX_MODULE),
    }
    with ServerProcess(tmp_path_factory.mktemp("limits") / "data", examples=True, env=env) as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@contextlib.contextmanager
def nothing_stored(client: httpx.Client, server: ServerProcess) -> Iterator[None]:
    """The function list, its versions, the blob store and the compile cache are unchanged."""
    before = client.get("/api/v1/functions").json()
    blobs = files_under(server.data_dir / "blobs" / "sha256")
    cache = files_under(server.data_dir / "cache")
    yield
    after = client.get("/api/v1/functions").json()
    assert after == before, "a rejected deploy changed the function list"
    assert files_under(server.data_dir / "blobs" / "sha256") == blobs, "a blob was written"
    assert files_under(server.data_dir / "cache") == cache, "a compiled artifact was written"


def _wasm_with_data(size: int) -> bytes:
    """A valid core module of roughly `size` bytes (most of it one data segment)."""
    return (
        f'(module (memory 1) (data (i32.const 0) "{"x" * size}")'
        ' (func (export "f") (result i32) (i32.const 1)))'
    ).encode()


REJECTED_MODULES = {
    "random-bytes": (os.urandom(512).replace(b"\0asm", b"junk"), "not a wasm module"),
    "wasm-magic-then-garbage": (b"\0asm\x01\0\0\0" + b"\xff" * 64, "invalid wasm"),
    "truncated-gcd-wasm": (GCD_WASM.read_bytes()[:100], "invalid wasm"),
    "wat-syntax-error": (b'(module (func (export "f") (result i32) (i32.const 1)', "WAT"),
    "wat-type-error": (b'(module (func (export "f") (result i32) (i64.const 1)))', "invalid"),
    "empty": (b"", "empty"),
}


@pytest.mark.parametrize("kind", sorted(REJECTED_MODULES))
def test_malformed_module_is_rejected(
    client: httpx.Client, server: ServerProcess, kind: str
) -> None:
    data, mention = REJECTED_MODULES[kind]
    name = unique("bad")
    with nothing_stored(client, server):
        assert_error(deploy(client, name, data), 422, "invalid_request", mention)
        # Through the raw blob upload too (an empty body is refused there as well).
        resp = client.post("/api/v1/blobs", content=data)
        assert_error(resp, 422, "invalid_request")
    assert_error(client.get(f"/api/v1/functions/{name}"), 404, "not_found")
    assert_error(invoke(client, name, []), 404, "not_found")


def test_unknown_import_is_named(client: httpx.Client, server: ServerProcess) -> None:
    with nothing_stored(client, server):
        resp = deploy(client, unique("imports"), FIXTURES / "needs_import.wat", export="run")
        assert_error(resp, 422, "invalid_request", "env.secret_host_fn")


def test_missing_export(client: httpx.Client, server: ServerProcess) -> None:
    with nothing_stored(client, server):
        resp = deploy(client, unique("noexport"), GCD_WAT, export="nope")
        assert_error(resp, 422, "invalid_request", "nope")


def test_module_that_does_not_fit_the_abi(client: httpx.Client, server: ServerProcess) -> None:
    with nothing_stored(client, server):
        # A core module has no _start for wasi-cgi...
        resp = deploy(client, unique("wrongabi"), GCD_WAT, abi="wasi-cgi")
        assert_error(resp, 422, "invalid_request", "_start")
        # ...an unknown ABI is named...
        resp = deploy(client, unique("wrongabi"), GCD_WAT, abi="cobol")
        assert_error(resp, 422, "invalid_request", "cobol")
        # ...and several candidate exports need a choice.
        resp = deploy(client, unique("ambiguous"), FIXTURES / "multi.wat")
        assert_error(resp, 422, "invalid_request", "export")


@pytest.mark.parametrize(
    "name", ["../etc", "UPPER", "a" * 64, "-dash-first", "a/b", "a..b", "spa ce", "é"]
)
def test_bad_function_names(client: httpx.Client, server: ServerProcess, name: str) -> None:
    with nothing_stored(client, server):
        assert_error(deploy(client, name, GCD_WAT), 422, "invalid_request", "name")
        resp = client.post(
            "/function/deploy",
            json={"function_name": name, "function_image": "gcd.wasm"},
        )
        assert_error(resp, 422, "invalid_request", "name")


def test_longest_valid_name_is_accepted(client: httpx.Client) -> None:
    name = "n" * 55 + unique("")[1:]  # 63 characters
    assert len(name) == 63
    deployed(client, name, GCD_WAT)
    assert result_of(invoke(client, name, [12, 18])) == 6
    assert client.delete(f"/api/v1/functions/{name}").status_code == 200


def test_bad_spec_values(client: httpx.Client, server: ServerProcess) -> None:
    with nothing_stored(client, server):
        for fields, status in [
            ({"timeout_ms": 0}, 422),
            ({"memory_mb": -1}, 422),
            ({"timeout_ms": 10**9}, 422),  # above the platform maximum
            ({"config": "NOEQUALS"}, 422),
        ]:
            resp = deploy(client, unique("spec"), GCD_WAT, **fields)
            assert_error(resp, status, "invalid_request")
        resp = client.post(
            "/api/v1/functions",
            data={"name": unique("spec"), "spec": "{not json"},
            files={"file": ("gcd.wat", GCD_WAT.read_bytes())},
        )
        assert_error(resp, 400, "invalid_request", "JSON")
        resp = deploy(client, unique("spec"), GCD_WAT, spec=["not", "an", "object"])
        assert_error(resp, 422, "invalid_request", "object")
        resp = deploy(client, unique("spec"), GCD_WAT, spec={"bogus_field": 1})
        assert_error(resp, 422, "invalid_request", "bogus_field")


def test_oversized_module(client: httpx.Client, server: ServerProcess) -> None:
    # Just under the limit is fine...
    small = _wasm_with_data(MAX_MODULE - 4096)
    name = unique("fits")
    deployed(client, name, small)
    assert result_of(invoke(client, name, [])) == 1
    # ...past it is 413, whether uploaded as WAT or as the binary, and nothing is kept.
    big = _wasm_with_data(MAX_MODULE + 1024)
    with nothing_stored(client, server):
        assert_error(deploy(client, unique("big"), big), 413, "payload_too_large")
        assert_error(client.post("/api/v1/blobs", content=big), 413, "payload_too_large")


def test_rejected_redeploy_keeps_the_function(client: httpx.Client, server: ServerProcess) -> None:
    name = unique("keep")
    deployed(client, name, GCD_WAT)
    with nothing_stored(client, server):
        assert_error(deploy(client, name, b"\0asm garbage"), 422, "invalid_request")
        assert_error(deploy(client, name, GCD_WAT, export="nope"), 422, "invalid_request")
    assert len(client.get(f"/api/v1/functions/{name}/versions").json()["versions"]) == 1
    assert result_of(invoke(client, name, [1071, 462])) == 21


def test_compat_deploy_rejections(client: httpx.Client, server: ServerProcess) -> None:
    import_dir = server.data_dir / "import"
    import_dir.mkdir(exist_ok=True)
    shutil.copy(HELLO_WASM, import_dir / "hello.wasm")
    (import_dir / "garbage.wasm").write_bytes(b"\0asm\x01\0\0\0\xff\xff")
    name = unique("compat")
    with nothing_stored(client, server):
        cases = [
            ({"function_image": "hello.wasm", "wasi_cap": False}, 422, "invalid_request", "wasi"),
            ({"function_image": "garbage.wasm"}, 422, "invalid_request", "invalid wasm"),
            ({"function_image": "../wasmlet.db"}, 422, "invalid_request", "import"),
            ({"function_image": "/etc/passwd"}, 422, "invalid_request", "import"),
            ({"function_image": "missing.wasm"}, 404, "not_found", "missing.wasm"),
            ({"function_image": "sha256:" + "0" * 64}, 404, "not_found", "sha256:"),
        ]
        for body, status, code, mention in cases:
            resp = client.post("/function/deploy", json={"function_name": name, **body})
            assert_error(resp, status, code, mention)
        resp = client.post("/function/deploy", json={"function_image": "hello.wasm"})
        assert_error(resp, 422, "invalid_request")
    assert name not in function_names(client)


def test_unknown_function(client: httpx.Client) -> None:
    name = unique("ghost")
    assert_error(invoke(client, name, [1, 2]), 404, "not_found", name)
    assert_error(client.get(f"/fn/{name}/x"), 404, "not_found", name)
    resp = client.post("/function/invoke", json={"function_name": name, "args": {}})
    assert_error(resp, 404, "not_found", name)
    assert_error(client.post("/function/query", json={"function_name": name}), 404, "not_found")
    assert_error(client.post("/function/delete", json={"function_name": name}), 404, "not_found")
    for path in ("", "/versions", "/invocations"):
        assert_error(client.get(f"/api/v1/functions/{name}{path}"), 404, "not_found")
    assert_error(client.delete(f"/api/v1/functions/{name}"), 404, "not_found")
    assert_error(
        client.patch(f"/api/v1/functions/{name}", json={"timeout_ms": 9}), 404, "not_found"
    )
    resp = client.post(f"/api/v1/functions/{name}/rollback", json={"digest": "sha256:00"})
    assert_error(resp, 404, "not_found")
    # A name that could never be valid is simply not found on the invoke routes.
    assert_error(client.post("/api/v1/functions/UPPER/invoke", json={}), 404, "not_found")


def test_unknown_export(client: httpx.Client) -> None:
    """An export the function does not have is not found (404 goes with `not_found`)."""
    assert_error(invoke(client, "gcd", [1, 2], export="nope"), 404, "not_found", "nope")
    assert_error(client.get("/fn/gcd/?a=1&b=2&export=nope"), 404, "not_found", "nope")
    resp = client.post("/function/invoke", json={"function_name": "gcd", "export": "nope"})
    assert resp.status_code == 404


def test_oversized_body(client: httpx.Client) -> None:
    big = b"x" * (2 * MAX_BODY)
    assert_error(client.post("/api/v1/functions/gcd/invoke", content=big), 413, "payload_too_large")
    assert_error(client.post("/fn/echo/", content=big), 413, "payload_too_large")
    assert_error(client.post("/function/invoke", content=big), 413, "payload_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(8):
            yield b"y" * (MAX_BODY // 4)

    assert_error(client.post("/fn/echo/", content=chunked()), 413, "payload_too_large")
    # Under the limit is fine.
    fits = b"z" * (MAX_BODY - 24)
    resp = client.post("/fn/echo/", content=fits)
    assert resp.status_code == 200
    assert resp.content == fits


def test_invalid_json(client: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    for body in (b'{"args": [1, 2', b"not json at all", b"\xff\xfe"):
        resp = client.post("/api/v1/functions/gcd/invoke", content=body, headers=headers)
        assert_error(resp, 400, "invalid_request", "JSON")
        resp = client.post("/function/invoke", content=body, headers=headers)
        assert_error(resp, 400, "invalid_request", "JSON")
    resp = client.patch("/api/v1/functions/gcd", content=b"{bad", headers=headers)
    assert_error(resp, 400, "invalid_request")
    # Well-formed JSON that does not fit the function is 422.
    for args in ([1], [1, 2, 3], ["one", 2], {"a": 1}, {"a": 1, "b": 2, "c": 3}, [2**40, 1]):
        assert_error(invoke(client, "gcd", args), 422, "invalid_request")
    resp = client.post("/function/invoke", json={"args": [1, 2]})
    assert_error(resp, 422, "invalid_request", "function_name")
    # None of these changed the function.
    assert result_of(invoke(client, "gcd", [1071, 462])) == 21
    assert len(client.get("/api/v1/functions/gcd/versions").json()["versions"]) == 1
