"""describe(): imports, exports, and parameter names read from the name section."""

from __future__ import annotations

import pytest
import wasmtime

from tests.runtime.support import (
    ECHO_WASM,
    EXAMPLES,
    FIXTURES,
    GCD_WAT,
    LOOP_WAT,
    MULTI_WAT,
    wasm_bytes,
)
from wasmlet.runtime.module_info import describe, module_meta, signature


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def info_of(engine, source):
    wasm = wasm_bytes(source)
    return describe(wasmtime.Module(engine, wasm), wasm)


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def custom_section(name: bytes, payload: bytes) -> bytes:
    body = uleb(len(name)) + name + payload
    return b"\x00" + uleb(len(body)) + body


def test_gcd_exports_and_param_names(engine) -> None:
    info = info_of(engine, GCD_WAT)
    assert info.imports == []
    assert set(info.exports) == {"memory", "gcd"}
    assert isinstance(info.exports["memory"], wasmtime.MemoryType)
    assert list(info.func_exports) == ["gcd"]
    assert info.param_names == {"gcd": ["a", "b"]}
    assert signature(info, "gcd") == {
        "params": ["i32", "i32"],
        "results": ["i32"],
        "names": ["a", "b"],
    }
    assert signature(info, "memory") is None
    assert signature(info, "missing") is None


def test_binary_example_keeps_its_names(engine) -> None:
    info = info_of(engine, EXAMPLES / "gcd" / "gcd.wasm")
    assert info.param_names == {"gcd": ["a", "b"]}
    fib = info_of(engine, EXAMPLES / "fibonacci" / "fibonacci.wasm")
    assert fib.param_names == {"fib": ["n"]}
    assert signature(fib, "fib")["results"] == ["i64"]


def test_imports_listed(engine) -> None:
    info = info_of(engine, FIXTURES / "needs_import.wat")
    assert len(info.imports) == 1
    imp = info.imports[0]
    assert (imp.module, imp.name) == ("env", "secret_host_fn")
    assert isinstance(imp.type, wasmtime.FuncType)
    assert [str(t) for t in imp.type.params] == ["i32"]
    assert module_meta(info)["wasi"] is False


def test_wasi_command_described(engine) -> None:
    info = info_of(engine, ECHO_WASM)
    assert info.imports
    assert all(i.module == "wasi_snapshot_preview1" for i in info.imports)
    assert "fd_write" in {i.name for i in info.imports}
    assert "_start" in info.func_exports
    meta = module_meta(info)
    assert meta["wasi"] is True
    assert meta["functions"]["_start"] == {"params": [], "results": [], "names": None}


def test_only_named_params_get_an_entry(engine) -> None:
    info = info_of(engine, MULTI_WAT)
    # divmod names its params; addf/add64 do not; noop has none.
    assert info.param_names == {"divmod": ["a", "b"]}
    meta = module_meta(info)
    assert set(meta["functions"]) == {"divmod", "addf", "add64", "noop"}
    assert meta["functions"]["addf"] == {
        "params": ["f64", "f64"],
        "results": ["f64"],
        "names": None,
    }
    assert meta["functions"]["divmod"]["results"] == ["i32", "i32"]


def test_module_without_a_name_section(engine) -> None:
    wasm = wasm_bytes('(module (func (export "f") (param i32 i64) (result i32) (i32.const 1)))')
    assert b"name" not in wasm
    info = describe(wasmtime.Module(engine, wasm), wasm)
    assert info.param_names == {}
    assert signature(info, "f") == {"params": ["i32", "i64"], "results": ["i32"], "names": None}
    assert info_of(engine, LOOP_WAT).param_names == {}


def test_partially_named_params_get_no_entry(engine) -> None:
    info = info_of(engine, '(module (func (export "f") (param $x i32) (param i32)))')
    assert info.param_names == {}


def test_names_survive_function_imports_and_several_exports(engine) -> None:
    wat = """
    (module
      (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (func $first (export "first") (export "alias") (param $left i64) (param $right f32))
      (func $second (export "second") (param $only f64) (result f64) (local.get 0)))
    """
    info = info_of(engine, wat)
    assert info.param_names == {
        "first": ["left", "right"],
        "alias": ["left", "right"],
        "second": ["only"],
    }


def test_names_after_a_memory_import(engine) -> None:
    wat = """
    (module
      (import "env" "mem" (memory 1))
      (import "env" "log" (func (param i32)))
      (func (export "g") (param $x i32) (param $y i32)))
    """
    assert info_of(engine, wat).param_names == {"g": ["x", "y"]}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x02\x05\x01\x00\x01\x00\x02\xff\xfe", id="invalid-utf8-local-name"),
        pytest.param(b"\x02\x0b\x01" + b"\x80" * 10, id="overlong-leb128"),
        pytest.param(b"\x02\x04\x01\x00\x01\x00\x7f", id="name-past-end"),
        pytest.param(b"\x02\x7f\x05", id="subsection-past-end"),
        pytest.param(b"\xff\xff\xff\xff\xff", id="garbage"),
        pytest.param(b"", id="empty"),
    ],
)
def test_malformed_name_section_does_not_crash(engine, payload) -> None:
    wasm = wasm_bytes(GCD_WAT) + custom_section(b"name", payload)
    module = wasmtime.Module(engine, wasm)  # custom sections are not validated
    info = describe(module, wasm)
    assert set(info.exports) == {"memory", "gcd"}
    assert info.param_names in ({}, {"gcd": ["a", "b"]})
    assert module_meta(info)["functions"]["gcd"]["params"] == ["i32", "i32"]


def test_other_custom_sections_are_ignored(engine) -> None:
    wasm = wasm_bytes(GCD_WAT) + custom_section(b"producers", b"\xff\xff\xff")
    assert describe(wasmtime.Module(engine, wasm), wasm).param_names == {"gcd": ["a", "b"]}
