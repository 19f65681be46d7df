"""The Extism kernel: a small wasm module that owns the memory shared by host and plugin.

Extism plugins import `alloc`, `load_u64`, `output_set`, ... from `extism:host/env` and
exchange every byte through a second linear memory, the *kernel memory*. wasmlet implements
that memory and its allocator in wasm (`kernel.wat`), instantiated once per store and linked
into the plugin, so the plugin's byte traffic never leaves wasm. The host touches the kernel
only a few times per call, through `Kernel`, moving whole buffers with one memcpy.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from pathlib import Path

import wasmtime

from wasmlet.errors import MemoryLimit
from wasmlet.runtime import native
from wasmlet.runtime.fastcall import FastFunc, fast_func

KERNEL_WAT = Path(__file__).with_name("kernel.wat")

# The plugin-facing functions (namespace `extism:host/env`): name -> (params, results).
KERNEL_EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alloc": (("i64",), ("i64",)),
    "free": (("i64",), ()),
    "length": (("i64",), ("i64",)),
    "length_unsafe": (("i64",), ("i64",)),
    "load_u8": (("i64",), ("i32",)),
    "load_u64": (("i64",), ("i64",)),
    "store_u8": (("i64", "i32"), ()),
    "store_u64": (("i64", "i64"), ()),
    "input_length": ((), ("i64",)),
    "input_offset": ((), ("i64",)),
    "input_load_u8": (("i64",), ("i32",)),
    "input_load_u64": (("i64",), ("i64",)),
    "input_set": (("i64", "i64"), ()),
    "output_set": (("i64", "i64"), ()),
    "output_length": ((), ("i64",)),
    "output_offset": ((), ("i64",)),
    "error_set": (("i64",), ()),
    "error_get": ((), ("i64",)),
    "reset": ((), ()),
    "memory_bytes": ((), ("i64",)),
}

_modules: weakref.WeakKeyDictionary[wasmtime.Engine, wasmtime.Module] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def kernel_module(engine: wasmtime.Engine) -> wasmtime.Module:
    """The kernel compiled for `engine` (once per engine)."""
    with _lock:
        module = _modules.get(engine)
        if module is None:
            wasm = wasmtime.wat2wasm(KERNEL_WAT.read_text())
            module = _modules[engine] = wasmtime.Module(engine, wasm)
        return module


def _u64(value: int) -> int:
    """i64 results come back signed; handles and lengths are unsigned."""
    return value & 0xFFFF_FFFF_FFFF_FFFF


class Kernel:
    """One kernel instance in one store, with the host's bulk operations on it.

    `exports` holds the plugin-facing functions to link into the plugin under
    `extism:host/env`. Kernel functions are wasm: with fuel metering on, they need fuel in
    the store like any guest code.
    """

    __slots__ = (
        "_alloc",
        "_begin",
        "_ctx",
        "_end",
        "_error_get",
        "_free",
        "_length",
        "_reset",
        "exports",
        "instance",
        "memory",
        "store",
    )

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        self.store = store
        self._ctx = store._context()
        self.instance = instance
        found = instance.exports(store)
        memory = found["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory
        self.exports: dict[str, wasmtime.Func] = {}
        for name in KERNEL_EXPORTS:
            func = found[name]
            assert isinstance(func, wasmtime.Func)
            self.exports[name] = func
        self._alloc = self._fast("alloc")
        self._length = self._fast("length")
        self._error_get = self._fast("error_get")
        self._reset = self._fast("reset")
        self._begin = fast_func(store, found["wasmlet_begin"])  # type: ignore[arg-type]
        self._end = fast_func(store, found["wasmlet_end"])  # type: ignore[arg-type]
        self._free = self._fast("free")

    @classmethod
    def instantiate(cls, store: wasmtime.Store) -> Kernel:
        """A fresh kernel in `store` (which counts its memory against the store's limits)."""
        return cls(store, wasmtime.Instance(store, kernel_module(store.engine), []))

    def _fast(self, name: str) -> FastFunc:
        return fast_func(self.store, self.exports[name])

    # -- host side of a call ------------------------------------------------------------------

    def reset(self) -> None:
        """Drop every block and clear input, output and error."""
        self._reset()

    def set_input(self, data: bytes | bytearray | memoryview) -> None:
        """Start a call: reset, then copy `data` into a new block and make it the input.

        Raises MemoryLimit when the kernel memory cannot hold it.
        """
        self.begin(data if type(data) is bytes else bytes(data))

    def begin(self, data: bytes) -> None:
        """`set_input` in one wasm call (reset + alloc + input_set), then one copy."""
        size = len(data)
        handle = _u64(self._begin(size)[0])
        if not size:
            return
        if not handle:
            raise MemoryLimit(f"plugin input of {size} bytes does not fit in kernel memory")
        base, length = self._span()
        if handle + size > length:  # cannot happen with a sound kernel; never corrupt
            raise RuntimeError("extism kernel returned a block outside its memory")
        ctypes.memmove(base + handle, data, size)

    def finish(self) -> tuple[bytes, str | None]:
        """(output bytes, error message or None) in one wasm call and at most two copies."""
        out_off, out_len, err, err_len = self._end()
        output = self._copy_out(_u64(out_off), _u64(out_len))
        if not err or not err_len:
            return output, None
        return output, self._copy_out(_u64(err), _u64(err_len)).decode("utf-8", "replace")

    def output(self) -> bytes:
        """The bytes of the last `output_set` (b"" when none)."""
        return self.finish()[0]

    def error(self) -> str | None:
        """The plugin's error message, or None when no (non-empty) error is set."""
        handle = _u64(self._error_get()[0])
        if not handle:
            return None
        data = self.read(handle)
        return data.decode("utf-8", errors="replace") if data else None

    # -- blocks ---------------------------------------------------------------------------------

    def read(self, handle: int) -> bytes:
        """The contents of a live block; b"" for 0 or anything that is not a live block."""
        if not handle:
            return b""
        return self._copy_out(handle, _u64(self._length(handle)[0]))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """A new block holding `data`; 0 when `data` is empty or the memory is exhausted."""
        if type(data) is not bytes:
            data = bytes(data)  # ctypes.memmove takes bytes, not bytearray or memoryview
        size = len(data)
        if not size:
            return 0
        handle = _u64(self._alloc(size)[0])
        if handle:
            base, length = self._span()
            if handle + size > length:  # cannot happen with a sound kernel; never corrupt
                raise RuntimeError("extism kernel returned a block outside its memory")
            ctypes.memmove(base + handle, data, size)
        return handle

    def free(self, handle: int) -> None:
        self._free(handle)

    def length(self, handle: int) -> int:
        return _u64(self._length(handle)[0]) if handle else 0

    def _span(self) -> tuple[int, int]:
        """(address, size) of the kernel memory now: re-read after anything that may grow it."""
        return native.memory_base(self._ctx, self.memory), native.memory_size(
            self._ctx, self.memory
        )

    def _copy_out(self, offset: int, size: int) -> bytes:
        if not size:
            return b""
        base, length = self._span()
        if offset + size > length:  # the kernel validates ranges; never read out of bounds
            return b""
        return ctypes.string_at(base + offset, size)
