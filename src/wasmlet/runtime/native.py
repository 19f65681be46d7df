"""Direct bindings to the few wasmtime C calls made on every request.

wasmtime-py's wrappers for these look up the store context with a second C call and go
through `ctypes.CDLL`, which releases and re-takes the GIL around every call. For calls
that take ~100 ns that is the expensive part: each release lets any other Python thread
take over for up to the switch interval. These bindings load the same library through
`ctypes.PyDLL`, which keeps the GIL, and take the context pointer the caller cached.
Guest code itself still runs through runtime/fastcall.py, which does release the GIL.
"""

from __future__ import annotations

import ctypes

import wasmtime
from wasmtime import _bindings as _b

_lib = ctypes.PyDLL(_b.dll._name)
_Ctx = ctypes.POINTER(_b.wasmtime_context_t)
_Err = ctypes.POINTER(_b.wasmtime_error_t)


def _bind(name: str, argtypes: list, restype: object) -> ctypes._CFuncPtr:
    fn = getattr(_lib, name)
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


set_epoch_deadline = _bind("wasmtime_context_set_epoch_deadline", [_Ctx, ctypes.c_uint64], None)
_set_fuel = _bind("wasmtime_context_set_fuel", [_Ctx, ctypes.c_uint64], _Err)
_get_fuel = _bind("wasmtime_context_get_fuel", [_Ctx, ctypes.POINTER(ctypes.c_uint64)], _Err)
_memory_data_size = _bind(
    "wasmtime_memory_data_size", [_Ctx, ctypes.POINTER(_b.wasmtime_memory_t)], ctypes.c_size_t
)


def set_fuel(ctx: object, fuel: int) -> None:
    err = _set_fuel(ctx, fuel)
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)


def get_fuel(ctx: object, out: ctypes.c_uint64) -> int:
    err = _get_fuel(ctx, ctypes.byref(out))
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
    return out.value


_memory_data = _bind(
    "wasmtime_memory_data", [_Ctx, ctypes.POINTER(_b.wasmtime_memory_t)], ctypes.c_void_p
)


def memory_base(ctx: object, memory: wasmtime.Memory) -> int:
    """Address of the memory's first byte now (it may move when the memory grows)."""
    return _memory_data(ctx, ctypes.byref(memory._memory)) or 0


def memory_size(ctx: object, memory: wasmtime.Memory) -> int:
    return _memory_data_size(ctx, ctypes.byref(memory._memory))
