"""Layer rules checked on the source: wasmtime-py's internals stay inside `wasmlet.wasm`.

wasmlet reaches below wasmtime-py's public API on its hot paths (raw C calls, raw handles,
a Store made without its wrapper). All of that belongs in `src/wasmlet/wasm/`, so a
wasmtime-py upgrade is checked in one package. These tests scan every other module.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import wasmtime

SRC = Path(__file__).resolve().parents[1] / "src" / "wasmlet"
LOW_LEVEL = SRC / "wasm"
# Name-mangled private attributes, as `obj._Store__context` spells them from outside.
MANGLED = re.compile(r"^_[A-Za-z][A-Za-z0-9]*__\w+$")


@cache
def wasmtime_private_names() -> frozenset[str]:
    """Every `_name` wasmtime-py defines as a method or sets as an attribute (`_func`,
    `_context`, `_from_ptr`, ...), and the module globals of its private modules that
    callers were tempted to touch (`LAST_EXCEPTION`)."""
    names = {"LAST_EXCEPTION"}
    root = Path(wasmtime.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            else:
                continue
            if name.startswith("_") and not name.startswith("__"):
                names.add(name)
    return frozenset(names)


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Where `source` imports wasmtime-py's private modules or touches a private attribute
    of a wasmtime object (by name: any `x._name` wasmtime-py defines, other than on
    `self`/`cls`, whose private attributes are the class's own)."""
    private = wasmtime_private_names()
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                f"{where}: import {a.name}" for a in node.names if a.name.startswith("wasmtime._")
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("wasmtime._"):
                found.append(f"{where}: from {node.module} import ...")
            elif node.module == "wasmtime":
                found += [
                    f"{where}: from wasmtime import {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
        elif isinstance(node, ast.Attribute):
            receiver = node.value
            if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                continue
            if MANGLED.match(node.attr) or node.attr in private:
                found.append(f"{where}: {ast.unparse(node)}")
    return found


def test_only_the_wasm_package_reaches_into_wasmtime_internals():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if LOW_LEVEL in path.parents:
            continue
        found += violations(path.read_text(), str(path.relative_to(SRC.parent)))
    assert found == [], "move these into src/wasmlet/wasm/:\n" + "\n".join(found)


def test_the_scan_sees_each_kind_of_private_access():
    samples = {
        "from wasmtime import _bindings as _b": 1,
        "import wasmtime._ffi": 1,
        "from wasmtime._func import maybe_raise_last_exn": 1,
        "store._Managed__ptr = ptr": 1,
        "ctx = store._Store__context": 1,
        "exc = wasmtime.Trap._from_ptr(p)": 1,
        "inst = wasmtime.Instance._from_raw(raw)": 1,
        "_func.LAST_EXCEPTION = None": 1,
        "ctx = store._context()": 1,
        "FastFunc(ctx, run._func, sig, store)": 1,
        "ref = ctypes.byref(memory._memory)": 1,
        # A class's own private attributes, and public wasmtime API, are fine.
        "self._func = f; cls._memory = m": 0,
        "store.engine.increment_epoch(); wasmtime.Instance(store, module, [])": 0,
        "from wasmtime import Store, Trap": 0,
    }
    for source, expected in samples.items():
        assert len(violations(source)) == expected, source


def test_the_wasm_package_does_not_import_the_layers_above_it():
    """`wasmlet.wasm` sits at the bottom: it may import wasmtime and the standard library,
    never another wasmlet package."""
    found = []
    for path in sorted(LOW_LEVEL.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            found += [
                f"{path.name}: {m}"
                for m in modules
                if m.startswith("wasmlet") and not m.startswith("wasmlet.wasm")
            ]
    assert found == []
