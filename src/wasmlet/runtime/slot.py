"""A slot: one store and one instance, held by at most one request at a time."""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime

from wasmlet.runtime import native
from wasmlet.runtime.capture import BoundedBuffer
from wasmlet.runtime.fastcall import FastFunc

# Fuel given to calls without a fuel limit when the engine meters fuel: effectively unbounded
# (the epoch deadline still bounds time), large enough never to run out.
UNLIMITED_FUEL = 1 << 62


class Slot:
    __slots__ = (
        "_fast",
        "abi_state",
        "calls",
        "ctx",
        "fuel_out",
        "function",
        "instance",
        "logs",
        "memory",
        "store",
    )

    def __init__(self, store: wasmtime.Store, log_limit: int) -> None:
        self.store = store
        self.ctx = store._context()  # cached: wasmtime-py re-derives it on every call
        self.fuel_out = ctypes.c_uint64()
        self.instance: wasmtime.Instance | None = None
        self.memory: wasmtime.Memory | None = None
        self.logs = BoundedBuffer(log_limit)
        self.abi_state: Any = None
        self.calls = 0
        self.function: Any = None  # the InstancePool this slot belongs to
        self._fast: dict[str, FastFunc] = {}

    def bind(self, instance: wasmtime.Instance) -> None:
        self.instance = instance
        memory = instance.exports(self.store).get("memory")
        if isinstance(memory, wasmtime.Memory):
            self.memory = memory

    def func(self, name: str) -> FastFunc | None:
        fast = self._fast.get(name)
        if fast is None:
            assert self.instance is not None
            ext = self.instance.exports(self.store).get(name)
            if not isinstance(ext, wasmtime.Func):
                return None
            fast = self._fast[name] = FastFunc(self.store, ext)
        return fast

    def memory_bytes(self) -> int:
        if self.memory is None:
            return 0
        return native.memory_size(self.ctx, self.memory)
