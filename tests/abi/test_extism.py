"""The extism ABI in-process: example plugins and WAT fixtures run through real pools.

Expected behaviour comes from EXTISM-ABI.md (sections 1-4): outcome rules, kernel
functions, built-in and user host functions, config, vars, HTTP, logs, WASI.
"""

from __future__ import annotations

import gc
import http.server
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from tests.runtime.support import EXAMPLES, FIXTURES, held, make_pool, run, wasm_bytes
from wasmlet.abi import get_abi
from wasmlet.errors import GuestError, GuestTrap, InvalidRequest, NotFound, Timeout
from wasmlet.host.services import build_services
from wasmlet.runtime.module_info import describe
from wasmlet.runtime.pool import CallReport
from wasmlet.spec import FunctionSpec

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


JSON_CT = (b"content-type", b"application/json")
OCTET_CT = (b"content-type", b"application/octet-stream")


def live_stores() -> int:
    gc.collect()
    return sum(isinstance(obj, wasmtime.Store) for obj in gc.get_objects())


def plugin(rt, source: Path, **spec: Any):
    """A pool for an Extism plugin under a function name of its own (vars are per name)."""
    spec.setdefault("name", f"x-{uuid.uuid4().hex[:8]}")
    pool = make_pool(rt, source, abi="extism", **spec)
    if "allowed_hosts" in spec:  # these talk to a loopback upstream: the operator allows it
        pool.services = build_services(
            rt.settings.model_copy(update={"egress_allow": ["127.0.0.0/8", "::1"]})
        )
    return pool


def call(pool, body: bytes = b"", export: str | None = None, report: CallReport | None = None):
    return run(pool, report, body=body, export=export)


def fails(pool, kind: type[Exception], body: bytes = b"", export: str | None = None) -> str:
    with pytest.raises(kind) as exc:
        call(pool, body, export)
    return exc.value.message  # type: ignore[attr-defined]


# -- deploy-time checks -------------------------------------------------------------------


ENGINE = wasmtime.Engine()


def info_of(source: Path):
    data = wasm_bytes(source)
    return describe(wasmtime.Module(ENGINE, data), data)


def resolved(**values: Any) -> FunctionSpec:
    base = {"abi": "extism", "export": "run", "timeout_ms": 1000, "memory_mb": 64}
    base.update(reuse=True, pool_size=1)
    base.update(values)
    return FunctionSpec.model_validate(base)


def missing_imports(source: Path, spec: FunctionSpec) -> list[str]:
    abi = get_abi("extism")
    return [f"{i.module}.{i.name}" for i in info_of(source).imports if not abi.provides(i, spec)]


def test_default_export_is_the_only_callable_one() -> None:
    abi = get_abi("extism")
    assert abi.default_export(info_of(HELLO)) == "greet"
    assert abi.default_export(info_of(VOWELS)) == "count_vowels"
    assert abi.default_export(info_of(FETCH)) == "fetch"
    assert abi.default_export(info_of(ERRORS)) is None  # several candidates


def test_examples_need_no_wasi_and_only_known_imports() -> None:
    for source in (HELLO, VOWELS, FETCH):
        info = info_of(source)
        assert not [i for i in info.imports if i.module.startswith("wasi")], source
        assert missing_imports(source, resolved()) == [], source


def test_unknown_env_import_is_not_provided() -> None:
    assert missing_imports(UNKNOWN, resolved()) == ["extism:host/env.teleport"]
    assert missing_imports(UNKNOWN, resolved(wasi=True)) == ["extism:host/env.teleport"]


def test_wasi_imports_need_the_grant() -> None:
    assert missing_imports(WASI, resolved()) == ["wasi_snapshot_preview1.random_get"]
    assert missing_imports(WASI, resolved(wasi=True)) == []


def test_legacy_and_user_imports_are_provided() -> None:
    assert missing_imports(LEGACY, resolved()) == []
    assert missing_imports(USER, resolved()) == []


def test_check_refuses_uncallable_exports() -> None:
    abi = get_abi("extism")
    core = FIXTURES / "multi.wat"  # core functions with parameters
    info = info_of(core)
    name = next(n for n, t in info.func_exports.items() if list(t.params))
    with pytest.raises(InvalidRequest, match="no parameters"):
        abi.check(info, resolved(export=name))
    with pytest.raises(InvalidRequest, match="no exported function"):
        abi.check(info_of(HELLO), resolved(export="nope"))
    abi.check(info_of(HELLO), resolved(export="greet"))


# -- hello-plugin ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hello(rt):
    return plugin(rt, HELLO, export="greet", pool_size=4)


def test_hello_greets_by_name(hello) -> None:
    out = call(hello, b"Ada")
    assert out.status == 200
    assert out.headers == [JSON_CT]
    assert json.loads(out.body) == {"message": "Hello Ada"}


def test_hello_empty_input_is_world(hello) -> None:
    assert json.loads(call(hello, b"").body) == {"message": "Hello world"}


def test_hello_escapes_any_bytes(hello) -> None:
    name = 'quote " back \\ nl \n tab \t ctl \x01 ü ✓'.encode() + b"\xff"
    out = call(hello, name)
    assert out.headers == [JSON_CT]
    assert json.loads(out.body) == {"message": "Hello " + name[:-1].decode() + "\ufffd"}


def test_hello_is_reused_and_answers_each_call(hello) -> None:
    before = hello.instantiations
    for i in range(20):
        assert json.loads(call(hello, f"n{i}".encode()).body) == {"message": f"Hello n{i}"}
    assert hello.instantiations - before <= 1  # one plugin instance serves them all


def test_unknown_export_is_not_found(hello) -> None:
    assert "nope" in fails(hello, NotFound, b"x", export="nope")
    assert "memory" in fails(hello, NotFound, b"x", export="memory")


def test_content_type_can_be_set(rt) -> None:
    pool = plugin(rt, HELLO, export="greet", content_type="text/x-greeting")
    assert call(pool, b"Ada").headers == [(b"content-type", b"text/x-greeting")]


# -- count-vowels: config and vars ----------------------------------------------------------

TEXT = b"Hello World, AEIOU and sometimes y"  # aeiou: e o o a e o e e = 8; AEIOU: 5 more


def counted(out) -> dict:
    assert out.status == 200 and out.headers == [JSON_CT], out
    return json.loads(out.body)


def test_vowels_default_set(rt) -> None:
    pool = plugin(rt, VOWELS, export="count_vowels")
    assert counted(call(pool, TEXT)) == {"count": 13, "total": 13, "vowels": "aeiouAEIOU"}


def test_vowels_from_config(rt) -> None:
    pool = plugin(rt, VOWELS, export="count_vowels", config={"vowels": "aeiou"})
    assert counted(call(pool, TEXT)) == {"count": 8, "total": 8, "vowels": "aeiou"}
    pool = plugin(rt, VOWELS, export="count_vowels", config={"vowels": "y"})
    assert counted(call(pool, TEXT))["count"] == 1
    # an empty value counts as absent (config_get returns 0): the default set
    pool = plugin(rt, VOWELS, export="count_vowels", config={"vowels": ""})
    assert counted(call(pool, TEXT))["vowels"] == "aeiouAEIOU"


def test_total_persists_across_calls(rt) -> None:
    pool = plugin(rt, VOWELS, export="count_vowels", reuse=True)
    totals = [counted(call(pool, b"aaa"))["total"] for _ in range(4)]
    assert totals == [3, 6, 9, 12]
    assert counted(call(pool, b"xyz")) == {"count": 0, "total": 12, "vowels": "aeiouAEIOU"}


def test_vars_survive_fresh_instances_and_are_per_function(rt) -> None:
    name = f"x-{uuid.uuid4().hex[:8]}"
    fresh = plugin(rt, VOWELS, name=name, export="count_vowels", reuse=False)
    assert counted(call(fresh, b"ae"))["total"] == 2
    assert counted(call(fresh, b"ae"))["total"] == 4  # a new instance, the same store
    again = plugin(rt, VOWELS, name=name, export="count_vowels", reuse=True)
    assert counted(call(again, b"e"))["total"] == 5  # another pool of the same function
    other = plugin(rt, VOWELS, export="count_vowels")
    assert counted(call(other, b"e"))["total"] == 1  # another function starts from zero


def test_total_counts_every_concurrent_call_once(rt) -> None:
    pool = plugin(rt, VOWELS, export="count_vowels", pool_size=8, reuse=True)
    inputs = [b"a" * (i % 7 + 1) + b"xyz" for i in range(120)]
    with held(rt), ThreadPoolExecutor(8) as ex:
        results = [counted(o) for o in ex.map(lambda b: call(pool, b), inputs)]
    assert [r["count"] for r in results] == [i % 7 + 1 for i in range(120)]
    expected = sum(i % 7 + 1 for i in range(120))
    assert max(r["total"] for r in results) == expected
    assert sorted({r["total"] for r in results}) == sorted(r["total"] for r in results)
    assert counted(call(pool, b""))["total"] == expected
    assert pool.instantiations > 1  # several instances shared the store


def test_overlapping_read_modify_write_loses_no_update(rt) -> None:
    # Each call reads var n, works for a few ms, then writes n + 1.
    pool = plugin(rt, COUNTER, export="bump", pool_size=4, reuse=True)
    with held(rt), ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda _: call(pool, b"x" * 40), range(16)))
    values = sorted(struct.unpack("<Q", o.body)[0] for o in outs)
    assert values == list(range(1, 17))


def test_var_limit_counts_entries_as_the_abi_says(rt) -> None:
    # One entry: len("total") + len("1") + 48 = 54 bytes.
    exact = plugin(rt, VOWELS, export="count_vowels", max_var_bytes=54)
    assert counted(call(exact, b"a"))["total"] == 1
    # The replaced entry still counts: 54 + 54 > 54.
    message = fails(exact, GuestError, b"a")
    assert "Variable store is full" in message
    # A failed call leaves the store as it was.
    roomy = plugin(rt, VOWELS, export="count_vowels", max_var_bytes=108)
    for total in (1, 2, 3):
        assert counted(call(roomy, b"a"))["total"] == total
    small = plugin(rt, VOWELS, export="count_vowels", max_var_bytes=53)
    assert "Variable store is full" in fails(small, GuestError, b"a")
    assert "Variable store is full" in fails(small, GuestError, b"a")


def test_var_store_failure_keeps_previous_value(rt) -> None:
    name = f"x-{uuid.uuid4().hex[:8]}"
    pool = plugin(rt, VOWELS, name=name, export="count_vowels", max_var_bytes=54)
    assert counted(call(pool, b"aaa"))["total"] == 3
    fails(pool, GuestError, b"a")
    bigger = plugin(rt, VOWELS, name=name, export="count_vowels")
    assert counted(call(bigger, b"a"))["total"] == 4


def test_vars_disabled(rt) -> None:
    pool = plugin(rt, VOWELS, export="count_vowels", max_var_bytes=0)
    assert fails(pool, GuestError, b"abc") == "Vars are disabled by this host"
    # the instance that trapped is not reused in a broken state: the next call fails the same
    assert fails(pool, GuestError, b"abc") == "Vars are disabled by this host"


# -- instances that are dropped are freed ----------------------------------------------------


def test_instances_used_once_are_freed(rt) -> None:
    pool = plugin(rt, HELLO, export="greet", reuse=False)
    before = live_stores()
    for i in range(20):
        assert json.loads(call(pool, b"%d" % i).body) == {"message": f"Hello {i}"}
    assert live_stores() - before <= 1


def test_retired_instances_are_freed(rt) -> None:
    pool = plugin(rt, VOWELS, export="count_vowels", max_var_bytes=0)  # every call retires
    before = live_stores()
    for _ in range(20):
        fails(pool, GuestError, b"a")
    assert live_stores() - before <= 1


# -- outcome rules (EXTISM-ABI.md section 1) ------------------------------------------------


@pytest.fixture(scope="module")
def errors(rt):
    return plugin(rt, ERRORS, export="void", pool_size=2)


def test_error_set_and_return_one(errors) -> None:
    assert fails(errors, GuestError, export="error_return") == "plugin says no"


def test_error_set_wins_over_return_zero(errors) -> None:
    assert fails(errors, GuestError, export="error_zero") == "plugin says no"


def test_error_set_then_trap_keeps_the_message(errors) -> None:
    assert fails(errors, GuestError, export="error_trap") == "set before the trap"


def test_cleared_error_succeeds(errors) -> None:
    out = call(errors, export="error_cleared")
    assert (out.status, out.body) == (200, b"ok")
    assert out.headers == [OCTET_CT]


def test_non_zero_return_without_error(errors) -> None:
    assert fails(errors, GuestError, export="nonzero") == "Returned non-zero exit code: 42"
    assert fails(errors, GuestError, export="minus_one") == "Returned non-zero exit code: -1"


def test_trap_without_error_is_a_trap(errors) -> None:
    message = fails(errors, GuestTrap, export="trap")
    assert "unreachable" in message


def test_export_without_result_succeeds(errors) -> None:
    assert call(errors, export="void").body == b"ok"


def test_errors_do_not_leak_into_the_next_call(errors) -> None:
    for export in ("error_return", "error_trap", "nonzero", "trap"):
        with pytest.raises((GuestError, GuestTrap)):
            call(errors, export=export)
        assert call(errors, export="void").body == b"ok"


# -- kernel functions from a plugin ---------------------------------------------------------

PROBE_INPUT = b"hello, kernel"


def words(body: bytes) -> list[int]:
    assert len(body) % 8 == 0, body
    return list(struct.unpack(f"<{len(body) // 8}Q", body))


def test_every_kernel_function_from_a_plugin(rt) -> None:
    pool = plugin(rt, KERNEL, export="probe")
    le = lambda b: int.from_bytes(b, "little")  # noqa: E731
    expected = [
        0,  # 0 alloc(0)
        1,  # 1 alloc(10) != 0
        10,  # 2 length
        10,  # 3 length_unsafe
        0x0102030405060708,  # 4 load_u64 after store_u64
        0xAB,  # 5 store_u8 keeps the low byte
        0x08,  # 6 little-endian
        0,  # 7 interior address
        0,  # 8 after double free
        0,  # 9 out-of-range load_u64
        0,  # 10 out-of-range load_u8
        1,  # 11 out-of-range stores dropped, no trap
        13,  # 12 input_length
        1,  # 13 input_offset != 0
        13,  # 14 length(input_offset)
        ord("h"),  # 15 input_load_u8(0)
        le(b"hello, k"),  # 16 input_load_u64(0)
        0,  # 17 input_load_u8(len)
        0,  # 18 input_load_u64(len - 7)
        le(b", kernel"),  # 19 input_load_u64(len - 8)
        ord("e"),  # 20 load_u8(input_offset + 1)
        1,  # 21 memory_bytes > 0
        1,  # 22 error_get == error_set's handle
        0,  # 23 error cleared
        0,  # 24 length(0) | length_unsafe(0)
        0,  # 25 alloc(8 GiB)
        5,  # 26 output_length
        1,  # 27 output_offset
        1,  # 28 out-of-range output_set ignored
        0,  # 29 freeing the input block empties the input
    ]
    for _ in range(2):  # and again on the reused instance
        out = call(pool, PROBE_INPUT)
        assert out.headers == [OCTET_CT]
        got = words(out.body)
        assert len(got) == len(expected)
        diff = {i: (g, e) for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e}
        assert not diff, f"check number: (got, expected): {diff}"


def test_reset_from_the_plugin(rt) -> None:
    pool = plugin(rt, KERNEL, export="after_reset")
    # input_length, input_offset, error_get, length(stale handle): all cleared
    assert words(call(pool, b"some input").body) == [0, 0, 0, 0]


def test_input_set_from_the_plugin(rt) -> None:
    pool = plugin(rt, KERNEL, export="own_input")
    assert call(pool, b"ignored input").body == b"abc"


# -- legacy env namespace and user functions ------------------------------------------------


def test_legacy_env_plugin(rt) -> None:
    pool = plugin(rt, LEGACY, export="run", config={"suffix": "cfg"})
    report = CallReport()
    out = call(pool, b"old plugin", report=report)
    assert out.body == b"legacy:old plugin:cfg"
    assert report.logs == b"[info] old plugin\n"
    plain = plugin(rt, LEGACY, export="run")
    assert call(plain, b"x").body == b"legacy:x"


def test_now_ms(rt) -> None:
    pool = plugin(rt, USER, export="now")
    before = time.time() * 1000
    value = struct.unpack("<Q", call(pool).body)[0]
    after = time.time() * 1000
    assert before - 5 <= value <= after + 5


def test_random_bytes(rt) -> None:
    pool = plugin(rt, USER, export="random")
    first = call(pool, b"x" * 32).body
    second = call(pool, b"x" * 32).body
    assert len(first) == len(second) == 32
    assert first != second
    assert len(call(pool, b"x").body) == 1
    assert len(call(pool, b"x" * 5000).body) == 5000
    assert "1..65536" in fails(pool, GuestError, b"")  # n = 0


# -- WASI -----------------------------------------------------------------------------------


def test_wasi_plugin_runs_with_the_grant(rt) -> None:
    pool = plugin(rt, WASI, export="random", wasi=True)
    a, b = call(pool).body, call(pool).body
    assert len(a) == len(b) == 16 and a != b


# -- sizes, time limits, concurrency --------------------------------------------------------


def test_one_mib_round_trip(rt) -> None:
    pool = plugin(rt, ECHO, export="echo")
    data = bytes(range(256)) * 4096 + b"tail!"  # 1 MiB + 5: words and a byte tail
    out = call(pool, data)
    assert out.headers == [OCTET_CT]
    assert out.body == data
    assert call(pool, b"").body == b""
    assert call(pool, b"abc").body == b"abc"


def test_a_reused_instance_moves_every_size_through_one_call(rt) -> None:
    """From an instance's second call on, begin, the export and end run as one wasm call
    (kernel.py, the runner) when the input fits the kernel memory as it is, and as three
    when it must grow first: the same bytes out either way, whatever came before."""
    pool = plugin(rt, ECHO, export="echo", pool_size=1)
    sizes = [3, 0, 8, 9, 65_000, 65_497, 70_000, 5, 300_000, 1, 131_072, 0, 17]
    for size in sizes * 2:
        data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        assert call(pool, data).body == data, size
    assert pool.instantiations == 1
    slot = pool.idle[0]
    assert "echo" in slot.abi_state.kernel.runners  # the one-call path was taken


def test_errors_and_codes_through_the_one_call_path(rt) -> None:
    pool = plugin(rt, ERRORS, export="void", pool_size=1)
    expected = {
        "error_return": "plugin says no",
        "error_zero": "plugin says no",
        "error_trap": "set before the trap",
        "nonzero": "Returned non-zero exit code: 42",
        "minus_one": "Returned non-zero exit code: -1",
    }
    for export, message in expected.items():
        # A failed call discards its instance: a fresh one serves the first call (three
        # wasm calls), then the failing one runs on it reused (one call).
        assert call(pool, b"x", export="void").status == 200
        assert fails(pool, GuestError, b"x", export=export) == message
        out = call(pool, b"y", export="error_cleared")
        assert (out.status, out.body) == (200, b"ok")
        assert call(pool, b"y", export="error_cleared").body == b"ok"  # reused


def test_output_nested_too_deep_to_parse_is_not_json(rt) -> None:
    pool = plugin(rt, ECHO, export="echo")
    deep = b"[" * 100_000 + b"]" * 100_000
    assert call(pool, deep).headers == [OCTET_CT]
    assert call(pool, b"[[1], {}]").headers == [JSON_CT]


def test_loop_forever_times_out(rt) -> None:
    pool = plugin(rt, LOOP, export="spin", timeout_ms=300)
    report = CallReport()
    with held(rt), pytest.raises(Timeout, match="300 ms"):
        call(pool, b"x", report=report)
    # The deadline ended it (a loop it missed never returns: pytest-timeout fails the test),
    # and not before the loop had its 300 ms.
    assert report.duration_us >= 0.9 * 300_000, report


def test_concurrent_calls_each_get_their_output(rt) -> None:
    pool = plugin(rt, HELLO, export="greet", pool_size=8)
    names = [f"caller-{i}-{'z' * (i % 13)}" for i in range(100)]
    with held(rt), ThreadPoolExecutor(16) as ex:
        outs = list(ex.map(lambda n: call(pool, n.encode()), names))
    assert [json.loads(o.body)["message"] for o in outs] == [f"Hello {n}" for n in names]


# -- HTTP -----------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/big/"):
            body = b"x" * int(self.path.rsplit("/", 1)[1])
            status = 200
        elif self.path == "/long":
            body = b"0123456789" * 50
            status = 200
        elif self.path == "/missing":
            body, status = b"nothing here", 404
        elif self.path == "/elsewhere":  # a redirect to the same server under another name
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/secret")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        elif self.path == "/secret":
            body, status = f"reached {self.headers['Host']}".encode(), 200
        else:
            body, status = b'hello "fetcher"\n', 200
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


def fetched(pool, url: str, report: CallReport | None = None) -> dict:
    out = call(pool, url.encode(), report=report)
    assert out.status == 200 and out.headers == [JSON_CT], out
    return json.loads(out.body)


def test_fetch_allowed_host(rt, web) -> None:
    pool = plugin(rt, FETCH, export="fetch", allowed_hosts=["127.0.0.1"])
    report = CallReport()
    assert fetched(pool, web + "/hello", report) == {
        "status": 200,
        "length": 16,
        "body": 'hello "fetcher"\n',
    }
    logs = report.logs.decode()
    assert f"[info] fetching {web}/hello\n" in logs
    assert "[debug]" not in logs  # the host's level is info
    assert fetched(pool, web + "/missing")["status"] == 404  # not an error


def test_fetch_shows_the_first_200_bytes(rt, web) -> None:
    pool = plugin(rt, FETCH, export="fetch", allowed_hosts=["127.0.0.1"])
    result = fetched(pool, web + "/long")
    assert result["length"] == 500
    assert result["body"] == ("0123456789" * 50)[:200]


@pytest.mark.parametrize(
    "hosts", [[], ["localhost"], ["example.com", "127.0.0.10"], ["*.127.0.0.1"], ["127.0.0"]]
)
def test_fetch_denied_host(rt, web, hosts) -> None:
    pool = plugin(rt, FETCH, export="fetch", allowed_hosts=hosts)
    message = fails(pool, GuestError, f"{web}/hello".encode())
    assert message == f"HTTP request to {web}/hello is not allowed"


@pytest.mark.parametrize("hosts", [["127.0.0.*"], ["example.com", "127.*"], ["*"], ["*.0.0.1"]])
def test_fetch_glob_patterns(rt, web, hosts) -> None:
    pool = plugin(rt, FETCH, export="fetch", allowed_hosts=hosts)
    assert fetched(pool, web + "/hello")["status"] == 200


def test_fetch_after_denial_still_works(rt, web) -> None:
    pool = plugin(rt, FETCH, export="fetch", allowed_hosts=["127.0.0.1"], pool_size=1)
    fails(pool, GuestError, b"http://example.com/")
    assert fetched(pool, web + "/hello")["status"] == 200


def test_fetch_response_limit(rt, web) -> None:
    pool = plugin(
        rt, FETCH, export="fetch", allowed_hosts=["127.0.0.1"], max_http_response_bytes=1000
    )
    assert fetched(pool, web + "/big/1000")["length"] == 1000
    message = fails(pool, GuestError, f"{web}/big/1001".encode())
    assert "1000" in message and "exceeds" in message


def test_fetch_transport_error_fails_the_call(rt) -> None:
    from tests.helpers import free_port

    pool = plugin(rt, FETCH, export="fetch", allowed_hosts=["127.0.0.1"])
    message = fails(pool, GuestError, f"http://127.0.0.1:{free_port()}/".encode())
    assert "failed" in message


def test_fetch_redirect_cannot_leave_the_allowed_hosts(rt, web) -> None:
    pool = plugin(rt, FETCH, export="fetch", allowed_hosts=["127.0.0.1"])
    try:
        result = fetched(pool, web + "/elsewhere")
    except GuestError as exc:  # refusing the redirect target is fine
        assert "not allowed" in exc.message
        return
    assert result["status"] == 302  # and so is handing the plugin the redirect itself
    assert "reached" not in result["body"]
