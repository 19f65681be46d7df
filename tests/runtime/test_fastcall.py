"""FastFunc against wasmtime-py's own (checked) Func call, for every value kind."""

from __future__ import annotations

import math

import pytest
import wasmtime

from tests.runtime.support import FIB_WAT, GCD_WAT, MULTI_WAT, TRAP_WAT, wasm_bytes
from wasmlet.wasm.fastcall import FastFunc, Signature, fast_func

KINDS_WAT = """
(module
  (func (export "id_i32") (param i32) (result i32) (local.get 0))
  (func (export "id_i64") (param i64) (result i64) (local.get 0))
  (func (export "id_f32") (param f32) (result f32) (local.get 0))
  (func (export "id_f64") (param f64) (result f64) (local.get 0))
  (func (export "mixed") (param i64 f32 i32 f64) (result f64 i32 f32 i64)
    (local.get 3) (local.get 2) (local.get 1) (local.get 0))
  (func (export "neg_i32") (param i32) (result i32)
    (i32.sub (i32.const 0) (local.get 0)))
  (func (export "ref") (param externref) (result i32) (i32.const 0)))
"""


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def instance(engine: wasmtime.Engine, source) -> tuple[wasmtime.Store, dict]:
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, wasm_bytes(source))
    inst = wasmtime.Instance(store, module, [])
    return store, inst.exports(store)


@pytest.fixture(scope="module")
def kinds(engine: wasmtime.Engine) -> tuple[wasmtime.Store, dict]:
    return instance(engine, KINDS_WAT)


def both(store: wasmtime.Store, func: wasmtime.Func, *args) -> tuple[list, list]:
    """FastFunc's results and wasmtime-py's, the latter normalised to a list."""
    slow = func(store, *args)
    slow = [] if slow is None else list(slow) if isinstance(slow, list | tuple) else [slow]
    return fast_func(store, func)(*args), slow


@pytest.mark.parametrize(
    ("export", "values"),
    [
        ("id_i32", [0, 1, -1, 2**31 - 1, -(2**31)]),
        ("id_i64", [0, -1, 2**63 - 1, -(2**63), 2880067194370816120]),
        ("id_f32", [0.0, -0.0, 1.5, -2.25, 3.4028234663852886e38, math.inf, -math.inf]),
        ("id_f64", [0.1, -1e308, 5e-324, math.inf, -math.inf]),
    ],
)
def test_every_value_kind_round_trips_like_wasmtime(kinds, export, values) -> None:
    store, exports = kinds
    fast = fast_func(store, exports[export])
    kind = export.removeprefix("id_")
    assert fast.params == (kind,)
    assert fast.results == (kind,)
    for value in values:
        got, expected = both(store, exports[export], value)
        assert got == expected == [value]
        assert type(got[0]) is type(expected[0])
        if value == 0:
            assert math.copysign(1, got[0]) == math.copysign(1, value)


def test_f32_rounds_like_wasmtime(kinds) -> None:
    store, exports = kinds
    got, expected = both(store, exports["id_f32"], 0.1)
    assert got == expected
    assert got[0] != 0.1  # really narrowed to single precision
    assert got[0] == pytest.approx(0.1, rel=1e-7)


def test_nan_passes_through(kinds) -> None:
    store, exports = kinds
    for export in ("id_f32", "id_f64"):
        (got,) = fast_func(store, exports[export])(math.nan)
        assert math.isnan(got)


def test_mixed_signature_keeps_every_slot_apart(kinds) -> None:
    store, exports = kinds
    fast = fast_func(store, exports["mixed"])
    assert fast.params == ("i64", "f32", "i32", "f64")
    assert fast.results == ("f64", "i32", "f32", "i64")
    args = (-(2**40) - 3, 2.5, -7, 1e300)
    got, expected = both(store, exports["mixed"], *args)
    assert got == expected == [1e300, -7, 2.5, -(2**40) - 3]


def test_multi_value_divmod(engine) -> None:
    store, exports = instance(engine, MULTI_WAT)
    fast = fast_func(store, exports["divmod"])
    assert fast.results == ("i32", "i32")
    for a, b in [(17, 5), (-17, 5), (17, -5), (-(2**31), 7)]:
        got, expected = both(store, exports["divmod"], a, b)
        assert got == expected
    assert fast(17, 5) == [3, 2]
    assert fast(-17, 5) == [-3, -2]  # signed: truncates toward zero


def test_no_results_and_no_params(engine) -> None:
    store, exports = instance(engine, MULTI_WAT)
    fast = fast_func(store, exports["noop"])
    assert fast.params == ()
    assert fast.results == ()
    assert fast() == []


def test_negative_numbers_and_wrap_around(engine, kinds) -> None:
    store, exports = instance(engine, MULTI_WAT)
    add64 = fast_func(store, exports["add64"])
    assert add64(2**63 - 1, 1) == [-(2**63)]
    assert add64(-5, 3) == [-2]
    assert both(store, exports["add64"], 2**63 - 1, 2**63 - 1)[0] == [-2]
    kstore, kexports = kinds
    neg = fast_func(kstore, kexports["neg_i32"])
    assert neg(5) == [-5]
    assert neg(-(2**31)) == [-(2**31)]  # -INT_MIN wraps to itself
    # An unsigned i32 argument is the same bit pattern as its signed value.
    assert fast_func(kstore, kexports["id_i32"])(2**32 - 1) == [-1]
    assert fast_func(kstore, kexports["id_i64"])(2**64 - 1) == [-1]


def test_gcd_and_fib_match_wasmtime(engine) -> None:
    store, exports = instance(engine, GCD_WAT)
    gcd = fast_func(store, exports["gcd"])
    assert gcd(1071, 462) == [21] == both(store, exports["gcd"], 1071, 462)[1]
    assert gcd(-12, 18) == [6]
    fstore, fexports = instance(engine, FIB_WAT)
    assert fast_func(fstore, fexports["fib"])(90) == [2880067194370816120]


def test_calls_reuse_the_buffer_without_leaking_arguments(engine) -> None:
    store, exports = instance(engine, MULTI_WAT)
    divmod_ = fast_func(store, exports["divmod"])
    results = [divmod_(a, 3) for a in range(-10, 10)]
    assert results == [list(divmod_ref(a, 3)) for a in range(-10, 10)]


def divmod_ref(a: int, b: int) -> tuple[int, int]:
    q = int(a / b)
    return q, a - q * b


@pytest.mark.parametrize(
    ("export", "args", "code", "text"),
    [
        ("divide", (1, 0), wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO, "divide by zero"),
        ("divide", (-(2**31), -1), wasmtime.TrapCode.INTEGER_OVERFLOW, "overflow"),
        ("boom", (), wasmtime.TrapCode.UNREACHABLE, "unreachable"),
    ],
)
def test_traps_raise_wasmtime_trap_with_code(engine, export, args, code, text) -> None:
    store, exports = instance(engine, TRAP_WAT)
    fast = fast_func(store, exports[export])
    with pytest.raises(wasmtime.Trap) as fast_exc:
        fast(*args)
    with pytest.raises(wasmtime.Trap) as slow_exc:
        exports[export](store, *args)
    assert fast_exc.value.trap_code == code == slow_exc.value.trap_code
    assert text in fast_exc.value.message
    # The store stays usable after a trap.
    assert fast_func(store, exports["divide"])(9, 3) == [3]


def test_unsupported_value_types_rejected(kinds) -> None:
    store, exports = kinds
    with pytest.raises(TypeError, match="unsupported value types"):
        fast_func(store, exports["ref"])


def test_signature_layout_shared_between_instances(engine) -> None:
    # One Signature (as the pool builds from stored metadata) serves every instance.
    sig = Signature(("i32", "i32"), ("i32",))
    assert sig.params == ("i32", "i32")
    assert sig.results == ("i32",)
    assert sig.n == 2
    calls = []
    for _ in range(3):
        store, exports = instance(engine, GCD_WAT)
        func = exports["gcd"]
        calls.append(FastFunc(store._context(), func._func, sig, store))
    assert [f(1071, 462) for f in calls] == [[21], [21], [21]]
    assert [f(12, 18) for f in reversed(calls)] == [[6], [6], [6]]
    assert calls[0].params == ("i32", "i32")


def test_signature_of_reads_the_function_type(kinds) -> None:
    store, exports = kinds
    sig = Signature.of(store, exports["mixed"])
    assert sig.params == ("i64", "f32", "i32", "f64")
    assert sig.results == ("f64", "i32", "f32", "i64")
    assert Signature((), ()).n == 1  # room for at least one value


def test_signature_rejects_unsupported_types() -> None:
    with pytest.raises(TypeError, match="v128"):
        Signature(("i32", "v128"), ())
