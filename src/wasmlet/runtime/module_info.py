"""What a module imports and exports, and the parameter names its name section records.

wasmtime-py exposes import/export types but not the `name` custom section, and no
maintained Python library parses it, so the small reader for that section (and the export
section it needs to map export names to function indices) is written here by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import wasmtime

from wasmlet.runtime.wasm_reader import WasmReader

# What an import or export is, as wasmtime-py describes it.
ExternType = (
    wasmtime.FuncType
    | wasmtime.MemoryType
    | wasmtime.TableType
    | wasmtime.GlobalType
    | wasmtime.TagType
)


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    type: ExternType


@dataclass(frozen=True)
class ModuleInfo:
    imports: list[Import]
    exports: dict[str, ExternType]  # export name -> its type
    param_names: dict[str, list[str]] = field(default_factory=dict)  # export -> names

    @property
    def func_exports(self) -> dict[str, wasmtime.FuncType]:
        return {n: t for n, t in self.exports.items() if isinstance(t, wasmtime.FuncType)}


def signature(info: ModuleInfo, export: str) -> dict[str, Any] | None:
    ty = info.func_exports.get(export)
    if ty is None:
        return None
    return {
        "params": [str(t) for t in ty.params],
        "results": [str(t) for t in ty.results],
        "names": info.param_names.get(export),
    }


def module_meta(info: ModuleInfo) -> dict[str, Any]:
    """What the runtime needs without re-reading the bytes: signatures and WASI use."""
    return {
        "functions": {n: signature(info, n) for n in info.func_exports},
        "wasi": any(i.module == "wasi_snapshot_preview1" for i in info.imports),
    }


def describe(module: wasmtime.Module, wasm: bytes) -> ModuleInfo:
    imports = [Import(i.module, i.name or "", i.type) for i in module.imports]
    exports = {e.name: e.type for e in module.exports}
    try:
        param_names = _param_names(wasm)
    except (IndexError, ValueError, UnicodeDecodeError):
        param_names = {}  # a malformed name section is legal; it only costs us the names
    return ModuleInfo(imports, exports, param_names)


def _skip_limits(r: WasmReader) -> None:
    flags = r.byte()
    r.uleb()  # minimum
    if flags & 1:
        r.uleb()  # maximum


def _param_names(wasm: bytes) -> dict[str, list[str]]:
    """Map each exported function to its parameter names, where the module records them."""
    if wasm[:4] != b"\0asm":
        return {}
    r = WasmReader(wasm, 8)
    imported_funcs = 0
    func_exports: dict[int, list[str]] = {}
    local_names: dict[int, dict[int, str]] = {}
    param_counts: dict[int, int] = {}
    type_params: list[int] = []
    func_types: list[int] = []
    while r.pos < r.end:
        section_id = r.byte()
        size = r.uleb()
        start, stop = r.pos, r.pos + size
        s = WasmReader(wasm, start, stop)
        if section_id == 1:  # types: remember each function type's param count
            for _ in range(s.uleb()):
                if s.byte() != 0x60:
                    return {}  # GC/rec types: names are not worth a full parser
                nparams = s.uleb()
                for _ in range(nparams):
                    s.byte()
                for _ in range(s.uleb()):
                    s.byte()
                type_params.append(nparams)
        elif section_id == 2:  # imports: function imports shift function indices
            for _ in range(s.uleb()):
                s.name()
                s.name()
                kind = s.byte()
                if kind == 0:  # function: type index
                    s.uleb()
                    imported_funcs += 1
                elif kind == 1:  # table: reftype, limits
                    s.byte()
                    _skip_limits(s)
                elif kind == 2:  # memory: limits
                    _skip_limits(s)
                elif kind == 3:  # global: valtype, mutability
                    s.byte()
                    s.byte()
                elif kind == 4:  # tag: attribute, type index
                    s.byte()
                    s.uleb()
                else:
                    return {}
        elif section_id == 3:
            func_types = [s.uleb() for _ in range(s.uleb())]
        elif section_id == 7:
            for _ in range(s.uleb()):
                export_name = s.name()
                kind = s.byte()
                index = s.uleb()
                if kind == 0:
                    func_exports.setdefault(index, []).append(export_name)
        elif section_id == 0 and s.name() == "name":
            while s.pos < stop:
                sub_id = s.byte()
                sub_size = s.uleb()
                sub_end = s.pos + sub_size
                if sub_id == 2:
                    for _ in range(s.uleb()):
                        func_index = s.uleb()
                        names = {}
                        for _ in range(s.uleb()):
                            local_index = s.uleb()
                            names[local_index] = s.name()
                        local_names[func_index] = names
                s.pos = sub_end
        r.pos = stop
    for i, type_index in enumerate(func_types):
        if type_index < len(type_params):
            param_counts[imported_funcs + i] = type_params[type_index]
    result: dict[str, list[str]] = {}
    for index, export_names in func_exports.items():
        locals_ = local_names.get(index)
        count = param_counts.get(index)
        if not locals_ or count is None:
            continue
        params = [locals_.get(i, "") for i in range(count)]
        if all(params):
            for export_name in export_names:
                result[export_name] = params
    return result
