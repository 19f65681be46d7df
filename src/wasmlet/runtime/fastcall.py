"""Low-overhead calls into exported wasm functions.

wasmtime-py's `Func.__call__` re-reads the function type and boxes every value through
Python objects on each call: ~35 us for `gcd(a, b)` on this hardware, more than the guest
itself. Calling `wasmtime_func_call_unchecked` with a preallocated raw value array costs
~2 us. It is "unchecked" only in that argument types must match the signature, which
`FastFunc` fixes once from the function type. ctypes releases the GIL for the call, so
guests run in parallel with the event loop and each other.

This reaches into wasmtime-py's private `_bindings`, so the dependency is pinned exactly;
tests/runtime/test_fastcall.py covers every value kind.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _bindings as _b
from wasmtime._func import maybe_raise_last_exn

_call_unchecked = _b._wasmtime_func_call_unchecked
_TrapPtr = ctypes.POINTER(_b.wasm_trap_t)

KINDS = {"i32", "i64", "f32", "f64"}


def kind_of(valtype: wasmtime.ValType) -> str:
    return str(valtype)


# Each raw value is a 16-byte union (room for a v128). Typed views over the same buffer
# let us read and write slots by index without creating a ctypes object per access.
_SLOT = 16
_VIEW_TYPES = {
    "i32": ctypes.c_int32,
    "i64": ctypes.c_int64,
    "f32": ctypes.c_float,
    "f64": ctypes.c_double,
}


class FastFunc:
    """One exported function bound to one store, callable with plain Python numbers."""

    __slots__ = ("_ctx", "_func", "_ins", "_n", "_outs", "_params", "_raw", "_results", "_store")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func) -> None:
        ty = func.type(store)
        self._params = tuple(kind_of(t) for t in ty.params)
        self._results = tuple(kind_of(t) for t in ty.results)
        unsupported = set(self._params + self._results) - KINDS
        if unsupported:
            raise TypeError(f"unsupported value types {sorted(unsupported)}")
        self._n = max(len(self._params), len(self._results))
        self._raw = (_b.wasmtime_val_raw_t * max(self._n, 1))()
        assert ctypes.sizeof(_b.wasmtime_val_raw_t) == _SLOT
        views = {
            kind: (ctype * (len(self._raw) * _SLOT // ctypes.sizeof(ctype))).from_buffer(self._raw)
            for kind, ctype in _VIEW_TYPES.items()
        }
        step = {k: _SLOT // ctypes.sizeof(c) for k, c in _VIEW_TYPES.items()}
        self._ins = tuple((views[k], i * step[k]) for i, k in enumerate(self._params))
        self._outs = tuple((views[k], i * step[k]) for i, k in enumerate(self._results))
        self._store = store  # keeps the store (and so the context pointer) alive
        self._ctx = store._context()
        self._func = ctypes.byref(func._func)

    @property
    def params(self) -> tuple[str, ...]:
        return self._params

    @property
    def results(self) -> tuple[str, ...]:
        return self._results

    def __call__(self, *args: Any) -> list[Any]:
        for (view, index), value in zip(self._ins, args):  # noqa: B905 (arity checked by caller)
            view[index] = value
        trap = _TrapPtr()
        err = _call_unchecked(self._ctx, self._func, self._raw, self._n, ctypes.byref(trap))
        if err:
            maybe_raise_last_exn()
            raise wasmtime.WasmtimeError._from_ptr(err)
        if trap:
            maybe_raise_last_exn()
            raise wasmtime.Trap._from_ptr(trap)
        return [view[index] for view, index in self._outs]
