"""How the host operations of host/catalog.py reach guests of each ABI.

- `memory` binding (core and wasi-cgi modules), import module `wasmlet`: bytes pass as
  (i32 pointer, i32 length) in the guest's exported `memory`. An operation returning
  bytes takes two more i32 parameters, (out pointer, out capacity), and returns an i64:
  -1 for nothing, else the result's full length n. When n fits, the bytes are at the
  out pointer; when it does not, nothing is written and the result waits for
  `result_read(pointer, capacity) -> i64`, so the guest can allocate n bytes and fetch
  it without the operation running twice.
- `extism` binding, import module `extism:host/user`, names prefixed `wasmlet_`: bytes
  pass as kernel handles (i64); results are new blocks the plugin owns (0 for nothing).
  As for every user function (EXTISM-ABI.md §3), argument handles are not freed.

Only operations whose capability the function was granted are linked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wasmtime

from wasmlet.host.catalog import CATALOG, HostFn, granted
from wasmlet.host.context import HostContext, HostError, attach, context_of
from wasmlet.spec import FunctionSpec
from wasmlet.wasm.fastcall import guarded

if TYPE_CHECKING:
    from wasmlet.runtime.slot import Slot

MEMORY_NS = "wasmlet"
EXTISM_NS = "extism:host/user"
EXTISM_PREFIX = "wasmlet_"

_WASM = {"i": "i32", "I": "i64"}


def _valtype(kind: str) -> wasmtime.ValType:
    return wasmtime.ValType.i32() if kind == "i32" else wasmtime.ValType.i64()


def _functype(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> wasmtime.FuncType:
    params, results = sig
    return wasmtime.FuncType([_valtype(k) for k in params], [_valtype(k) for k in results])


# -- memory binding ---------------------------------------------------------------------------


def memory_signature(fn: HostFn) -> tuple[tuple[str, ...], tuple[str, ...]]:
    params: list[str] = []
    for kind in fn.params:
        params += ["i32", "i32"] if kind == "b" else [_WASM[kind]]
    if fn.result == "b":
        return (*params, "i32", "i32"), ("i64",)
    return tuple(params), ((_WASM[fn.result],) if fn.result else ())


def _guest_memory(caller: wasmtime.Caller) -> wasmtime.Memory:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise HostError("host functions that pass bytes need the module to export 'memory'")
    return memory


def _read(caller: wasmtime.Caller, memory: wasmtime.Memory, ptr: int, length: int) -> bytes:
    if ptr < 0 or length < 0 or ptr + length > memory.data_len(caller):
        raise HostError(f"pointer {ptr}+{length} lies outside the guest's memory")
    return bytes(memory.read(caller, ptr, ptr + length)) if length else b""


def _write(caller: wasmtime.Caller, memory: wasmtime.Memory, ptr: int, data: bytes) -> None:
    if ptr < 0 or ptr + len(data) > memory.data_len(caller):
        raise HostError(f"out pointer {ptr}+{len(data)} lies outside the guest's memory")
    memory.write(caller, data, ptr)


def _memory_impl(fn: HostFn) -> Callable[..., Any]:
    kinds = fn.params
    returns_bytes = fn.result == "b"

    def impl(caller: wasmtime.Caller, *raw: int) -> Any:
        ctx = context_of(caller)
        memory = _guest_memory(caller) if "b" in kinds or returns_bytes else None
        args: list[Any] = []
        i = 0
        for kind in kinds:
            if kind == "b":
                assert memory is not None  # fetched above: a "b" kind is in kinds
                args.append(_read(caller, memory, raw[i], raw[i + 1]))
                i += 2
            else:
                args.append(raw[i])
                i += 1
        result = fn.impl(ctx, *args)
        if not returns_bytes:
            return result
        if result is None:
            return -1
        out_ptr, out_cap = raw[i], raw[i + 1]
        if len(result) <= out_cap:
            assert memory is not None  # fetched above: the result is bytes
            _write(caller, memory, out_ptr, result)
        else:
            ctx.pending = result
        return len(result)

    return impl


def result_read(caller: wasmtime.Caller, ptr: int, cap: int) -> int:
    """Copy the result that did not fit (see module docstring); bytes written, -1 if none."""
    ctx = context_of(caller)
    data = ctx.pending
    if data is None:
        return -1
    if len(data) > cap:
        raise HostError(f"result_read: the result is {len(data)} bytes, the buffer {cap}")
    _write(caller, _guest_memory(caller), ptr, data)
    ctx.pending = None
    return len(data)


_RESULT_READ_SIG = (("i32", "i32"), ("i64",))


def define_memory(linker: wasmtime.Linker, spec: FunctionSpec) -> None:
    for fn in granted(spec):
        impl = guarded(_memory_impl(fn))
        linker.define_func(MEMORY_NS, fn.name, _functype(memory_signature(fn)), impl, True)
    linker.define_func(
        MEMORY_NS, "result_read", _functype(_RESULT_READ_SIG), guarded(result_read), True
    )


def memory_provides(
    module: str,
    name: str,
    sig: tuple[tuple[str, ...], tuple[str, ...]] | None,
    spec: FunctionSpec,
) -> bool:
    """Whether the memory binding links this import for a function with this spec."""
    if module != MEMORY_NS:
        return False
    if name == "result_read":
        return sig == _RESULT_READ_SIG
    fn = CATALOG.get(name)
    return fn is not None and fn.granted(spec) and sig == memory_signature(fn)


def open_host(slot: Slot, ctx: HostContext | None = None) -> HostContext:
    """Give a new store its host context (host functions find it through the store)."""
    pool = slot.function
    if ctx is None:
        ctx = HostContext(pool.ref.name, pool.spec, pool.services)
    slot.host = ctx
    attach(slot.store, ctx)
    return ctx


# -- extism binding -----------------------------------------------------------------------------


def extism_signature(fn: HostFn) -> tuple[tuple[str, ...], tuple[str, ...]]:
    params = tuple("i64" if k == "b" else _WASM[k] for k in fn.params)
    if not fn.result:
        return params, ()
    return params, ("i64" if fn.result == "b" else _WASM[fn.result],)


def _extism_impl(fn: HostFn) -> Callable[..., Any]:
    kinds = fn.params
    returns_bytes = fn.result == "b"

    def impl(caller: wasmtime.Caller, *raw: int) -> Any:
        ctx: Any = context_of(caller)
        kernel = ctx.kernel
        args: list[Any] = []
        for kind, value in zip(kinds, raw, strict=True):
            if kind != "b":
                args.append(value)
            elif not value:
                args.append(b"")
            elif not kernel.length(value):
                raise HostError(f"{EXTISM_PREFIX}{fn.name}: invalid handle {value}")
            else:
                args.append(kernel.read(value))
        result = fn.impl(ctx, *args)
        if not returns_bytes:
            return result
        return kernel.write(result) if result else 0

    return impl


def extism_functions(spec: FunctionSpec) -> dict[str, tuple[Any, Callable[..., Any]]]:
    """Import name (in extism:host/user) -> (signature, implementation), as granted."""
    return {
        EXTISM_PREFIX + fn.name: (extism_signature(fn), _extism_impl(fn)) for fn in granted(spec)
    }


def define_signatures(
    linker: wasmtime.Linker,
    module: str,
    functions: dict[str, tuple[Any, Callable[..., Any]]],
) -> None:
    for name, (sig, impl) in functions.items():
        linker.define_func(module, name, _functype(sig), guarded(impl), True)
