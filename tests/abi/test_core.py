"""The core ABI: numeric arguments from JSON or the query string, JSON results."""

from __future__ import annotations

import json

import pytest
import wasmtime

from tests.runtime.support import (
    FIB_WAT,
    GCD_WAT,
    MULTI_WAT,
    make_pool,
    result,
    run,
    wasm_bytes,
)
from wasmlet.abi.core import CoreAbi
from wasmlet.errors import InvalidRequest, NotFound
from wasmlet.runtime.module_info import describe
from wasmlet.spec import FunctionSpec

F32_WAT = """
(module
  (func (export "half") (param $x f32) (result f32) (f32.mul (local.get $x) (f32.const 0.5)))
  (func (export "wide") (param $x i64) (result i64) (local.get $x)))
"""


@pytest.fixture(scope="module")
def gcd(rt):
    return make_pool(rt, GCD_WAT, reuse=True)


@pytest.fixture(scope="module")
def multi(rt):
    return make_pool(rt, MULTI_WAT, export="divmod", reuse=True)


def invalid(pool, **inv) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as exc:
        run(pool, **inv)
    return exc.value


def test_args_as_a_list(gcd) -> None:
    outcome = run(gcd, args=[1071, 462])
    assert outcome.body == b'{"result": 21}'
    assert outcome.headers == [(b"content-type", b"application/json")]
    assert result(run(gcd, args=[-12, 18])) == 6


def test_args_by_parameter_name(gcd) -> None:
    assert result(run(gcd, args={"a": 1071, "b": 462})) == 21
    assert result(run(gcd, args={"b": 462, "a": 1071})) == 21


def test_numbers_as_strings(gcd) -> None:
    assert result(run(gcd, args=["1071", "462"])) == 21
    assert result(run(gcd, args=["0x1e", " 12 "])) == 6
    assert result(run(gcd, args=[-12.0, 18.0])) == 6  # integral floats are fine


def test_json_body(gcd) -> None:
    assert result(run(gcd, body=b'{"args": [1071, 462]}')) == 21
    assert result(run(gcd, body=b"[1071, 462]")) == 21
    assert result(run(gcd, body=b'{"a": 1071, "b": 462}')) == 21


def test_explicit_args_win_over_body_and_query(gcd) -> None:
    assert result(run(gcd, args=[12, 18], body=b"[1071, 462]", query="args=5,10")) == 6


def test_query_string(gcd) -> None:
    assert result(run(gcd, query="a=1071&b=462")) == 21
    assert result(run(gcd, query="args=1071,462")) == 21
    assert result(run(gcd, query="args=1071,,462,")) == 21  # empty items ignored


def test_single_scalar_argument(rt) -> None:
    fib = make_pool(rt, FIB_WAT)
    assert result(run(fib, args=90)) == 2880067194370816120
    assert result(run(fib, body=b"10")) == 55
    assert result(run(fib, query="n=10")) == 55


def test_wrong_arity(gcd) -> None:
    err = invalid(gcd, args=[1])
    assert err.message == "export 'gcd' takes 2 argument(s), got 1"
    assert err.status == 422
    assert "got 3" in invalid(gcd, args=[1, 2, 3]).message
    assert "got 0" in invalid(gcd).message
    assert "got 1" in invalid(gcd, query="args=5").message


def test_unknown_and_missing_names(gcd) -> None:
    err = invalid(gcd, args={"a": 1, "b": 2, "c": 3})
    assert "unknown argument(s) ['c']" in err.message
    assert "gcd(a, b)" in err.message
    err = invalid(gcd, args={"a": 1})
    assert "missing argument(s) ['b']" in err.message
    assert "unknown argument(s) ['x']" in invalid(gcd, query="a=1&x=2").message


def test_names_needed_for_a_dict(rt) -> None:
    pool = make_pool(rt, MULTI_WAT, export="addf")
    err = invalid(pool, args={"x": 1, "y": 2})
    assert "no parameter names" in err.message
    assert "pass args as a list" in err.message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([2**32, 1], "argument 0 is out of range for i32: 4294967296"),
        ([1, -(2**31) - 1], "argument 1 is out of range for i32: -2147483649"),
        (["x", 1], "argument 0 is not an integer: 'x'"),
        ([None, 1], "argument 0 must be a number, got null"),
        ([True, 1], "argument 0 must be a number, got true"),
        ([[1], 1], "argument 0 must be a number, got [1]"),
        ([{"v": 1}, 1], 'argument 0 must be a number, got {"v": 1}'),
        ([1.5, 1], "argument 0 must be an integer, got 1.5"),
        ([1, "1.5"], "argument 1 is not an integer: '1.5'"),
    ],
)
def test_bad_numbers(gcd, args, message) -> None:
    err = invalid(gcd, args=args)
    assert err.message == message
    assert err.code == "invalid_request"


def test_integer_range_edges(gcd, rt) -> None:
    # Unsigned values are accepted and passed as the same bit pattern.
    assert result(run(gcd, args=[2**32 - 1, 0])) == 1  # -1 -> |-1|
    assert result(run(gcd, args=[-(2**31) + 1, 0])) == 2**31 - 1
    wide = make_pool(rt, F32_WAT, export="wide")
    assert result(run(wide, args=[2**63 - 1])) == 2**63 - 1
    assert result(run(wide, args=[2**64 - 1])) == -1
    assert "out of range for i64" in invalid(wide, args=[2**64]).message


def test_decimal_string_with_leading_zero(gcd) -> None:
    # int("08", 0) raises: base-0 parsing forbids leading zeros in decimal literals.
    assert result(run(gcd, query="a=08&b=12")) == 4


def test_body_that_is_not_json(gcd) -> None:
    err = invalid(gcd, body=b"1071 462")
    assert err.message == "request body is not valid JSON"
    assert err.status == 400


def test_f64_results(rt) -> None:
    addf = make_pool(rt, MULTI_WAT, export="addf")
    assert result(run(addf, args=[0.1, 0.2])) == 0.30000000000000004
    assert result(run(addf, args=["1.5", 2])) == 3.5
    assert result(run(addf, args=[1, 2])) == 3.0
    assert "argument 1 is not a number: 'abc'" in invalid(addf, args=[1, "abc"]).message


def test_non_finite_results_become_strings(rt) -> None:
    addf = make_pool(rt, MULTI_WAT, export="addf")
    assert result(run(addf, args=["nan", 1])) == "nan"
    assert result(run(addf, args=[1e308, 1e308])) == "inf"
    assert result(run(addf, args=["-inf", 0])) == "-inf"
    body = run(addf, args=["nan", 1]).body
    json.loads(body, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


def test_f32_results(rt) -> None:
    half = make_pool(rt, F32_WAT, export="half")
    assert result(run(half, args=[3])) == 1.5
    assert result(run(half, args=[0.2])) == pytest.approx(0.1, rel=1e-6)


def test_multi_value_is_a_list(multi) -> None:
    assert result(run(multi, args=[17, 5])) == [3, 2]
    assert result(run(multi, args={"a": -17, "b": 5})) == [-3, -2]


def test_no_results_is_null(rt) -> None:
    noop = make_pool(rt, MULTI_WAT, export="noop")
    assert result(run(noop)) is None
    assert result(run(noop, args={})) is None
    assert result(run(noop, query="")) is None


def test_invocation_export_overrides_the_spec(multi) -> None:
    assert result(run(multi, export="add64", args=[2**63 - 1, 1])) == -(2**63)
    assert result(run(multi, export="divmod", args=[7, 2])) == [3, 1]


def test_unknown_or_hidden_export_is_not_found(multi) -> None:
    for export in ("nope", "memory", "_start", "_initialize"):
        with pytest.raises(NotFound) as exc:
            run(multi, export=export)
        assert exc.value.status == 404
        assert exc.value.message == f"function has no callable export {export!r}"


def describe_wat(wat: str):
    wasm = wasm_bytes(wat)
    return describe(wasmtime.Module(wasmtime.Engine(), wasm), wasm)


def test_default_export() -> None:
    abi = CoreAbi()
    only = describe_wat(
        '(module (memory (export "memory") 1) (func (export "_initialize"))'
        ' (func (export "go") (result i32) (i32.const 1)))'
    )
    assert abi.default_export(only) == "go"
    several = describe_wat(wasm_bytes(MULTI_WAT))
    assert abi.default_export(several) is None
    none = describe_wat('(module (memory (export "memory") 1))')
    assert abi.default_export(none) is None


def spec(**values) -> FunctionSpec:
    base = {"abi": "core", "export": "gcd", "timeout_ms": 1000, "memory_mb": 16}
    return FunctionSpec(**{**base, "reuse": True, "pool_size": 1, **values})


def test_check() -> None:
    abi = CoreAbi()
    info = describe_wat(wasm_bytes(GCD_WAT))
    abi.check(info, spec())
    with pytest.raises(InvalidRequest, match="no exported function 'nope'"):
        abi.check(info, spec(export="nope"))
    with pytest.raises(InvalidRequest, match="no exported function 'memory'"):
        abi.check(info, spec(export="memory"))
    ref = describe_wat('(module (func (export "r") (param externref)))')
    with pytest.raises(InvalidRequest, match="only i32, i64, f32 and f64"):
        abi.check(ref, spec(export="r"))


def test_initialize_runs_once_per_instance(rt) -> None:
    reactor = """
    (module
      (global $ready (mut i32) (i32.const 0))
      (global $inits (mut i32) (i32.const 0))
      (func (export "_initialize")
        (global.set $ready (i32.const 40))
        (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
      (func (export "get") (result i32) (i32.add (global.get $ready) (global.get $inits))))
    """
    pool = make_pool(rt, reactor, export="get", reuse=True)
    assert [result(run(pool)) for _ in range(3)] == [41, 41, 41]
