"""The otoroshi ABI in-process: the contract and every proxy_* host function, through pools.

Expected behaviour comes from EXTISM-ABI.md §6. Most tests drive the probe plugin
(fixtures/otoroshi_probe.wat): its export named after a host function calls it with the
request body as input and answers the result (x-result header: the raw integer, or 1/0 for
a block/none) with the returned block as body; `reply` answers the request body verbatim,
`call_backend` the context JSON it received.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from tests.runtime.support import EXAMPLES, FIXTURES, held, make_pool, run, wasm_bytes
from wasmlet.abi import get_abi
from wasmlet.abi.otoroshi.contract import ContractError, b64decode
from wasmlet.errors import GuestError, Timeout
from wasmlet.host.kv_capability import function_scope
from wasmlet.host.services import HostServices, build_services
from wasmlet.runtime.module_info import describe
from wasmlet.runtime.pool import CallReport, InstancePool
from wasmlet.spec import FunctionSpec

PROBE = FIXTURES / "otoroshi_probe.wat"
LOOP = FIXTURES / "extism_loop.wat"
HELLO = EXAMPLES / "hello-plugin" / "hello.wasm"
GEO = EXAMPLES / "geo" / "geo.wasm"
ALL_GRANTS = ["http", "kv", "kv:global"]


@pytest.fixture(scope="module")
def services(rt) -> Iterator[HostServices]:
    # No database: both stores in memory. The HTTP tests' upstream is on loopback, which
    # the operator must allow.
    built = build_services(rt.settings.model_copy(update={"egress_allow": ["127.0.0.0/8"]}))
    yield built
    built.close()


def probe(rt, services: HostServices, **spec: Any) -> InstancePool:
    """A pool for the probe under a function name of its own, resolved as deploy would
    (error_status 400, every capability unless told otherwise)."""
    spec.setdefault("name", f"o-{uuid.uuid4().hex[:8]}")
    spec.setdefault("capabilities", ALL_GRANTS)
    spec.setdefault("error_status", get_abi("otoroshi").default_error_status)
    source = spec.pop("source", PROBE)
    pool = make_pool(rt, source, abi="otoroshi", **spec)
    pool.services = services  # read by each new store's context
    return pool


@pytest.fixture(scope="module")
def pool(rt, services) -> InstancePool:
    return probe(rt, services, config={"region": "eu", "unit": "km"})


def call(pool: InstancePool, export: str, body: bytes | str = b"", **inv: Any):
    data = body.encode() if isinstance(body, str) else body
    return run(pool, export=export, body=data, **inv)


def result(out) -> tuple[int, bytes]:
    """(x-result, body) of a probe answer."""
    assert out.status == 200, out
    return int(dict(out.headers)[b"x-result"]), out.body


def value(pool: InstancePool, export: str, body: bytes | str = b"") -> int:
    return result(call(pool, export, body))[0]


def block(pool: InstancePool, export: str, body: bytes | str = b"") -> bytes | None:
    """The block a host function returned, None for 0."""
    found, data = result(call(pool, export, body))
    assert found in (0, 1)
    return data if found else None


def fails(pool: InstancePool, export: str, body: bytes | str = b"", **inv: Any) -> GuestError:
    with pytest.raises(GuestError) as exc:
        call(pool, export, body, **inv)
    return exc.value


def js(data: Any) -> str:
    return json.dumps(data)


# -- deploy-time ------------------------------------------------------------------------------

ENGINE = wasmtime.Engine()


def info_of(source: Path | str):
    data = wasm_bytes(source)
    return describe(wasmtime.Module(ENGINE, data), data)


def resolved(**values: Any) -> FunctionSpec:
    base = {"abi": "otoroshi", "export": "call_backend", "timeout_ms": 1000, "memory_mb": 64}
    base.update(reuse=True, pool_size=1)
    base.update(values)
    return FunctionSpec.model_validate(base)


def missing(source: Path | str, spec: FunctionSpec) -> list[str]:
    abi = get_abi("otoroshi")
    return sorted(
        f"{i.module}.{i.name}" for i in info_of(source).imports if not abi.provides(i, spec)
    )


def test_defaults_are_otoroshis() -> None:
    abi = get_abi("otoroshi")
    assert abi.default_error_status == 400
    assert abi.default_reuse is True
    assert abi.default_export(info_of(PROBE)) == "call_backend"  # among many callables
    assert abi.default_export(info_of(HELLO)) == "greet"  # else Extism's rule
    assert abi.default_export(info_of(GEO)) == "call_backend"


def test_grants_decide_which_proxy_functions_link() -> None:
    ops = [
        "all_matching",
        "del",
        "exists",
        "get",
        "incrby",
        "keys",
        "pexpire",
        "pttl",
        "set",
        "setnx",
    ]
    names = ["map", "map_del", "map_get", "map_set", *(f"datastore_{op}" for op in ops)]
    kv = [f"env.proxy_plugin_{name}" for name in names]
    global_kv = [
        name.replace("proxy_plugin_datastore", "proxy_datastore").replace(
            "proxy_plugin_map", "proxy_global_map"
        )
        for name in kv
    ]
    everything = sorted(["env.proxy_http_call", *kv, *global_kv])
    assert missing(PROBE, resolved()) == everything
    assert missing(PROBE, resolved(capabilities=["kv"])) == sorted(
        ["env.proxy_http_call", *global_kv]
    )
    assert missing(PROBE, resolved(capabilities=["http", "kv:global"])) == sorted(kv)
    assert missing(PROBE, resolved(capabilities=ALL_GRANTS)) == []
    assert missing(GEO, resolved(capabilities=["http", "kv"])) == []
    assert missing(GEO, resolved(capabilities=["kv"])) == ["env.proxy_http_call"]


def test_signatures_must_match_exactly_and_js_namespace_is_linked() -> None:
    wat = """(module
      (import "env" "proxy_log" (func (param i64 i64 i64) (result i32)))
      (import "env" "proxy_state" (func (param i32) (result i32)))
      (import "env/Otoroshi" "proxy_log" (func (param i32 i64 i64) (result i32)))
      (import "env/Otoroshi" "proxy_plugin_map_get" (func (param i64 i64) (result i64)))
      (import "env" "proxy_teleport" (func (param i64 i64) (result i64)))
      (func (export "call_backend") (result i32) (i32.const 0)))"""
    assert missing(wat, resolved()) == [
        "env.proxy_log",
        "env.proxy_state",
        "env.proxy_teleport",
        "env/Otoroshi.proxy_plugin_map_get",
    ]
    assert missing(wat, resolved(capabilities=["kv"])) == [
        "env.proxy_log",
        "env.proxy_state",
        "env.proxy_teleport",
    ]


# -- the context JSON -------------------------------------------------------------------------


def context(pool: InstancePool, **inv: Any) -> dict[str, Any]:
    return json.loads(result(call(pool, "call_backend", **inv))[1])


def test_context_describes_the_request(pool) -> None:
    ctx = context(
        pool,
        body=b"\x00\x7f\x80\xff{}",
        method="PUT",
        path="/a b/c",
        query="q=Paris&q=Lyon&flag&x=%C3%A9",
        headers=[
            (b"host", b"geo.example:8443"),
            (b"accept", b"text/plain"),
            (b"accept", b"application/json"),
            (b"cookie", b"session=abc; theme=dark"),
        ],
        server_name="geo.example",
        server_port=8443,
        remote_addr="10.1.2.3",
    )
    assert list(ctx) == [
        "snowflake",
        "request",
        "raw_request",
        "request_body_bytes",
        "backend",
        "route",
        "apikey",
        "user",
        "config",
        "global_config",
        "attrs",
    ]
    headers = {
        "host": "geo.example:8443",
        "accept": "text/plain, application/json",
        "cookie": "session=abc; theme=dark",
    }
    query = {"q": ["Paris", "Lyon"], "flag": [""], "x": ["é"]}
    uri = "/a%20b/c?q=Paris&q=Lyon&flag&x=%C3%A9"
    request = ctx["request"]
    assert request == {
        "url": "http://geo.example:8443" + uri,
        "method": "PUT",
        "headers": headers,
        "query": query,
        "version": "HTTP/1.1",
        "client_cert_chain": None,
        "backend": None,
        "cookies": [
            {
                "name": "session",
                "value": "abc",
                "domain": None,
                "path": "/",
                "maxAge": None,
                "secure": False,
                "httpOnly": False,
            },
            {
                "name": "theme",
                "value": "dark",
                "domain": None,
                "path": "/",
                "maxAge": None,
                "secure": False,
                "httpOnly": False,
            },
        ],
    }
    raw = ctx["raw_request"]
    assert isinstance(raw["id"], int) and raw["id"] > 0
    assert ctx["snowflake"] == str(raw["id"])
    assert [c["name"] for c in raw.pop("cookies")] == ["session", "theme"]
    assert raw == {
        "id": raw["id"],
        "method": "PUT",
        "headers": headers,
        "tls": False,
        "uri": uri,
        "query": query,
        "path": "/a%20b/c",
        "version": "HTTP/1.1",
        "has_body": True,
        "remote": "10.1.2.3",
        "client_cert_chain": None,
        "path_params": {},
    }
    assert ctx["request_body_bytes"] == [0, 127, -128, -1, 123, 125]
    assert ctx["backend"] is None and ctx["apikey"] is None and ctx["user"] is None
    assert ctx["route"] == {"id": pool.ref.name, "name": pool.ref.name}
    assert ctx["config"] == {"region": "eu", "unit": "km"}
    assert ctx["global_config"] == {} and ctx["attrs"] == {}


def test_context_without_body_default_ports_and_tls(pool) -> None:
    ctx = context(pool, method="GET", path="/", server_name="h", server_port=80)
    assert ctx["request_body_bytes"] is None
    assert ctx["raw_request"]["has_body"] is False
    assert ctx["request"]["url"] == "http://h/"
    assert ctx["request"]["query"] == {} and ctx["request"]["cookies"] == []
    ctx = context(pool, scheme="https", server_name="h", server_port=443, path="/x", query="a=1")
    assert ctx["request"]["url"] == "https://h/x?a=1"
    assert ctx["raw_request"]["tls"] is True and ctx["raw_request"]["uri"] == "/x?a=1"


def test_every_byte_value_reaches_the_plugin_signed(pool) -> None:
    data = bytes(range(256)) * 3
    ctx = context(pool, body=data)
    assert ctx["request_body_bytes"] == [b - 256 if b > 127 else b for b in data]
    assert list(ctx)[3:5] == ["request_body_bytes", "backend"]


def test_each_call_has_its_own_id(pool) -> None:
    ids = [context(pool)["raw_request"]["id"] for _ in range(5)]
    assert len(set(ids)) == 5
    assert ids == sorted(ids)


# -- the answer -------------------------------------------------------------------------------

JSON_CT = (b"content-type", b"application/json")


def reply(pool: InstancePool, answer: Any):
    return call(pool, "reply", answer if isinstance(answer, bytes) else js(answer))


def test_body_forms(pool) -> None:
    assert reply(pool, {"body_str": "héllo"}).body == "héllo".encode()
    assert reply(pool, {"body": "alias"}).body == b"alias"
    assert json.loads(reply(pool, {"body_json": {"a": [1, "é"]}}).body) == {"a": [1, "é"]}
    assert reply(pool, {"body_json": 0}).body == b"0"  # any non-null JSON
    assert reply(pool, {"body_base64": "aGVsbG8="}).body == b"hello"
    assert reply(pool, {"body_base64": "aGVsbG8"}).body == b"hello"  # unpadded
    assert reply(pool, {"body_base64": "/+8"}).body == b"\xff\xef"
    assert reply(pool, {"body_bytes": [104, -1, -128, 0, 127]}).body == b"h\xff\x80\x00\x7f"
    assert reply(pool, {}).body == b""


def test_body_precedence(pool) -> None:
    every = {
        "body_str": "str",
        "body": "alias",
        "body_json": {"j": 1},
        "body_base64": "YjY0",
        "body_bytes": [98],
    }
    assert reply(pool, every).body == b"str"
    assert reply(pool, {**every, "body_str": "   "}).body == b"alias"  # blank is ignored
    assert reply(pool, {**every, "body_str": 5, "body": ""}).body == b'{"j":1}'
    assert reply(pool, {**every, "body_str": None, "body": None, "body_json": None}).body == b"b64"
    assert (
        reply(
            pool, {"body_str": "", "body_json": None, "body_base64": " ", "body_bytes": [98]}
        ).body
        == b"b"
    )
    assert reply(pool, {"body_bytes": []}).body == b""


def test_status_and_headers(pool) -> None:
    out = reply(pool, {"body_str": "x"})
    assert (out.status, out.headers) == (200, [JSON_CT])  # the default headers
    out = reply(pool, {"status": 201, "headers": {"Content-Type": "text/plain", "X-Geo": "ok"}})
    assert out.status == 201
    assert out.headers == [(b"content-type", b"text/plain"), (b"x-geo", b"ok")]
    assert reply(pool, {"status": 404.0}).status == 404
    # not a {str: str} map: the default instead
    assert reply(pool, {"headers": ["X-A", "1"]}).headers == [JSON_CT]
    assert reply(pool, {"headers": {"X-Count": 3}}).headers == [JSON_CT]
    assert reply(pool, {"headers": {}}).headers == []
    for status in (204, 304):  # no body may follow these
        out = reply(pool, {"status": status, "body_str": "ignored"})
        assert (out.status, out.body) == (status, b"")
    # framing and hop-by-hop headers are the server's
    out = reply(
        pool,
        {
            "headers": {
                "Content-Length": "999",
                "Transfer-Encoding": "chunked",
                "Connection": "close",
                "Upgrade": "h2c",
                "X-Kept": " padded ",
            },
            "body_str": "abc",
        },
    )
    assert out.headers == [(b"x-kept", b"padded")]
    assert out.body == b"abc"


def test_output_that_is_not_a_json_object_counts_as_empty(pool) -> None:
    for raw in (b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"null", b""):
        out = reply(pool, raw)
        assert (out.status, out.headers, out.body) == (200, [JSON_CT], b""), raw


@pytest.mark.parametrize(
    ("answer", "mention"),
    [
        ({"status": 99}, "status 99"),
        ({"status": 103}, "status 103"),
        ({"status": 600}, "status 600"),
        ({"status": "200"}, "integer"),
        ({"status": True}, "integer"),
        ({"body_bytes": [1, 200]}, "-128 to 127"),
        ({"body_bytes": [1, "a"]}, "-128 to 127"),
        ({"body_base64": "a-b_"}, "base64"),
        ({"body_base64": "abcde"}, "base64"),
        ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, "control character"),
        ({"headers": {"Bad Name": "x"}}, "header name"),
    ],
)
def test_answers_that_cannot_be_sent_are_guest_errors(pool, answer, mention) -> None:
    exc = fails(pool, "reply", js(answer))
    assert exc.status == 400 and exc.code == "guest_error"
    assert mention in exc.message


def test_base64_decoding() -> None:
    assert b64decode("") == b""
    assert b64decode("YQ") == b64decode("YQ==") == b"a"
    assert b64decode("YWI") == b64decode("YWI=") == b"ab"
    assert b64decode("YWJj") == b"abc"
    assert b64decode("+/+/") == base64.b64decode("+/+/")
    for bad in ("Y", "YQ=a", "YQ===", "-_-_", "YQ==\n=", "Y Q"):
        with pytest.raises(ContractError):
            b64decode(bad)


# -- failures ---------------------------------------------------------------------------------


def test_failures_are_guest_errors_with_the_error_status(rt, services) -> None:
    pool = probe(rt, services)
    cases = [
        ("fail_error", "probe failed"),
        ("fail_rc", "non-zero exit code: 3"),
        ("trap", "unreachable"),
        ("bad_ptr", "outside the plugin's kernel memory"),
    ]
    call(pool, "call_backend")  # one idle instance, which each failure must discard
    for export, mention in cases:
        before = pool.instantiations
        exc = fails(pool, export)
        assert (exc.code, exc.status) == ("guest_error", 400), export
        assert mention in exc.message, (export, exc.message)
        call(pool, "call_backend")
        assert pool.instantiations == before + 1, export  # the failed instance was dropped
    custom = probe(rt, services, error_status=502)
    assert fails(custom, "trap").status == 502
    assert fails(custom, "reply", js({"status": 1})).status == 502


def test_limits_end_calls_as_for_every_abi(rt, services) -> None:
    pool = probe(rt, services, source=LOOP, export="spin", timeout_ms=300)
    with held(rt), pytest.raises(Timeout):
        call(pool, "spin")


# -- logs, events, attributes, state ---------------------------------------------------------


def logged(pool: InstancePool, export: str, body: bytes | str) -> tuple[int, str]:
    report = CallReport()
    data = body.encode() if isinstance(body, str) else body
    out = run(pool, report, export=export, body=data)
    return result(out)[0], report.logs.decode()


def test_proxy_log_levels(pool) -> None:
    assert logged(pool, "log", "2hello ü") == (0, "[info] hello ü\n")
    assert logged(pool, "log", "3careful") == (0, "[warn] careful\n")
    assert logged(pool, "log", "6max") == (0, "[error] max\n")
    assert logged(pool, "log", "0hidden") == (0, "")  # trace is below the default level


def test_proxy_log_event(pool) -> None:
    event = {"function": "geo", "message": "cache miss", "level": "info"}
    code, logs = logged(pool, "log_event", js(event))
    assert code == 0
    assert json.loads(logs.removeprefix("[event] ")) == event
    assert "expected a JSON object" in fails(pool, "log_event", "nope").message


def test_attrs_live_for_one_call(pool) -> None:
    assert block(pool, "get_attrs") == b"{}"
    found, data = result(
        call(pool, "set_attr_then_attrs", js({"key": "geo.city", "value": {"n": "Paris"}}))
    )
    assert found == 1  # proxy_set_attr answered 1
    assert json.loads(data) == {"geo.city": {"n": "Paris"}}
    assert block(pool, "get_attrs") == b"{}"  # the next call starts empty
    assert block(pool, "get_attr", "geo.city") is None
    assert value(pool, "set_attr", js({"key": "k", "value": 1})) == 1
    assert value(pool, "del_attr", "k") == 0  # set in another call
    assert value(pool, "clear_attrs") == 0
    assert "'key' must be a string" in fails(pool, "set_attr", js({"value": 1})).message


def test_state_and_config(pool) -> None:
    assert json.loads(block(pool, "config") or b"") == {"region": "eu", "unit": "km"}
    assert block(pool, "global_config") == b"{}"
    assert block(pool, "state") == b"{}"
    assert block(pool, "cluster_state") == b"{}"
    assert block(pool, "state_value", js({"entity": "routes"})) == b"[]"
    assert block(pool, "state_value", js({"entity": "routes", "id": "r1"})) == b"null"
    assert block(pool, "cluster_state_value", "members") == b"null"


# -- maps ---------------------------------------------------------------------------------------


def test_plugin_map(pool, services) -> None:
    assert block(pool, "plugin_map") is None  # nothing stored yet: 0
    assert value(pool, "plugin_map_set", js({"key": "paris", "value": "48.85,2.35 ✓"})) == 0
    assert value(pool, "plugin_map_set", js({"key": "lyon", "value": ""})) == 0
    assert block(pool, "plugin_map_get", "paris") == "48.85,2.35 ✓".encode()
    assert block(pool, "plugin_map_get", "lyon") is None  # an empty value: no block
    assert block(pool, "plugin_map_get", "nowhere") is None
    listing = json.loads(block(pool, "plugin_map") or b"")
    assert listing == {
        "lyon": "",
        "paris": base64.b64encode("48.85,2.35 ✓".encode()).decode(),
    }
    # size bounds the read: "parisX" with size 5 is the key "paris"
    assert block(pool, "key_prefix", "parisX") == "48.85,2.35 ✓".encode()
    assert block(pool, "plugin_map_del", "paris") == b"StatusOK"
    assert block(pool, "plugin_map_del", "paris") == b"StatusOK"
    assert block(pool, "plugin_map_get", "paris") is None
    # in the in-memory store, under the function's scope; not in the persistent store
    scope = function_scope(pool.ref.name)
    assert services.kv_memory.keys(scope) == ["lyon"]
    assert services.kv_persistent.keys(scope) == []
    assert "empty key" in fails(pool, "plugin_map_get", "").message
    assert "'value' must be a string" in fails(pool, "plugin_map_set", js({"key": "k"})).message


def test_plugin_maps_are_per_function_global_map_is_shared(rt, services) -> None:
    a, b = probe(rt, services), probe(rt, services)
    value(a, "plugin_map_set", js({"key": "k", "value": "from a"}))
    assert block(b, "plugin_map_get", "k") is None
    key = f"g-{uuid.uuid4().hex[:6]}"
    value(a, "global_map_set", js({"key": key, "value": "shared"}))
    assert block(b, "global_map_get", key) == b"shared"
    assert json.loads(block(b, "global_map") or b"")[key] == base64.b64encode(b"shared").decode()
    assert block(b, "global_map_del", key) == b"StatusOK"
    assert block(a, "global_map_get", key) is None


# -- datastores ----------------------------------------------------------------------------------


def test_plugin_datastore(pool, services) -> None:
    def ds(op: str, arg: Any) -> Any:
        return call(pool, f"plugin_datastore_{op}", arg if isinstance(arg, str) else js(arg))

    def raw(op: str, arg: Any) -> int:
        return result(ds(op, arg))[0]

    def got(op: str, arg: Any) -> bytes | None:
        found, data = result(ds(op, arg))
        return data if found else None

    assert raw("set", {"key": "a:1", "value": "one"}) == 1
    assert raw("setnx", {"key": "a:1", "value": "again"}) == 0
    assert raw("setnx", {"key": "a:2", "value_base64": "dHdv"}) == 1  # "two"
    assert raw("set", {"key": "b:1", "value_base64": "/w"}) == 1  # unpadded: b"\xff"
    assert got("get", "a:1") == b"one"
    assert got("get", "a:2") == b"two"
    assert got("get", "b:1") == b"\xff"
    assert got("get", "zzz") is None
    assert (raw("exists", "a:1"), raw("exists", "zzz")) == (1, 0)
    assert json.loads(got("keys", "*") or b"") == ["a:1", "a:2", "b:1"]
    assert json.loads(got("keys", "a:*") or b"") == ["a:1", "a:2"]
    assert json.loads(got("all_matching", "a:*") or b"") == ["b25l", "dHdv"]
    assert raw("del", {"keys": ["a:1", "b:1", "missing"]}) == 2
    assert json.loads(got("keys", "") or b"") == ["a:2"]  # empty pattern: everything
    # counters
    assert raw("incrby", {"key": "n", "incr": 5}) == 5
    assert raw("incrby", {"key": "n", "incr": "-7"}) == -2
    assert got("get", "n") == b"-2"
    assert (
        "not an integer"
        in fails(pool, "plugin_datastore_incrby", js({"key": "a:2", "incr": 1})).message
    )
    assert (
        "incr must be an integer"
        in fails(pool, "plugin_datastore_incrby", js({"key": "n", "incr": "x"})).message
    )
    # TTLs
    assert raw("pttl", "n") == -1
    assert raw("pttl", "zzz") == -2
    assert raw("set", {"key": "t", "value": "v", "ttl": 60_000}) == 1
    assert 30_000 < raw("pttl", "t") <= 60_000  # ms, and near 60 s (not a speed bound)
    assert raw("pexpire", {"key": "t", "pttl": 120_000}) == 1
    assert 90_000 < raw("pttl", "t") <= 120_000
    assert raw("pexpire", {"key": "zzz", "pttl": 1000}) == 0
    assert raw("set", {"key": "brief", "value": "v", "ttl": 50}) == 1
    time.sleep(0.12)
    assert got("get", "brief") is None and raw("exists", "brief") == 0
    # persistent store, the function's scope
    assert "a:2" in services.kv_persistent.keys(function_scope(pool.ref.name))
    message = fails(pool, "plugin_datastore_set", js({"key": "k"})).message
    assert "value (text) or value_base64" in message
    assert (
        "base64"
        in fails(pool, "plugin_datastore_set", js({"key": "k", "value_base64": "%"})).message
    )


def test_global_datastore_is_shared_plugin_datastore_is_not(rt, services) -> None:
    a, b = probe(rt, services), probe(rt, services)
    key = f"g-{uuid.uuid4().hex[:6]}"
    assert value(a, "datastore_set", js({"key": key, "value": "v"})) == 1
    assert block(b, "datastore_get", key) == b"v"
    assert value(b, "datastore_incrby", js({"key": key + ":n", "incr": 2})) == 2
    assert value(a, "datastore_incrby", js({"key": key + ":n", "incr": 2})) == 4
    assert json.loads(block(b, "datastore_keys", key + "*") or b"") == [key, key + ":n"]
    assert value(a, "datastore_del", js({"keys": [key, key + ":n"]})) == 2
    value(a, "plugin_datastore_set", js({"key": "mine", "value": "a"}))
    assert block(b, "plugin_datastore_get", "mine") is None


# -- proxy_http_call ------------------------------------------------------------------------


class _Upstream(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append(  # type: ignore[attr-defined]
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers),
                "body": self.rfile.read(length) if length else b"",
            }
        )
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/final")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/slow":  # answers only when the test is over (see upstream())
            self.server.release.wait(30)  # type: ignore[attr-defined]
        body = json.dumps({"path": self.path}).encode()
        missing = self.path == "/missing" or "Nowhere" in self.path
        self.send_response(404 if missing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.seen = []  # type: ignore[attr-defined]
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def http_call(pool: InstancePool, request: dict[str, Any]) -> dict[str, Any]:
    found, data = result(call(pool, "http_call", js(request)))
    assert found == 1
    return json.loads(data)


def test_http_call(pool) -> None:
    with upstream() as (url, seen):
        answer = http_call(
            pool,
            {
                "url": url + "/geo?a=1",
                "method": "post",
                "headers": {"X-Api-Key": "k1"},
                "query": {"q": "Saint-Étienne", "n": 3},
                "body_json": {"hello": "world"},
            },
        )
        assert answer["status"] == 200
        assert answer["headers"]["x-upstream"] == "yes"
        assert json.loads(base64.b64decode(answer["body_base64"])) == {
            "path": "/geo?a=1&q=Saint-%C3%89tienne&n=3"
        }
        assert len(seen) == 1
        assert seen[0]["method"] == "POST"
        assert seen[0]["headers"]["X-Api-Key"] == "k1"
        assert seen[0]["body"] == b'{"hello":"world"}'
        # body precedence as in answers; GET by default; non-2xx is an answer, not a failure
        http_call(pool, {"url": url + "/b", "body_base64": "aGk", "body_bytes": [1]})
        assert (seen[1]["method"], seen[1]["body"]) == ("GET", b"hi")
        assert http_call(pool, {"url": url + "/missing"})["status"] == 404


def test_http_call_redirects_and_timeouts(pool) -> None:
    with upstream() as (url, seen):
        assert http_call(pool, {"url": url + "/moved"})["status"] == 302  # not followed
        followed = http_call(pool, {"url": url + "/moved", "follow_redirects": True})
        assert followed["status"] == 200
        assert json.loads(base64.b64decode(followed["body_base64"])) == {"path": "/final"}
        # /slow does not answer before the upstream is closed: only the request's own
        # 100 ms timeout can end this call.
        exc = fails(pool, "http_call", js({"url": url + "/slow", "request_timeout": 100}))
        assert exc.status == 400 and "failed" in exc.message
        assert [s["path"] for s in seen] == ["/moved", "/moved", "/final", "/slow"]
    assert "not an http(s) URL" in fails(pool, "http_call", js({"url": "ftp://x/"})).message


def test_http_call_allow_rule(rt, services) -> None:
    with upstream() as (url, seen):
        anywhere = probe(rt, services, allowed_hosts=["*"])
        assert http_call(anywhere, {"url": url + "/x"})["status"] == 200
        matching = probe(rt, services, allowed_hosts=["127.0.0.*"])
        assert http_call(matching, {"url": url + "/x"})["status"] == 200
        elsewhere = probe(rt, services, allowed_hosts=["api.example.com"])
        denied = http_call(elsewhere, {"url": url + "/x"})
        assert denied["status"] == 403
        assert "not allowed" in base64.b64decode(denied["body_base64"]).decode()
        assert len(seen) == 2  # the denied call never left


# -- the geo example ------------------------------------------------------------------------


def test_geo_caches_upstream_answers(rt, services) -> None:
    with upstream() as (url, seen):
        geo = probe(
            rt, services, source=GEO, capabilities=["http", "kv"], config={"upstream_url": url}
        )
        first = run(geo, method="GET", path="/search", query="q=Paris")
        second = run(geo, method="GET", path="/search", query="q=Paris")
        assert first.status == second.status == 200
        assert dict(first.headers)[b"x-cache"] == b"MISS"
        assert dict(second.headers)[b"x-cache"] == b"HIT"
        assert first.body == second.body
        assert json.loads(first.body) == {"path": "/search?q=Paris"}
        assert [s["path"] for s in seen] == ["/search?q=Paris"]
        # another query misses; a non-2xx answer is passed on and not cached
        lyon = run(geo, method="GET", path="/search", query="q=Lyon")
        assert dict(lyon.headers)[b"x-cache"] == b"MISS"
        for _ in range(2):
            nowhere = run(geo, method="GET", path="/search", query="q=Nowhere")
            assert (nowhere.status, dict(nowhere.headers)[b"x-cache"]) == (404, b"MISS")
        assert len(seen) == 4
        # the plugin's own refusals reach no upstream
        assert run(geo, method="GET", path="/other", query="q=1").status == 404
        assert run(geo, method="GET", path="/search", query="").status == 400
        assert len(seen) == 4
