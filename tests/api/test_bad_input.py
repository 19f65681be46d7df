"""Hostile and broken input beyond tests/api/test_rejections.py: compile-time bombs, modules
that could never run, truncated and foreign binaries, WAT errors, hostile names, invalid
JSON and wrong content types on every route that takes a body, oversized headers and
bodies, and bodies that trickle in (slowloris). Each gets a clear 4xx with its error code,
nothing is stored, and the server keeps serving everyone else."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.api.support import (
    GCD_WASM,
    GCD_WAT,
    assert_error,
    deploy,
    deployed,
    files_under,
    invoke,
    result_of,
    unique,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

MAX_MODULE = 4 * 1024 * 1024
MAX_MEMORY_MB = 256
BODY_TIMEOUT_MS = 2000
HEADER_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "WASMLET_MAX_MODULE_BYTES": str(MAX_MODULE),
        "WASMLET_MAX_MEMORY_MB": str(MAX_MEMORY_MB),
        "WASMLET_BODY_TIMEOUT_MS": str(BODY_TIMEOUT_MS),
        "WASMLET_HEADER_TIMEOUT_MS": str(HEADER_TIMEOUT_MS),
    }
    with ServerProcess(tmp_path_factory.mktemp("bad") / "data", examples=True, env=env) as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@contextlib.contextmanager
def nothing_stored(client: httpx.Client, server: ServerProcess) -> Iterator[None]:
    """No function, version, blob or compiled artifact appears, and the log shows no
    unhandled exception."""
    before = client.get("/api/v1/functions").json()
    blobs = files_under(server.data_dir / "blobs")
    cache = files_under(server.data_dir / "cache")
    logged = server.log_path.stat().st_size
    yield
    assert client.get("/api/v1/functions").json() == before, "the function list changed"
    assert files_under(server.data_dir / "blobs") == blobs, "a blob was written"
    assert files_under(server.data_dir / "cache") == cache, "a compiled artifact was written"
    with server.log_path.open("rb") as log:
        log.seek(logged)
        new = log.read().decode(errors="replace")
    assert "Traceback" not in new, new[-3000:]


def gcd_versions(client: httpx.Client) -> int:
    return len(client.get("/api/v1/functions/gcd/versions").json()["versions"])


# -- wasm binaries built byte by byte ------------------------------------------------------


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + _leb(len(payload)) + payload


def many_functions(count: int) -> bytes:
    """A valid module of `count` empty functions `() -> ()`, the first exported as `f`:
    4 bytes per function, ~65 us of compiling each."""
    body = b"\x02\x00\x0b"  # size 2: no locals, end
    return (
        b"\0asm\x01\0\0\0"
        + _section(1, b"\x01\x60\x00\x00")  # one type: () -> ()
        + _section(3, _leb(count) + b"\x00" * count)  # every function has type 0
        + _section(7, b"\x01\x01f\x00\x00")  # export "f" = function 0
        + _section(10, _leb(count) + body * count)
    )


def data_module(size: int, pages: int) -> bytes:
    """WAT: a memory of `pages` pages, a `size`-byte data segment at 0, and
    `peek(i) -> byte i` so an invocation shows the data is there."""
    return (
        f'(module (memory {pages}) (data (i32.const 0) "{"ab" * (size // 2)}")'
        ' (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0))))'
    ).encode()


# -- compile-time bombs and modules that could never run -----------------------------------


def test_many_functions_are_refused_before_compiling(
    client: httpx.Client, server: ServerProcess
) -> None:
    """100k empty functions are 0.4 MB but ~6-20 s of compiling on a 2-core machine:
    refused by the function-count rule (a compile error would read differently), which runs
    before compiling (tests/registry/test_deploy.py shows the compiler is never called)."""
    bomb = many_functions(100_000)
    assert len(bomb) < MAX_MODULE
    as_text = ("(module " + "(func)" * 100_000 + ")").encode()
    with nothing_stored(client, server):
        for data in (bomb, as_text):
            resp = deploy(client, unique("bomb"), data)
            assert_error(resp, 422, "invalid_request", "100000 functions", "max_module_functions")
        resp = client.post("/api/v1/blobs", content=bomb)
        assert_error(resp, 422, "invalid_request", "100000 functions")
        # One function over the limit is enough.
        resp = deploy(client, unique("bomb"), many_functions(50_001))
        assert_error(resp, 422, "invalid_request", "50001 functions", "limit is 50000")


def test_a_module_with_many_functions_under_the_limit_deploys(client: httpx.Client) -> None:
    name = unique("many")
    view = deployed(client, name, many_functions(2000), export="f")
    assert view["active_version"]["abi"] == "core"
    assert result_of(invoke(client, name, [])) is None
    assert client.delete(f"/api/v1/functions/{name}").status_code == 200


def test_huge_declared_memory_is_refused(client: httpx.Client, server: ServerProcess) -> None:
    """A memory bigger than any function may have would fail every instantiation."""
    cases = {
        b"(module (memory 65536))": "4096 MiB",  # 4 GiB, the most a 32-bit memory can be
        b"(module (memory 4097 5000))": "257 MiB",  # one page over max_memory_mb
        b"(module (memory i64 1000000000))": "62500000 MiB",  # 64-bit: ~60 TiB
        b"(module (memory 1) (memory 70000))": "memory 1",  # the second memory
    }
    with nothing_stored(client, server):
        for wat, mention in cases.items():
            resp = deploy(client, unique("mem"), wat)
            assert_error(resp, 422, "invalid_request", mention, f"at most {MAX_MEMORY_MB} MiB")
    # The largest memory a function may have is fine (it runs with a matching limit).
    name = unique("mem")
    page_limit = MAX_MEMORY_MB * 16
    wat = f'(module (memory {page_limit}) (func (export "f") (result i32) (memory.size)))'
    deployed(client, name, wat.encode(), memory_mb=MAX_MEMORY_MB)
    assert result_of(invoke(client, name, [])) == page_limit
    assert client.delete(f"/api/v1/functions/{name}").status_code == 200


def test_data_segment_outside_its_memory_is_refused(
    client: httpx.Client, server: ServerProcess
) -> None:
    cases = {
        b'(module (memory 1) (data (i32.const 65530) "0123456789"))': "10 B at offset 65530",
        b'(module (memory 1) (data (i32.const -1) "x"))': "offset 4294967295",
        b'(module (memory 0) (data (i32.const 0) "x"))': "initial size is 0 B",
        # Imported memories come first: memory 1 is the one the module defines.
        b'(module (import "env" "m" (memory 1)) (memory 0) (data (memory 1) (i32.const 0) "x"))': (
            "memory 1"
        ),
    }
    with nothing_stored(client, server):
        for wat, mention in cases.items():
            resp = deploy(client, unique("data"), wat)
            assert_error(resp, 422, "invalid_request", "data segment", mention, "never")


def test_huge_data_segment(client: httpx.Client, server: ServerProcess) -> None:
    """A data segment is plain bytes: a big one compiles fast and is bounded by the module
    size limit alone."""
    name = unique("bigdata")
    deployed(client, name, data_module(3 * 1024 * 1024, pages=64), export="peek")
    assert result_of(invoke(client, name, [1])) == ord("b")
    assert client.delete(f"/api/v1/functions/{name}").status_code == 200
    with nothing_stored(client, server):
        resp = deploy(client, unique("bigdata"), data_module(MAX_MODULE + 2, pages=128))
        assert_error(resp, 413, "payload_too_large")


# -- truncated, foreign and malformed modules -----------------------------------------------


def test_truncated_binaries(client: httpx.Client, server: ServerProcess) -> None:
    whole = GCD_WASM.read_bytes()
    cases = [
        (whole[:4], "truncated"),  # the magic alone
        (whole[:6], "truncated"),
        (whole[:9], "invalid wasm module"),  # a section id and nothing else
        (whole[: len(whole) // 2], "invalid wasm module"),
        (whole[:-1], "invalid wasm module"),  # one byte short
    ]
    with nothing_stored(client, server):
        for data, mention in cases:
            assert_error(deploy(client, unique("cut"), data), 422, "invalid_request", mention)
            assert_error(client.post("/api/v1/blobs", content=data), 422, "invalid_request")


def test_foreign_binaries(client: httpx.Client, server: ServerProcess) -> None:
    cases = [
        (b"\0asm\x0d\0\x01\0", "component"),  # a component's header
        (b"\0asm\x02\0\0\0" + GCD_WASM.read_bytes()[8:], "unsupported wasm binary version"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 24, "not a wasm module"),  # and not UTF-8 text
        (b"\x7fELF\x02\x01\x01\0" + b"\0" * 56, "WAT syntax error"),  # ASCII, so read as WAT
        (b"\xef\xbb\xbf(module)", "WAT syntax error"),  # a byte-order mark is not WAT
    ]
    with nothing_stored(client, server):
        for data, mention in cases:
            assert_error(deploy(client, unique("foreign"), data), 422, "invalid_request", mention)


def test_wat_syntax_errors_say_where(client: httpx.Client, server: ServerProcess) -> None:
    padding = ";; comment\n" * 20_000  # the error comes after 200 KB of valid text
    cases = {
        b'(module (func (export "f")': "<anon>:1:27",  # unbalanced
        b"(module (func (i32.konst 1) drop))": "<anon>:1:16",  # unknown instruction
        b'(module (data "\\zz"))': "<anon>:1:17",  # bad string escape
        b"(module (func\0))": "<anon>:1:14",  # NUL byte
        b"  \n\t ": "<anon>:2:3",  # whitespace only
        (padding + "(module (func (result i32) (i32.const)))").encode(): "<anon>:20001:38",
    }
    with nothing_stored(client, server):
        for data, where in cases.items():
            resp = deploy(client, unique("wat"), data, filename="m.wat")
            assert_error(resp, 422, "invalid_request", "WAT syntax error", f"(at {where})")


def test_upload_shapes(client: httpx.Client, server: ServerProcess) -> None:
    """A deploy is multipart with a `name` field and a `file` part; anything else is 422."""
    wat = GCD_WAT.read_bytes()
    name = unique("shape")
    with nothing_stored(client, server):
        cases = [
            (client.post("/api/v1/functions", json={"name": name, "file": wat.decode()}), "name"),
            (client.post("/api/v1/functions", data={"name": name}), "file"),
            (client.post("/api/v1/functions", files={"file": ("m.wat", wat)}), "name"),
            (
                client.post(
                    "/api/v1/functions",
                    content=wat,
                    headers={"content-type": "application/wasm"},
                ),
                "name",
            ),
            (
                client.post("/api/v1/functions", data={"name": name}, files={"file": ("", wat)}),
                "file",
            ),
            (deploy(client, name, GCD_WAT, timeout_ms="soon"), "timeout_ms"),
            (deploy(client, name, GCD_WAT, reuse="maybe"), "reuse"),
        ]
        for resp, mention in cases:
            assert_error(resp, 422, "invalid_request", mention)
        # A multipart body that breaks off mid-part: the unfinished part does not count.
        resp = client.post(
            "/api/v1/functions",
            content=b'--xx\r\nContent-Disposition: form-data; name="name"\r\n\r\nabc',
            headers={"content-type": "multipart/form-data; boundary=xx"},
        )
        assert_error(resp, 422, "invalid_request", "name: Field required")
        # A linked module over the size limit is 413, like the main one.
        resp = client.post(
            "/api/v1/functions",
            data={"name": name, "abi": "extism", "module_name": "big"},
            files=[
                ("file", ("m.wat", wat)),
                ("module", ("big.wat", data_module(MAX_MODULE + 2, pages=128))),
            ],
        )
        assert_error(resp, 413, "payload_too_large", "big")


# -- names --------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "nul": "gcd\x00x",
    "percent-nul": "gcd%00",
    "traversal": "../../etc/passwd",
    "encoded-traversal": "..%2f..%2fetc",
    "backslash": "..\\gcd",
    "dot": ".",
    "dotdot": "..",
    "fullwidth": "\uff47\uff43\uff44",  # fullwidth gcd: NFKC folds it to gcd
    "cyrillic-es": "g\u0441d",  # a Cyrillic es for the c: looks like gcd
    "dotless-i": "\u0131",
    "zero-width": "gcd\u200b",
    "rtl-override": "\u202egcd",
    "combining": "gcd\u0301",
    "newline": "gcd\n",
    "space": " gcd",
    "64-chars": "a" * 64,
    "10k-chars": "a" * 10_000,
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_NAMES))
def test_hostile_names_are_refused_everywhere(
    client: httpx.Client, server: ServerProcess, kind: str
) -> None:
    """No entry point accepts the name, none confuses it with `gcd`, nothing is stored."""
    name = HOSTILE_NAMES[kind]
    quoted = segment(name)
    versions = gcd_versions(client)
    with nothing_stored(client, server):
        assert_error(deploy(client, name, GCD_WAT), 422, "invalid_request", "name")
        resp = client.post("/function/deploy", json={"function_name": name, "function_image": "x"})
        assert_error(resp, 422, "invalid_request", "name")
        resp = client.post("/api/v1/routes", json={"path": f"/{unique('r')}", "function": name})
        assert_error(resp, 422, "invalid_request", "function")
        for method, path, body in [
            ("GET", f"/api/v1/functions/{quoted}", None),
            ("PATCH", f"/api/v1/functions/{quoted}", {"timeout_ms": 100}),
            ("DELETE", f"/api/v1/functions/{quoted}", None),
            ("GET", f"/api/v1/functions/{quoted}/versions", None),
            ("PUT", f"/api/v1/functions/{quoted}/secrets/KEY", {"value": "v"}),
            ("GET", f"/api/v1/kv/{quoted}/keys", None),
            ("PUT", f"/api/v1/kv/{quoted}/key", None),
        ]:
            resp = client.request(method, path, json=body)
            # 422 for a name the route reads; 404 when the encoded name does not even
            # form one path segment (a decoded `/` in `..%2f..%2fetc`).
            assert resp.status_code in (404, 422), f"{method} {path}: {resp.text}"
            assert_error(resp, resp.status_code, _code(resp.status_code))
        assert_error(invoke(client, quoted, [1, 2]), 404, "not_found")
        resp = client.post("/function/invoke", json={"function_name": name, "args": [1, 2]})
        assert_error(resp, 404, "not_found")
    assert gcd_versions(client) == versions


def test_dot_segments_reach_the_server_unnormalised(server: ServerProcess) -> None:
    """httpx folds `..` out of URLs; a raw client does not, and the server must not
    treat them as navigation either."""
    for path in (
        "/api/v1/functions/..",
        "/api/v1/functions/./versions",
        "/api/v1/functions/../functions/gcd",
        "/fn/../api/v1/functions",
        "/api/v1/kv/../keys",
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + auth(server)
        reply = raw_request(server, request, wait_close=0)
        assert reply.status in (404, 422), (path, reply)
        assert json.loads(reply.body)["error"]["code"] == _code(reply.status), (path, reply)


def segment(name: str) -> str:
    """`name` as one URL path segment, dots too (httpx would fold `.` and `..` away)."""
    return urllib.parse.quote(name, safe="").replace(".", "%2E")


def _code(status: int) -> str:
    return {404: "not_found", 413: "payload_too_large"}.get(status, "invalid_request")


# -- invalid JSON and wrong content types ------------------------------------------------

JSON_ROUTES = [
    ("POST", "/api/v1/routes"),
    ("PUT", "/api/v1/functions/gcd/secrets/KEY"),
    ("POST", "/api/v1/functions/gcd/rollback"),
    ("PATCH", "/api/v1/functions/gcd"),
    ("POST", "/api/v1/kv/global/counter/incr"),
    ("POST", "/function/deploy"),
    ("POST", "/function/delete"),
    ("POST", "/function/query"),
    ("POST", "/function/invoke"),
    ("POST", "/api/v1/keys"),
    ("PUT", "/api/v1/namespaces/ctns/quota"),
]
BROKEN_JSON = {
    "cut-off": b'{"function": "gcd", "path": ',
    "not-json": b"hello",
    "bad-utf8": b'{"function": "\xff\xfe"}',
    "trailing-garbage": b'{"function": "gcd"} }',
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "huge-integer": b'{"by": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_invalid_json_is_400_on_every_json_route(
    client: httpx.Client, server: ServerProcess, method: str, path: str
) -> None:
    versions = gcd_versions(client)
    with nothing_stored(client, server):
        for kind, body in BROKEN_JSON.items():
            resp = client.request(
                method, path, content=body, headers={"content-type": "application/json"}
            )
            assert resp.status_code == 400, f"{kind}: {resp.status_code} {resp.text}"
            assert_error(resp, 400, "invalid_request")
    assert gcd_versions(client) == versions
    assert result_of(invoke(client, "gcd", [1071, 462])) == 21


def test_deeply_nested_json_to_a_core_function_is_400(client: httpx.Client) -> None:
    """json.loads raises RecursionError, not ValueError, past ~1000 levels of nesting."""
    body = b'{"args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = client.post("/api/v1/functions/gcd/invoke", content=body)
    assert_error(resp, 400, "invalid_request", "JSON")


def valid_bodies(client: httpx.Client) -> dict[str, dict]:
    """For each JSON route but the hot path's, a body it would accept, so that a 422 can only
    mean the body was not read as JSON."""
    gcd = client.get("/api/v1/functions/gcd").json()["active_version"]
    return {
        "/api/v1/routes": {"path": "/ct", "function": "gcd"},
        "/api/v1/functions/gcd/secrets/KEY": {"value": "v"},
        "/api/v1/functions/gcd/rollback": {"digest": gcd["digest"]},
        "/api/v1/functions/gcd": {"timeout_ms": 100},
        "/api/v1/kv/global/counter/incr": {"by": 2},
        "/function/deploy": {"function_name": unique("ct"), "function_image": gcd["module_digest"]},
        "/function/delete": {"function_name": unique("ct")},
        "/function/query": {"function_name": "gcd"},
        "/api/v1/keys": {"scopes": ["read"], "name": "ct"},
        "/api/v1/namespaces/ctns/quota": {"burst": 5},
    }


def side_effects(client: httpx.Client) -> dict[str, object]:
    """What the JSON routes would change, were they to accept a body."""
    return {
        "routes": client.get("/api/v1/routes").json(),
        "secrets": client.get("/api/v1/functions/gcd/secrets").json()["secrets"],
        "counter": client.get("/api/v1/kv/global/counter").status_code,
        "keys": len(client.get("/api/v1/keys").json()["keys"]),
        "quota": client.get("/api/v1/namespaces/ctns/quota").json(),
        "gcd": client.get("/api/v1/functions/gcd/versions").json(),
    }


@pytest.mark.parametrize(("method", "path"), [r for r in JSON_ROUTES if r[1] != "/function/invoke"])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
def test_json_routes_refuse_other_content_types(
    client: httpx.Client, server: ServerProcess, method: str, path: str, content_type: str | None
) -> None:
    """A valid JSON body labelled as something else (or not labelled) is not read as JSON:
    422, and nothing changes."""
    body = json.dumps(valid_bodies(client)[path]).encode()
    headers = {"content-type": content_type} if content_type else {}
    before = side_effects(client)
    with nothing_stored(client, server):
        resp = client.request(method, path, content=body, headers=headers)
        assert_error(resp, 422, "invalid_request")
    assert side_effects(client) == before


def test_invocations_ignore_the_content_type_label(client: httpx.Client) -> None:
    """The invoke routes hand the body to the function; a core function reads it as JSON
    whatever it is labelled, and answers 400 when it is not JSON."""
    args = b'{"args": [1071, 462]}'
    for content_type in ("application/json", "text/plain", "application/octet-stream", ""):
        headers = {"content-type": content_type}
        resp = client.post("/api/v1/functions/gcd/invoke", content=args, headers=headers)
        assert result_of(resp) == 21
    resp = client.post("/api/v1/functions/gcd/invoke", data={"args": "1,2"})
    assert_error(resp, 400, "invalid_request", "JSON")
    resp = client.post("/function/invoke", data={"function_name": "gcd"})
    assert_error(resp, 400, "invalid_request", "JSON")


# -- raw HTTP -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after answering
    elapsed: float


def auth(server: ServerProcess) -> bytes:
    """The header line that authenticates as the tests' client does (none without auth)."""
    with server.client() as c:
        value = c.headers.get("authorization")
    return f"Authorization: {value}\r\n".encode() if value else b""


def raw_request(
    server: ServerProcess,
    head: bytes,
    body: bytes = b"",
    *,
    trickle: float = 0,
    timeout: float = 15,
    wait_close: float = 1,
) -> Reply:
    """Send `head` (request line and headers, without the blank line), then `body`, one
    byte every `trickle` seconds if given; read the answer, then wait up to `wait_close`
    seconds for the server to close the connection (0: do not wait)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head + b"\r\n")
        data = bytearray()
        if not trickle:
            sock.sendall(body)
        else:
            sock.settimeout(trickle)
            for i in range(len(body)):
                if b"\r\n\r\n" in data:
                    break  # answered before the body was complete
                try:
                    sock.sendall(body[i : i + 1])
                    data += sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break  # closed by the server
        sock.settimeout(max(0.1, timeout - (time.monotonic() - started)))
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                status, headers = _parse_head(bytes(data[:head_end]))
                length = int(headers.get("content-length", "0"))
                if len(data) >= head_end + 4 + length:
                    break
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before a full answer: {bytes(data)!r}")
            data += chunk
        elapsed = time.monotonic() - started
        body_start = head_end + 4
        closed = False
        if wait_close:
            sock.settimeout(wait_close)
            try:
                closed = sock.recv(65536) == b""
            except ConnectionResetError:  # a byte we sent after it closed: reset, still closed
                closed = True
            except TimeoutError:
                pass
        return Reply(
            status, headers, bytes(data[body_start : body_start + length]), closed, elapsed
        )


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers


def test_oversized_headers(client: httpx.Client, server: ServerProcess) -> None:
    """A header block over 64 KiB (one big header, many small ones, or a huge key) is
    answered 431 and the connection closed; the request line (the URL) stops at 64 KiB
    with 400 from the parser. Either way the server keeps serving."""
    big = "a" * 100_000
    for headers in ({"X-Big": big}, {f"X-H{i}": "v" * 20 for i in range(3000)}):
        reply = raw_request(
            server,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()),
        )
        assert reply.status == 431, reply
        assert json.loads(reply.body)["error"]["code"] == "invalid_request"
        assert reply.closed
    many = {f"X-H{i}": "v" for i in range(1000)}  # large, but within the limit
    assert client.get("/healthz", headers=many).status_code == 200
    resp = client.post("/api/v1/functions/gcd/invoke", json={"args": [12, 18]}, headers={"X": "y"})
    assert result_of(resp) == 6
    reply = raw_request(server, f"GET /healthz?{big} HTTP/1.1\r\nHost: x\r\n".encode())
    assert reply.status in (400, 431)
    assert reply.closed
    assert client.get("/healthz").status_code == 200


def test_slow_headers_are_cut_off(server: ServerProcess) -> None:
    """A header block still incomplete HEADER_TIMEOUT_MS after the request began: 408."""
    started = time.monotonic()
    # The socket's timeout only guards against a hang; the 408 shows the deadline ended it.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408"), data
    # Not before the deadline (a lower bound: a loaded machine only answers later).
    assert elapsed >= HEADER_TIMEOUT_MS / 1000 - 0.2, elapsed


def test_slow_headers_do_not_hold_up_others(client: httpx.Client, server: ServerProcess) -> None:
    """Connections stuck halfway through their headers cost the server a socket each, not a
    worker: everyone else is served as usual."""
    stuck = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"POST /api/v1/functions/gcd/invoke HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            stuck.append(sock)
        # Answered while all 50 are still stuck (none has had its 408 or been closed yet),
        # not once the header deadline has freed whatever they held.
        answered_meanwhile = 0
        for _ in range(5):
            assert result_of(invoke(client, "gcd", [1071, 462])) == 21
            if not select.select(stuck, [], [], 0)[0]:
                answered_meanwhile += 1
        assert answered_meanwhile >= 1
    finally:
        for sock in stuck:
            sock.close()
    assert client.get("/healthz").status_code == 200


def test_oversized_declared_bodies_are_refused_before_reading(server: ServerProcess) -> None:
    """A Content-Length over the limit is answered at once: the body is never read."""
    for path in ("/api/v1/functions/gcd/invoke", "/fn/echo/", "/api/v1/kv/global/big"):
        method = "PUT" if "/kv/" in path else "POST"
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {10**12}\r\n".encode()
            + auth(server)
        )
        reply = raw_request(server, head, timeout=5, wait_close=0)
        assert reply.status == 413, (path, reply)
        # No body byte is ever sent: a server that waited for the body would have answered
        # 408 at body_timeout_ms instead.
        assert json.loads(reply.body)["error"]["code"] == "payload_too_large"


def _multipart(name: str, wat: bytes) -> tuple[bytes, bytes]:
    boundary = "wasmletboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.wat"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + wat
        + f"\r\n--{boundary}--\r\n".encode()
    )
    header = f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
    return header, body


def test_slow_bodies_end_at_the_deadline(client: httpx.Client, server: ServerProcess) -> None:
    """Bodies trickled one byte every 50 ms (slowloris) on every kind of route end with
    408 at body_timeout_ms, the connection closed; meanwhile everyone else is served."""
    name = unique("slow")
    form_header, form = _multipart(name, GCD_WAT.read_bytes())
    key = auth(server)
    json_body = b'{"args": [1071, 462]}' + b" " * 200

    def head(method: str, path: str, extra: bytes) -> bytes:
        return f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + key + extra

    length = f"Content-Length: {len(json_body)}\r\n".encode()
    slow = {
        "invoke": (head("POST", "/api/v1/functions/gcd/invoke", length), json_body),
        "compat-invoke": (head("POST", "/function/invoke", length), json_body),
        "gateway-chunked": (
            head("POST", "/fn/echo/", b"Transfer-Encoding: chunked\r\n"),
            b"1\r\nx\r\n" * 200 + b"0\r\n\r\n",
        ),
        "deploy": (
            head(
                "POST",
                "/api/v1/functions",
                form_header + f"Content-Length: {len(form)}\r\n".encode(),
            ),
            form,
        ),
        "blob": (head("POST", "/api/v1/blobs", length), json_body),
        "kv-put": (head("PUT", "/api/v1/kv/global/slow", length), json_body),
        "patch-json": (
            head("PATCH", "/api/v1/functions/gcd", length + b"Content-Type: application/json\r\n"),
            json_body,
        ),
    }
    versions = gcd_versions(client)
    with nothing_stored(client, server), ThreadPoolExecutor(len(slow)) as pool:
        futures = {
            kind: pool.submit(raw_request, server, h, b, trickle=0.05)
            for kind, (h, b) in slow.items()
        }
        # While they trickle, other clients get answers (before any trickle has ended).
        answered_meanwhile = 0
        for _ in range(10):
            assert result_of(invoke(client, "gcd", [1071, 462])) == 21
            if not any(f.done() for f in futures.values()):
                answered_meanwhile += 1
            time.sleep(0.1)
        assert answered_meanwhile >= 1
        for kind, future in futures.items():
            reply = future.result()
            assert reply.status == 408, (kind, reply)
            error = json.loads(reply.body)["error"]
            assert error["code"] == "invalid_request", (kind, error)
            assert "body_timeout_ms" in error["message"], (kind, error)
            assert reply.closed, f"{kind}: the connection stayed open"
            # Not before the deadline (a lower bound: a loaded machine only answers later).
            assert reply.elapsed > BODY_TIMEOUT_MS / 1000 - 0.1, (kind, reply.elapsed)
    assert client.get("/api/v1/kv/global/slow").status_code == 404
    assert gcd_versions(client) == versions


def test_a_slow_body_within_the_deadline_is_fine(server: ServerProcess) -> None:
    body = b'{"args": [1071, 462]}'
    head = (
        b"POST /api/v1/functions/gcd/invoke HTTP/1.1\r\nHost: x\r\n"
        + auth(server)
        + f"Content-Length: {len(body)}\r\n".encode()
    )
    # ~0.4 s for 21 bytes: a fifth of the 2 s deadline, so a loaded client stays within it.
    reply = raw_request(server, head, body, trickle=0.02, wait_close=0.5)
    assert reply.status == 200, reply
    assert json.loads(reply.body) == {"result": 21}
    assert not reply.closed  # keep-alive as usual
