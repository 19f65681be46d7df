"""Low-overhead calls into exported wasm functions.

wasmtime-py's `Func.__call__` re-reads the function type and boxes every value through
Python objects on each call: ~35 us for `gcd(a, b)` on this hardware, more than the guest
itself. Calling `wasmtime_func_call_unchecked` with a preallocated raw value array costs
~0.4 us. It is "unchecked" only in that argument types must match the signature, which
`FastFunc` fixes once from the function type. ctypes releases the GIL for the call, so
guests run in parallel with the event loop and each other.

The C function is bound without `argtypes`: ctypes' per-argument conversion cost ~0.7 us of
the ~1 us a typed call took. Every argument is therefore a ctypes object made once per
FastFunc (pointer, byref, array, c_size_t), never a Python int.

This reaches into wasmtime-py's private `_bindings` and `_func`, hence its place in
`wasmlet.wasm`; the dependency is pinned exactly and tests/runtime/test_fastcall.py covers
every value kind.
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
    pending: BaseException | None = getattr(_RAISED, "exc", None)
    if pending is None:
        return
    exc = pending  # a new name: mypy would widen `pending` to Optional again at the `is`
    _RAISED.exc = None
    if _wasmtime_func.LAST_EXCEPTION is exc:
        _wasmtime_func.LAST_EXCEPTION = None
    raise exc


# Untyped (see the module docstring); a ctypes.CDLL function, so the GIL is released.
_call_unchecked = ctypes.CDLL(_b.dll._name).wasmtime_func_call_unchecked
_call_unchecked.restype = ctypes.c_void_p  # wasmtime_error_t *, as an int or None
_TrapPtr = ctypes.POINTER(_b.wasm_trap_t)
_ErrPtr = ctypes.POINTER(_b.wasmtime_error_t)


def _failure(err: int | None, trap: ctypes.c_void_p) -> BaseException:
    """The exception for a call that returned an error or a trap; clears `trap` for the
    next call. A host function's own exception, if one caused it, is raised instead."""
    exc: BaseException
    if err:
        exc = wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, _ErrPtr))
    else:
        address, trap.value = trap.value, None
        assert address is not None  # the caller saw an error or a trap
        exc = wasmtime.Trap._from_ptr(ctypes.cast(address, _TrapPtr))
    raise_pending()
    return exc


KINDS = {"i32", "i64", "f32", "f64"}


def kind_of(valtype: wasmtime.ValType) -> str:
    return str(valtype)


# Each raw value is a 16-byte union (room for a v128). Typed views over the same buffer
# let us read and write slots by index without creating a ctypes object per access.
_SLOT = 16
_VIEW_TYPES: dict[str, type[ctypes._SimpleCData[Any]]] = {
    "i32": ctypes.c_int32,
    "i64": ctypes.c_int64,
    "f32": ctypes.c_float,
    "f64": ctypes.c_double,
}
_STEP = {kind: _SLOT // ctypes.sizeof(ctype) for kind, ctype in _VIEW_TYPES.items()}


class Signature:
    """A function type, laid out once per export and shared by every instance's FastFunc."""

    __slots__ = ("buffer", "ins", "n", "outs", "params", "results", "size", "views")

    def __init__(self, params: tuple[str, ...], results: tuple[str, ...]) -> None:
        unsupported = set(params + results) - KINDS
        if unsupported:
            raise TypeError(f"unsupported value types {sorted(unsupported)}")
        self.params = params
        self.results = results
        self.n = max(len(params), len(results), 1)
        self.size = ctypes.c_size_t(self.n)  # passed by value, never written: shared
        # One typed array per value kind used, all over the same 16 * n bytes: an instance's
        # buffer is the first (no kind: i32), the others views over it: a FastFunc is made
        # per fresh instance, so this is laid out here once.
        kinds = sorted(set(params + results)) or ["i32"]
        self.buffer = _VIEW_TYPES[kinds[0]] * (_STEP[kinds[0]] * self.n)
        self.views = tuple(_VIEW_TYPES[k] * (_STEP[k] * self.n) for k in kinds[1:])
        # (position of the kind's view, index in it) per parameter and result.
        self.ins = tuple((kinds.index(k), i * _STEP[k]) for i, k in enumerate(params))
        self.outs = tuple((kinds.index(k), i * _STEP[k]) for i, k in enumerate(results))

    @classmethod
    def of(cls, store: wasmtime.Store, func: wasmtime.Func) -> Signature:
        ty = func.type(store)
        return cls(tuple(map(kind_of, ty.params)), tuple(map(kind_of, ty.results)))


class FastFunc:
    """One exported function bound to one store, callable with plain Python numbers."""

    __slots__ = (
        "_args",
        "_ins",
        "_keep",
        "_outs",
        "_trap",
        "params",
        "raw",
        "results",
        "signature",
    )

    def __init__(self, ctx: Any, func: Any, signature: Signature, keepalive: Any) -> None:
        """`ctx` is the store context pointer, `func` a `wasmtime_func_t` of that store."""
        self.signature = signature
        self.params: tuple[str, ...] = signature.params
        self.results: tuple[str, ...] = signature.results
        # Arguments go in and results come out here (read it after `invoke` with a struct).
        raw = self.raw = signature.buffer()
        views = [raw]
        if signature.views:
            # from_address, ~4x cheaper than from_buffer: the views live in this object,
            # which holds `raw`.
            address = ctypes.addressof(raw)
            views += [array.from_address(address) for array in signature.views]
        self._ins = tuple([(views[v], i) for v, i in signature.ins])
        self._outs = tuple([(views[v], i) for v, i in signature.outs])
        self._keep = keepalive  # the store: the context pointer lives as long as it does
        # wasmtime writes a trap here only when there is one; _failure clears it again.
        trap = self._trap = ctypes.c_void_p()
        self._args = (ctx, ctypes.byref(func), raw, signature.size, ctypes.byref(trap))

    def __call__(self, *args: Any) -> list[Any]:
        for (view, index), value in zip(self._ins, args):  # noqa: B905 (arity checked by caller)
            view[index] = value
        err = _call_unchecked(*self._args)
        if err or self._trap.value:
            raise _failure(err, self._trap)
        return [view[index] for view, index in self._outs]

    def invoke(self) -> None:
        """Call with the arguments already in `raw`; the results are left there."""
        err = _call_unchecked(*self._args)
        if err or self._trap.value:
            raise _failure(err, self._trap)


def fast_func(store: wasmtime.Store, func: wasmtime.Func) -> FastFunc:
    """A FastFunc for a wasmtime-py Func (the signature is read from the store)."""
    return FastFunc(store._context(), func._func, Signature.of(store, func), store)
