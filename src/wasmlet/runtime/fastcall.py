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
import functools
import threading
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _bindings as _b
from wasmtime import _func as _wasmtime_func

# wasmtime-py keeps the exception a host function raised in one process-wide variable until
# the call returns, so two threads whose host functions fail at once take each other's (or
# get a bare "python exception" trap). Host functions defined through `guarded` also keep
# it per thread, and calls here re-raise their own thread's.
_RAISED = threading.local()


def guarded(impl: Callable[..., Any]) -> Callable[..., Any]:
    """A host function whose exception reaches the call that ran it, on its own thread."""

    @functools.wraps(impl)
    def run(*args: Any) -> Any:
        try:
            return impl(*args)
        except BaseException as exc:
            _RAISED.exc = exc
            raise

    return run


def raise_pending() -> None:
    """Re-raise the exception a host function raised on this thread during the call."""
    exc = getattr(_RAISED, "exc", None)
    if exc is None:
        return
    _RAISED.exc = None
    if _wasmtime_func.LAST_EXCEPTION is exc:
        _wasmtime_func.LAST_EXCEPTION = None
    raise exc


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
_STEP = {kind: _SLOT // ctypes.sizeof(ctype) for kind, ctype in _VIEW_TYPES.items()}


class Signature:
    """A function type, laid out once per export and shared by every instance's FastFunc."""

    __slots__ = ("ins", "n", "outs", "params", "results", "views")

    def __init__(self, params: tuple[str, ...], results: tuple[str, ...]) -> None:
        unsupported = set(params + results) - KINDS
        if unsupported:
            raise TypeError(f"unsupported value types {sorted(unsupported)}")
        self.params = params
        self.results = results
        self.n = max(len(params), len(results), 1)
        # (kind, array type) for each value kind used: views are made of these per instance.
        self.views = tuple(
            (kind, _VIEW_TYPES[kind] * (_STEP[kind] * self.n))
            for kind in sorted(set(params + results))
        )
        self.ins = tuple((k, i * _STEP[k]) for i, k in enumerate(params))
        self.outs = tuple((k, i * _STEP[k]) for i, k in enumerate(results))

    @classmethod
    def of(cls, store: wasmtime.Store, func: wasmtime.Func) -> Signature:
        ty = func.type(store)
        return cls(tuple(map(kind_of, ty.params)), tuple(map(kind_of, ty.results)))


class FastFunc:
    """One exported function bound to one store, callable with plain Python numbers."""

    __slots__ = ("_ctx", "_func", "_ins", "_keep", "_n", "_outs", "_raw", "signature")

    def __init__(self, ctx: Any, func: Any, signature: Signature, keepalive: Any) -> None:
        """`ctx` is the store context pointer, `func` a `wasmtime_func_t` of that store."""
        self.signature = signature
        self._n = signature.n
        self._raw = (_b.wasmtime_val_raw_t * signature.n)()
        views = {kind: array.from_buffer(self._raw) for kind, array in signature.views}
        self._ins = tuple((views[k], i) for k, i in signature.ins)
        self._outs = tuple((views[k], i) for k, i in signature.outs)
        self._keep = keepalive  # the store: the context pointer lives as long as it does
        self._ctx = ctx
        self._func = ctypes.byref(func)

    @property
    def params(self) -> tuple[str, ...]:
        return self.signature.params

    @property
    def results(self) -> tuple[str, ...]:
        return self.signature.results

    def __call__(self, *args: Any) -> list[Any]:
        for (view, index), value in zip(self._ins, args):  # noqa: B905 (arity checked by caller)
            view[index] = value
        trap = _TrapPtr()
        err = _call_unchecked(self._ctx, self._func, self._raw, self._n, ctypes.byref(trap))
        if err:
            raise_pending()
            raise wasmtime.WasmtimeError._from_ptr(err)
        if trap:
            raise_pending()
            raise wasmtime.Trap._from_ptr(trap)
        return [view[index] for view, index in self._outs]


def fast_func(store: wasmtime.Store, func: wasmtime.Func) -> FastFunc:
    """A FastFunc for a wasmtime-py Func (the signature is read from the store)."""
    return FastFunc(store._context(), func._func, Signature.of(store, func), store)
