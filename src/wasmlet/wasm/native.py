"""Direct bindings to the few wasmtime C calls made on every request.

wasmtime-py's wrappers for these look up the store context with a second C call and go
through `ctypes.CDLL`, which releases and re-takes the GIL around every call. For calls
that take ~100 ns that is the expensive part: each release lets any other Python thread
take over for up to the switch interval. These bindings load the same library through
`ctypes.PyDLL`, which keeps the GIL, and take the context pointer the caller cached.
Guest code itself still runs through wasm/fastcall.py, which does release the GIL.

The C functions are bound without `argtypes`: ctypes' per-argument conversion costs more
than the call itself (~0.3 vs ~0.15 us). So every argument passed to the `raw_*` functions
must already be a ctypes object (the context pointer, a `byref`, a `c_uint64`): a Python
int would go through as a C int. The plain functions below wrap them for any caller.

The rest of the module is the other private wasmtime-py access wasmlet needs: raw handles of
wasmtime-py objects and back, a Store made without its wrapper, and the pooling allocator.
The accessors are C-level callables (`operator.attrgetter`/`methodcaller`) or the private
classmethods themselves, so using them adds no Python frame on the paths they serve.
"""

from __future__ import annotations

import ctypes
import operator
from _ctypes import CFuncPtr
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _bindings as _b
from wasmtime import _ffi
from wasmtime import _func as _wasmtime_func

_lib = ctypes.PyDLL(_b.dll._name)
_Err = ctypes.POINTER(_b.wasmtime_error_t)
_TrapPtr = ctypes.POINTER(_b.wasm_trap_t)


def _bind(
    name: str, restype: type[ctypes._SimpleCData[Any]] | type[ctypes._Pointer[Any]] | None
) -> CFuncPtr:
    fn: CFuncPtr = getattr(_lib, name)
    fn.restype = restype
    return fn


# (ctx, c_uint64 ticks) -> None
raw_set_epoch_deadline = _bind("wasmtime_context_set_epoch_deadline", None)
# (ctx, c_uint64 fuel) -> error pointer or None
raw_set_fuel = _bind("wasmtime_context_set_fuel", ctypes.c_void_p)
# (ctx, byref(c_uint64) out) -> error pointer or None
raw_get_fuel = _bind("wasmtime_context_get_fuel", ctypes.c_void_p)
# (ctx, byref(wasmtime_memory_t)) -> size in bytes
raw_memory_size = _bind("wasmtime_memory_data_size", ctypes.c_size_t)
# (ctx, byref(wasmtime_memory_t)) -> address of the first byte
raw_memory_data = _bind("wasmtime_memory_data", ctypes.c_void_p)


# Making a store and an instance (a fresh slot per call when functions do not reuse them).
# (engine ptr, data, finalizer) -> store pointer; data and finalizer are None (NULL)
raw_store_new = _bind("wasmtime_store_new", ctypes.POINTER(_b.wasmtime_store_t))
# (store ptr) -> its context pointer
raw_store_context = _bind("wasmtime_store_context", ctypes.POINTER(_b.wasmtime_context_t))
# (store ptr, then c_int64 memory_size, table_elements, instances, tables, memories) -> None
raw_store_limiter = _bind("wasmtime_store_limiter", None)
# (ctx, byref(wasmtime_instance_t), name bytes, c_size_t len, byref(wasmtime_extern_t)) -> found
raw_export_get = _bind("wasmtime_instance_export_get", ctypes.c_bool)

# Instantiation runs the module's start function, guest code of unbounded length: bound
# through CDLL so that, like any guest call, it releases the GIL.
# (pre ptr, ctx, byref(wasmtime_instance_t) out, byref(c_void_p) trap out) -> error or None
raw_instance_pre_instantiate = ctypes.CDLL(_b.dll._name).wasmtime_instance_pre_instantiate
raw_instance_pre_instantiate.restype = ctypes.c_void_p


def error(err: int) -> wasmtime.WasmtimeError:
    """The exception for an error pointer a `raw_*` function returned."""
    return wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, _Err))


def trap(ptr: ctypes.c_void_p) -> wasmtime.Trap:
    """The exception for a trap pointer a raw call wrote (wasmtime-py takes ownership)."""
    return wasmtime.Trap._from_ptr(ctypes.cast(ptr, _TrapPtr))


def set_epoch_deadline(ctx: object, ticks: int) -> None:
    raw_set_epoch_deadline(ctx, ctypes.c_uint64(ticks))


def set_fuel(ctx: object, fuel: int) -> None:
    err = raw_set_fuel(ctx, ctypes.c_uint64(fuel))
    if err:
        raise error(err)


def get_fuel(ctx: object, out: ctypes.c_uint64) -> int:
    err = raw_get_fuel(ctx, ctypes.byref(out))
    if err:
        raise error(err)
    return out.value


def memory_base(ctx: object, memory: wasmtime.Memory) -> int:
    """Address of the memory's first byte now (it may move when the memory grows)."""
    return raw_memory_data(ctx, ctypes.byref(memory._memory)) or 0


def memory_size(ctx: object, memory: wasmtime.Memory) -> int:
    size: int = raw_memory_size(ctx, ctypes.byref(memory._memory))  # restype c_size_t: an int
    return size


# -- raw handles of wasmtime-py objects, and back ---------------------------------------------

# The C structs naming a function, a memory, an instance and any export of an instance.
RawFunc = _b.wasmtime_func_t
RawMemory = _b.wasmtime_memory_t
RawInstance = _b.wasmtime_instance_t
Extern = _b.wasmtime_extern_t
# `Extern.kind` of a function and of a memory export.
EXTERN_FUNC: int = _ffi.WASMTIME_EXTERN_FUNC.value
EXTERN_MEMORY: int = _ffi.WASMTIME_EXTERN_MEMORY.value

# A store's (or a host call's Caller's) context pointer, which every raw call takes:
# wasmtime-py keeps it but re-derives it per call, so callers cache it.
store_context: Callable[[wasmtime.Store | wasmtime.Caller], Any] = operator.methodcaller("_context")
# The raw handle inside a Func, a Memory and an Instance (for `ctypes.byref`, FastFunc and
# `raw_export_get`).
func_handle: Callable[[wasmtime.Func], RawFunc] = operator.attrgetter("_func")
memory_handle: Callable[[wasmtime.Memory], RawMemory] = operator.attrgetter("_memory")
instance_handle: Callable[[wasmtime.Instance], RawInstance] = operator.attrgetter("_instance")
# wasmtime-py objects for raw handles an export lookup or an instantiation returned.
func_from_raw: Callable[[RawFunc], wasmtime.Func] = wasmtime.Func._from_raw
memory_from_raw: Callable[[RawMemory], wasmtime.Memory] = wasmtime.Memory._from_raw


def store_address(store: wasmtime.Store | wasmtime.Caller) -> int:
    """The address of a store's context: the same for the Store and for a Caller of a host
    function it runs, so host functions find their store's state by it."""
    return ctypes.cast(store._context(), ctypes.c_void_p).value or 0


def new_store(
    engine: wasmtime.Engine, engine_ptr: Any, limits: tuple[ctypes.c_int64, ...]
) -> tuple[wasmtime.Store, Any]:
    """A wasmtime-py Store as `wasmtime.Store(engine)` makes it (ABIs and host functions
    use it as any other), with `limits` (`raw_store_limiter`'s five), and its context.
    Raw C calls: ~2 us less than wasmtime-py's wrappers, which re-derive the context and
    convert arguments. `engine_ptr` is `engine.ptr()`, which the caller keeps.
    """
    ptr = raw_store_new(engine_ptr, None, None)
    store = wasmtime.Store.__new__(wasmtime.Store)
    # What Store.__init__ sets, by their mangled names (wasmtime-py declares neither).
    store._Managed__ptr = ptr  # type: ignore[attr-defined]  # Managed.__ptr, mangled
    ctx = store._Store__context = raw_store_context(ptr)  # type: ignore[attr-defined]  # same
    store.engine = engine
    raw_store_limiter(ptr, *limits)
    return store, ctx


def instantiate_pre(pre: Any, ctx: Any) -> wasmtime.Instance:
    """`InstancePre.instantiate` (`pre` is its `ptr()`) through a raw C call, failing the
    same way."""
    instance = RawInstance()
    trapped = ctypes.c_void_p()
    err = raw_instance_pre_instantiate(pre, ctx, ctypes.byref(instance), ctypes.byref(trapped))
    if err:
        exc: BaseException = error(err)
    elif trapped.value:
        exc = trap(trapped)
    else:
        return wasmtime.Instance._from_raw(instance)
    # A host function's exception during the start function wins, as in wasmtime-py.
    _wasmtime_func.maybe_raise_last_exn()
    raise exc


def use_pooling_allocator(config: wasmtime.Config, instances: int, max_memory_bytes: int) -> None:
    """Preallocate `instances` instance slots (memories and tables too), each memory at most
    `max_memory_bytes`. wasmtime-py has no wrapper for this yet: set through the C API."""
    pooling = _b.wasmtime_pooling_allocation_config_new()
    try:
        _b.wasmtime_pooling_allocation_config_total_core_instances_set(pooling, instances)
        _b.wasmtime_pooling_allocation_config_total_memories_set(pooling, instances)
        _b.wasmtime_pooling_allocation_config_total_tables_set(pooling, instances)
        _b.wasmtime_pooling_allocation_config_max_memory_size_set(pooling, max_memory_bytes)
        _b.wasmtime_pooling_allocation_strategy_set(config.ptr(), pooling)
    finally:
        _b.wasmtime_pooling_allocation_config_delete(pooling)
