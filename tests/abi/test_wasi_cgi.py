"""The wasi-cgi ABI: CGI environment in, CGI response out, real guests through a pool."""

from __future__ import annotations

import pytest
import wasmtime

from tests.runtime.support import ECHO_WASM, FIXTURES, HELLO_WASM, make_pool, run
from wasmlet.abi import Invocation
from wasmlet.abi.wasi_cgi import WasiCgiAbi, cgi_environment, parse_cgi_response
from wasmlet.errors import GuestError, InvalidRequest
from wasmlet.runtime.module_info import describe
from wasmlet.runtime.pool import CallReport
from wasmlet.spec import FunctionSpec

OCTET = (b"content-type", b"application/octet-stream")

# A WASI command that writes its whole environment block (NUL-separated) to stdout.
ENV_DUMP_WAT = """
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 8192)))
    (i32.store (i32.const 8) (i32.const 8192))
    (i32.store (i32.const 12) (i32.load (i32.const 4)))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))
"""


# -- parse_cgi_response ---------------------------------------------------------------------


def test_headers_status_and_body() -> None:
    out = parse_cgi_response(
        b"Content-Type: text/plain\nStatus: 404 Not Found\nX-Thing:  a: b \n\nnothing\n\nhere"
    )
    assert out.status == 404
    assert out.headers == [(b"content-type", b"text/plain"), (b"x-thing", b"a: b")]
    assert out.body == b"nothing\n\nhere"


def test_header_names_lower_cased_and_content_type_defaulted() -> None:
    out = parse_cgi_response(b"X-Custom: Yes\n\n\x00\x01binary")
    assert out.status == 200
    assert out.headers == [(b"x-custom", b"Yes"), OCTET]
    assert out.body == b"\x00\x01binary"


@pytest.mark.parametrize(
    "raw",
    [
        b"just some text\nwith lines\n",
        b"no: header\nbut this line has none\n\nbody",
        b"",
        b'{"json": true}',
        b"bad name: x\n\nbody",
    ],
)
def test_no_header_block_is_all_body(raw: bytes) -> None:
    out = parse_cgi_response(raw)
    assert out.status == 200
    assert out.headers == [OCTET]
    assert out.body == raw


def test_location_without_status_redirects() -> None:
    out = parse_cgi_response(b"Location: /elsewhere\n\n")
    assert out.status == 302
    assert (b"location", b"/elsewhere") in out.headers
    explicit = parse_cgi_response(b"Status: 201\nLocation: /things/7\n\n")
    assert explicit.status == 201


@pytest.mark.parametrize("value", [b"abc", b"99", b"600 Too Big", b"", b"-1"])
def test_invalid_status_is_a_guest_error(value: bytes) -> None:
    with pytest.raises(GuestError, match="invalid CGI Status header"):
        parse_cgi_response(b"Status: " + value + b"\n\nbody")


def test_crlf_separators() -> None:
    out = parse_cgi_response(b"Content-Type: text/html\r\nStatus: 201 Created\r\n\r\n<p>hi</p>\r\n")
    assert out.status == 201
    assert out.headers == [(b"content-type", b"text/html")]
    assert out.body == b"<p>hi</p>\r\n"


def test_lf_headers_with_crlf_lines() -> None:
    out = parse_cgi_response(b"Content-Type: text/plain\r\n\nbody")
    assert out.headers == [(b"content-type", b"text/plain")]
    assert out.body == b"body"


def test_earliest_blank_line_ends_the_headers() -> None:
    out = parse_cgi_response(b"Content-Type: text/plain\n\nline one\r\n\r\nline two")
    assert out.headers == [(b"content-type", b"text/plain")]
    assert out.body == b"line one\r\n\r\nline two"


# -- cgi_environment ------------------------------------------------------------------------


def test_cgi_environment() -> None:
    inv = Invocation(
        method="PUT",
        path="/a/b",
        query="x=1&y=2",
        headers=[
            (b"content-type", b"text/plain"),
            (b"x-request-id", b"abc"),
            (b"user-agent", b"curl/8"),
            (b"authorization", b"Bearer secret"),
            (b"proxy-authorization", b"Basic xyz"),
        ],
        body=b"12345",
        server_name="example.com",
        server_port=8443,
        remote_addr="10.0.0.9",
    )
    env = dict(cgi_environment(inv, "fn", {"GREETING": "hi"}))
    expected = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "wasmlet",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "8443",
        "REQUEST_METHOD": "PUT",
        "SCRIPT_NAME": "/fn/fn",
        "PATH_INFO": "/a/b",
        "QUERY_STRING": "x=1&y=2",
        "REMOTE_ADDR": "10.0.0.9",
        "CONTENT_LENGTH": "5",
        "CONTENT_TYPE": "text/plain",
        "HTTP_X_REQUEST_ID": "abc",
        "HTTP_USER_AGENT": "curl/8",
        "GREETING": "hi",
    }
    for key, value in expected.items():
        assert env[key] == value, key
    assert "HTTP_AUTHORIZATION" not in env
    assert "HTTP_PROXY_AUTHORIZATION" not in env
    assert "HTTP_CONTENT_TYPE" not in env
    assert not any("secret" in v or "xyz" in v for v in env.values())


def test_granted_env_cannot_replace_cgi_variables() -> None:
    env = dict(cgi_environment(Invocation(method="GET"), "fn", {"REQUEST_METHOD": "EVIL"}))
    assert env["REQUEST_METHOD"] == "GET"


def test_minimal_request_environment() -> None:
    env = dict(cgi_environment(Invocation(), "f", {}))
    assert env["CONTENT_LENGTH"] == "0"
    assert env["CONTENT_TYPE"] == ""
    assert env["QUERY_STRING"] == ""
    assert not [k for k in env if k.startswith("HTTP_")]


def test_repeated_headers_are_combined() -> None:
    inv = Invocation(headers=[(b"accept", b"text/html"), (b"accept", b"application/json")])
    env = dict(cgi_environment(inv, "fn", {}))
    assert env["HTTP_ACCEPT"] == "text/html, application/json"


# -- the ABI itself -------------------------------------------------------------------------


def test_check_and_defaults(rt) -> None:
    abi = WasiCgiAbi()
    pool = make_pool(rt, HELLO_WASM)
    assert pool.spec.abi == "wasi-cgi"
    assert pool.spec.export == "_start"
    assert pool.reuse is False
    wasm = HELLO_WASM.read_bytes()
    info = describe(wasmtime.Module(rt.engine, wasm), wasm)
    assert abi.default_export(info) == "_start"
    base = pool.spec.model_dump()
    abi.check(info, FunctionSpec(**base))
    with pytest.raises(InvalidRequest, match="fresh instance per request"):
        abi.check(info, FunctionSpec(**{**base, "reuse": True}))
    with pytest.raises(InvalidRequest, match="exporting _start"):
        abi.check(info, FunctionSpec(**{**base, "export": "main"}))


def test_export_must_take_and_return_nothing(rt) -> None:
    wat = b'(module (func (export "_start") (param i32)))'
    wasm = bytes(wasmtime.wat2wasm(wat.decode()))
    info = describe(wasmtime.Module(rt.engine, wasm), wasm)
    spec = FunctionSpec(abi="wasi-cgi", export="_start", timeout_ms=1, memory_mb=1, reuse=False,
                        pool_size=1)  # fmt: skip
    with pytest.raises(InvalidRequest, match="must take and return nothing"):
        WasiCgiAbi().check(info, spec)


@pytest.fixture(scope="module")
def echo(rt):
    return make_pool(rt, ECHO_WASM, name="echo")


@pytest.fixture(scope="module")
def hello(rt):
    return make_pool(rt, HELLO_WASM, name="hello")


def test_echo_round_trip(echo) -> None:
    body = bytes(range(256)) * 300  # binary-safe, bigger than the guest's buffer
    report = CallReport()
    out = run(
        echo,
        report,
        method="PUT",
        path="/some/where",
        query="a=1&b=two",
        headers=[(b"content-type", b"application/x-test")],
        body=body,
    )
    assert out.status == 200
    headers = dict(out.headers)
    assert headers[b"content-type"] == b"application/x-test"
    assert headers[b"x-echo-method"] == b"PUT"
    assert headers[b"x-echo-path"] == b"/some/where"
    assert headers[b"x-echo-query"] == b"a=1&b=two"
    assert out.body == body
    assert report.logs == f"echo: {len(body)} bytes\n".encode()
    assert report.instantiated


def test_echo_empty_body(echo) -> None:
    out = run(echo, method="GET")
    assert out.status == 200
    assert out.body == b""
    assert dict(out.headers)[b"x-echo-method"] == b"GET"


def test_each_request_gets_a_fresh_instance(echo) -> None:
    before = echo.instantiations
    bodies = [f"request {i}".encode() for i in range(5)]
    assert [run(echo, body=b).body for b in bodies] == bodies
    assert echo.instantiations == before + 5


def test_hello_query_body_and_default(hello) -> None:
    out = run(hello, method="GET", query="name=Ada%20L")
    assert out.status == 200
    assert out.body == b"Hello, Ada L!\n"
    assert dict(out.headers)[b"content-type"] == b"text/plain; charset=utf-8"
    assert run(hello, method="POST", body=b"  Grace \n").body == b"Hello, Grace!\n"
    assert run(hello, method="GET").body == b"Hello, world!\n"


def test_hello_guest_status(hello) -> None:
    report = CallReport()
    out = run(hello, report, method="POST")
    assert out.status == 400
    assert out.body == b"missing name\n"
    assert report.logs == b"hello: missing name\n"


def test_guest_sees_exactly_the_cgi_and_granted_environment(rt) -> None:
    pool = make_pool(rt, ENV_DUMP_WAT, name="envdump", env={"GREETING": "hi", "MODE": "test"})
    out = run(
        pool,
        method="POST",
        query="q=1",
        headers=[(b"x-trace", b"t1"), (b"authorization", b"Bearer secret")],
        body=b"abc",
    )
    assert out.status == 200
    entries = [e for e in out.body.split(b"\0") if e]
    env = dict(e.decode().split("=", 1) for e in entries)
    assert env["GREETING"] == "hi"
    assert env["MODE"] == "test"
    assert env["REQUEST_METHOD"] == "POST"
    assert env["QUERY_STRING"] == "q=1"
    assert env["CONTENT_LENGTH"] == "3"
    assert env["SCRIPT_NAME"] == "/fn/envdump"
    assert env["HTTP_X_TRACE"] == "t1"
    assert "HTTP_AUTHORIZATION" not in env
    # Nothing from the host process leaks in.
    assert not {"PATH", "HOME", "WASMLET_CONFIG"} & set(env)
    assert set(env) == {k for k, _ in cgi_environment(
        Invocation(method="POST", headers=[(b"x-trace", b"t1")]), "envdump", {}
    )} | {"GREETING", "MODE"}  # fmt: skip


def test_nonzero_exit_is_a_guest_error(rt) -> None:
    pool = make_pool(rt, FIXTURES / "cgi_exit3.wat")
    with pytest.raises(GuestError) as exc:
        run(pool)
    assert exc.value.message == "guest exited with status 3"
    assert exc.value.status == 500
    assert exc.value.code == "guest_error"


def test_custom_status_headers_and_logs(rt) -> None:
    pool = make_pool(rt, FIXTURES / "cgi_status.wat")
    report = CallReport()
    out = run(pool, report)
    assert out.status == 201
    assert out.headers == [
        (b"location", b"/things/7"),
        (b"content-type", b"application/json"),
    ]
    assert out.body == b'{"id":7}'
    assert report.logs == b"created 7\n"


def test_stdout_over_the_output_limit(rt) -> None:
    pool = make_pool(rt, HELLO_WASM, output_limit=100)
    assert run(pool, method="GET", query="name=short").status == 200
    with pytest.raises(GuestError, match="more than 100 bytes to stdout"):
        run(pool, method="GET", query="name=" + "x" * 200)


def test_output_limit_named_even_when_the_guest_exits_nonzero(rt) -> None:
    pool = make_pool(rt, ECHO_WASM, output_limit=1000)
    try:
        run(pool, body=b"x" * 5000)
    except GuestError as exc:
        message = exc.message  # not the exception: its traceback would keep the store alive
    else:
        message = "no error"
    assert message == "guest wrote more than 1000 bytes to stdout"
