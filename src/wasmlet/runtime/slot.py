"""A slot: one store and one instance, held by at most one request at a time."""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime

from wasmlet.runtime.capture import BoundedBuffer
from wasmlet.wasm import native
from wasmlet.wasm.fastcall import FastFunc, Signature

_FUNC = native.EXTERN_FUNC
_MEMORY = native.EXTERN_MEMORY

# Fuel given to calls without a fuel limit when the engine meters fuel: effectively unbounded
# (the epoch deadline still bounds time), large enough never to run out.
UNLIMITED_FUEL = 1 << 62


class Slot:
    __slots__ = (
        "_extra_memories",
        "_fast",
        "_instance_ref",
        "_memory_refs",
        "abi_state",
        "calls",
        "ctx",
        "fuel_out",
        "fuel_ref",
        "function",
        "host",
        "instance",
        "logs",
        "memory",
        "retired",
        "store",
    )

    def __init__(self, store: wasmtime.Store, log_limit: int, ctx: Any = None) -> None:
        self.store = store
        # Cached (wasmtime-py re-derives it on every call); `ctx` when the caller has it.
        self.ctx = native.store_context(store) if ctx is None else ctx
        # Fuel in and out of the raw native calls: set_fuel passes it by value, get_fuel
        # writes it through `fuel_ref`.
        self.fuel_out = ctypes.c_uint64()
        self.fuel_ref = ctypes.byref(self.fuel_out)
        self.instance: wasmtime.Instance | None = None
        self._instance_ref: Any = None  # byref(the instance's handle), for export lookups
        self.memory: wasmtime.Memory | None = None
        self.logs = BoundedBuffer(log_limit)
        self.abi_state: Any = None
        self._extra_memories: tuple[wasmtime.Memory, ...] = ()
        # byref() of every memory's handle, made once: memory_bytes runs after every call.
        self._memory_refs: tuple[Any, ...] = ()
        self.host: Any = None  # the store's HostContext, when its guest imports host functions
        self.calls = 0
        self.retired = False  # set by an ABI when this instance must not serve again
        self.function: Any = None  # the InstancePool this slot belongs to
        self._fast: dict[str, FastFunc] = {}

    def bind(self, instance: wasmtime.Instance) -> None:
        self.instance = instance
        self._instance_ref = ctypes.byref(native.instance_handle(instance))
        item = self._export(b"memory")
        if item is not None and item.kind == _MEMORY:
            memory = item.of.memory
            self.memory = native.memory_from_raw(memory)
            if not self._extra_memories:  # the usual case, without _refresh_refs' generator
                self._memory_refs = (ctypes.byref(memory),)
                return
        self._refresh_refs()

    @property
    def extra_memories(self) -> tuple[wasmtime.Memory, ...]:
        """The store's memories besides the guest's own (an Extism plugin's kernel)."""
        return self._extra_memories

    @extra_memories.setter
    def extra_memories(self, memories: tuple[wasmtime.Memory, ...]) -> None:
        self._extra_memories = memories
        self._refresh_refs()

    def _refresh_refs(self) -> None:
        own = () if self.memory is None else (self.memory,)
        handle = native.memory_handle
        self._memory_refs = tuple(ctypes.byref(handle(m)) for m in (*own, *self._extra_memories))

    def func(self, name: str) -> FastFunc | None:
        """The export `name` as a FastFunc, or None when it is not a function export."""
        fast = self._fast.get(name)
        if fast is None:
            ext = self._export(name.encode())
            if ext is None or ext.kind != _FUNC:
                return None
            func = ext.of.func
            signature = self.function.signature(name)
            if signature is None:
                signature = Signature.of(self.store, native.func_from_raw(func))
            fast = self._fast[name] = FastFunc(self.ctx, func, signature, self.store)
        return fast

    def export_func(self, name: str) -> wasmtime.Func | None:
        """The export `name` as a wasmtime-py Func, or None when it is not a function."""
        ext = self._export(name.encode())
        if ext is None or ext.kind != _FUNC:
            return None
        return native.func_from_raw(ext.of.func)

    def _export(self, name: bytes) -> Any:
        # One lookup by name: wasmtime-py's `exports()` wraps every export of the instance.
        assert self.instance is not None
        item = native.Extern()
        found = native.raw_export_get(
            self.ctx, self._instance_ref, name, ctypes.c_size_t(len(name)), ctypes.byref(item)
        )
        return item if found else None

    def memory_bytes(self) -> int:
        """Bytes of every linear memory of the store (an Extism plugin's kernel too)."""
        ctx = self.ctx
        size = native.raw_memory_size
        total = 0
        for ref in self._memory_refs:
            total += size(ctx, ref)
        return total

    def largest_memory(self) -> int:
        """The fullest single memory: the store's cap applies to each memory on its own."""
        sizes = [native.memory_size(self.ctx, m) for m in (self.memory, *self.extra_memories) if m]
        return max(sizes, default=0)
