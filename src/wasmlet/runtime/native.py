"""Direct bindings to the few wasmtime C calls made on every request.

wasmtime-py's wrappers for these look up the store context with a second C call and go
through `ctypes.CDLL`, which releases and re-takes the GIL around every call. For calls
that take ~100 ns that is the expensive part: each release lets any other Python thread
take over for up to the switch interval. These bindings load the same library through
`ctypes.PyDLL`, which keeps the GIL, and take the context pointer the caller cached.
Guest code itself still runs through runtime/fastcall.py, which does release the GIL.

The C functions are bound without `argtypes`: ctypes' per-argument conversion costs more
than the call itself (~0.3 vs ~0.15 us). So every argument passed to the `raw_*` functions
must already be a ctypes object (the context pointer, a `byref`, a `c_uint64`): a Python
int would go through as a C int. The plain functions below wrap them for any caller.
"""

from __future__ import annotations

import ctypes
from _ctypes import CFuncPtr
from typing import Any

import wasmtime
from wasmtime import _bindings as _b

_lib = ctypes.PyDLL(_b.dll._name)
_Err = ctypes.POINTER(_b.wasmtime_error_t)


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
