"""Rules a module must pass before it is compiled: each bounds what compiling or
instantiating it could cost (a compile-time bomb of 100k functions, a memory or a data
segment that cannot be), read from the binary's sections without compiling it.

Compiling costs about 65 us per function here: 100k tiny functions take 6-20 s on 2 cores,
so the count is capped (max_module_functions); everything else grows with the module's
size, which max_module_bytes bounds.
"""

from __future__ import annotations

import wasmtime

from wasmlet.errors import InvalidRequest
from wasmlet.runtime.wasm_reader import WasmReader

_FUNCTION_SECTION, _MEMORY_SECTION, _DATA_SECTION = 3, 5, 11
_MIB = 1024 * 1024
_WASM_PAGE = 65536


def sections_of(wasm: bytes) -> dict[int, WasmReader]:
    """A reader for each non-custom section up to the first malformed part, if any (the
    compiler reports what is wrong; these rules judge only what they can read). Each rule
    reads its own section once."""
    found: dict[int, WasmReader] = {}
    top = WasmReader(wasm, 8, len(wasm))
    try:
        while top.pos < top.end:
            section_id = top.byte()
            size = top.uleb()
            start = top.pos
            top.skip(size)
            if section_id and section_id not in found:
                found[section_id] = WasmReader(wasm, start, start + size)
    except (IndexError, ValueError):
        pass
    return found


def check_functions(sections: dict[int, WasmReader], limit: int) -> None:
    section = sections.get(_FUNCTION_SECTION)
    try:
        count = section.uleb() if section else 0
    except (IndexError, ValueError):
        return
    if count > limit:
        raise InvalidRequest(
            f"module defines {count} functions; the limit is {limit} (compiling costs time "
            "per function: max_module_functions)"
        )


def check_memories(sections: dict[int, WasmReader], max_mb: int) -> list[int]:
    """The initial size in bytes of each memory the module defines; refuses one larger than
    any function may have."""
    section = sections.get(_MEMORY_SECTION)
    sizes: list[int] = []
    if section is None:
        return sizes
    try:
        for _ in range(section.uleb()):
            flags = section.byte()  # 1: has maximum, 2: shared, 4: 64-bit, 8: page size given
            minimum = section.uleb()
            if flags & 1:
                section.uleb()
            page = 1 << section.uleb() if flags & 8 else _WASM_PAGE
            sizes.append(minimum * page)
    except (IndexError, ValueError):
        return []
    for index, size in enumerate(sizes):
        if size > max_mb * _MIB:
            raise InvalidRequest(
                f"memory {index} starts at {-(-size // _MIB)} MiB; a function may have at most "
                f"{max_mb} MiB (max_memory_mb)"
            )
    return sizes


def check_data_fits(
    sections: dict[int, WasmReader], memories: list[int], module: wasmtime.Module
) -> None:
    """Refuse an active data segment at a constant offset that overruns the initial size of
    the memory it initialises: every instantiation would trap."""
    section = sections.get(_DATA_SECTION)
    if section is None or not memories:
        return
    imported = sum(isinstance(i.type, wasmtime.MemoryType) for i in module.imports)
    try:
        for segment in range(section.uleb()):
            flags = section.uleb()  # 0: active in memory 0, 1: passive, 2: active in memory N
            memory = section.uleb() if flags == 2 else 0
            offset = _constant(section) if flags != 1 else None
            length = section.uleb()
            section.skip(length)
            defined = memory - imported  # imported memories come first in the index space
            if offset is None or not 0 <= defined < len(memories):
                continue
            if offset + length > memories[defined]:
                raise InvalidRequest(
                    f"data segment {segment} ({length} B at offset {offset}) does not fit in "
                    f"memory {memory}, whose initial size is {memories[defined]} B: the module "
                    "could never be instantiated"
                )
    except (IndexError, ValueError):
        return  # an offset computed by an extended constant expression: no judgement


def _constant(r: WasmReader) -> int | None:
    """The value of an offset expression that is one i32/i64 constant, read unsigned; None
    for one global (known only at instantiation)."""
    op = r.byte()
    if op == 0x23:  # global.get
        r.uleb()
        value = None
    elif op in (0x41, 0x42):  # i32.const, i64.const
        value = r.sleb() & (0xFFFF_FFFF if op == 0x41 else 0xFFFF_FFFF_FFFF_FFFF)
    else:
        raise ValueError("offset expression is not a constant")
    if r.byte() != 0x0B:
        raise ValueError("offset expression is more than one instruction")
    return value
