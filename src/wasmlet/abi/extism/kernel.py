"""The Extism kernel: a small wasm module that owns the memory shared by host and plugin.

Extism plugins import `alloc`, `load_u64`, `output_set`, ... from `extism:host/env` and
exchange every byte through a second linear memory, the *kernel memory*. wasmlet implements
that memory and its allocator in wasm (`kernel.wat`), instantiated once per store and linked
into the plugin, so the plugin's byte traffic never leaves wasm. The host touches the kernel
only a few times per call, through `Kernel`, moving whole buffers with one memcpy.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import weakref
from pathlib import Path

import wasmtime

from wasmlet.errors import GuestError, MemoryLimit
from wasmlet.wasm import native
from wasmlet.wasm.fastcall import FastFunc, Signature

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

# The host-only entry points (the plugin never imports them).
HOST_EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "wasmlet_begin": (("i64",), ("i64",)),
    "wasmlet_end": ((), ("i64", "i64", "i64", "i64")),
}
# FastFunc layouts made from the tables, not read from each instance: wasmtime-py's type
# query costs ~25 us per function, and a kernel has seven FastFuncs per store.
_SIGNATURES = {name: Signature(*sig) for name, sig in {**KERNEL_EXPORTS, **HOST_EXPORTS}.items()}

_modules: weakref.WeakKeyDictionary[wasmtime.Engine, wasmtime.Module] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _compile(
    engine: wasmtime.Engine, wat: str, signatures: dict[str, Signature]
) -> wasmtime.Module:
    """`wat` compiled, its function exports checked against the signatures FastFuncs of it
    will assume (they call unchecked: a mismatch would corrupt memory, not fail)."""
    module = wasmtime.Module(engine, wat)  # text: Module compiles it with wat2wasm
    found = {e.name: e.type for e in module.exports}
    for name, sig in signatures.items():
        ty = found.get(name)
        if not isinstance(ty, wasmtime.FuncType) or (
            tuple(map(str, ty.params)),
            tuple(map(str, ty.results)),
        ) != (sig.params, sig.results):
            raise RuntimeError(f"extism kernel export {name!r} does not have its expected type")
    return module


def kernel_module(engine: wasmtime.Engine) -> wasmtime.Module:
    """The kernel compiled for `engine` (once per engine)."""
    with _lock:
        module = _modules.get(engine)
        if module is None:
            module = _modules[engine] = _compile(engine, KERNEL_WAT.read_text(), _SIGNATURES)
        return module


# A host-only helper module, one instance per store and export (made on an instance's second
# call, so instances used once never pay for it): wasmlet_begin, the plugin's export and
# wasmlet_end in one wasm call instead of three. The host first stages the input where
# wasmlet_begin will put it (`_STAGE`; `at` = 0 for no input), and `run` runs nothing unless
# that is where it went. Results: the export's return code (0 for an export without one),
# wasmlet_end's four, the kernel memory's size in pages, and 1 (0: nothing ran). A few
# instructions, so a call burns ~10 more fuel than with three calls.
RUNNER_WAT = """
(module
  (import "kernel" "begin" (func $begin (param i64) (result i64)))
  (import "kernel" "end" (func $end (result i64 i64 i64 i64)))
  (import "kernel" "memory" (memory 0))
  (import "plugin" "export" (func $export {result}))
  (func (export "run") (param $n i64) (param $at i64) (result i32 i64 i64 i64 i64 i32 i32)
    (if (i64.ne (call $begin (local.get $n)) (local.get $at))
      (then
        (return (i32.const 0) (i64.const 0) (i64.const 0) (i64.const 0) (i64.const 0)
                (i32.const 0) (i32.const 0))))
    {call}
    (call $end)
    (memory.size)
    (i32.const 1)))
"""
_RUNNER_VARIANTS = {
    True: RUNNER_WAT.format(result="(result i32)", call="(call $export)"),
    False: RUNNER_WAT.format(result="", call="(i32.const 0) (call $export)"),
}
_RUN_SIGNATURE = Signature(("i64", "i64"), ("i32", "i64", "i64", "i64", "i64", "i32", "i32"))
# kernel.wat: the handle of the first block after a reset (BASE + HDR).
_STAGE = 40

_runner_modules: weakref.WeakKeyDictionary[wasmtime.Engine, dict[bool, wasmtime.Module]] = (
    weakref.WeakKeyDictionary()
)


def runner_module(engine: wasmtime.Engine, returns_code: bool) -> wasmtime.Module:
    """The runner for exports with (True) or without an i32 result, compiled for `engine`."""
    with _lock:
        modules = _runner_modules.setdefault(engine, {})
        module = modules.get(returns_code)
        if module is None:
            module = modules[returns_code] = _compile(
                engine, _RUNNER_VARIANTS[returns_code], {"run": _RUN_SIGNATURE}
            )
        return module


def _u64(value: int) -> int:
    """i64 results come back signed; handles and lengths are unsigned."""
    return value & 0xFFFF_FFFF_FFFF_FFFF


# Raw wasm values are 16-byte slots (fastcall.py), here read and written with one struct
# call each; handles and lengths read unsigned (they are u64).
_ARG = struct.Struct("<q")
_HANDLE = struct.Struct("<Q")
_END = struct.Struct("<Q8xQ8xQ8xQ8x")
_RUN_ARGS = struct.Struct("<q8xq8x")
_RUN = struct.Struct("<i12xQ8xQ8xQ8xQ8xI12xi12x")


class Kernel:
    """One kernel instance in one store, with the host's bulk operations on it.

    `exports` holds the plugin-facing functions to link into the plugin under
    `extism:host/env`. Kernel functions are wasm: with fuel metering on, they need fuel in
    the store like any guest code.
    """

    __slots__ = (
        "_alloc",
        "_begin",
        "_begin_func",
        "_ctx",
        "_end",
        "_end_func",
        "_error_get",
        "_free",
        "_length",
        "_memory_ref",
        "_reset",
        "_view",
        "_view_size",
        "error_limit",
        "exports",
        "instance",
        "memory",
        "output_limit",
        "runners",
        "store",
    )

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        self.store = store
        self._ctx = native.store_context(store)
        self.instance = instance
        found = instance.exports(store)
        memory = found["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory
        self._memory_ref = ctypes.byref(native.memory_handle(memory))
        # The kernel memory as a memoryview, valid while the memory has `_view_size` bytes:
        # a memory never shrinks and moves only when it grows, so an unchanged size means an
        # unchanged address. Cheaper than a base-address call plus memmove/string_at.
        self._view = memoryview(b"")
        self._view_size = -1
        self.exports: dict[str, wasmtime.Func] = {}
        for name in KERNEL_EXPORTS:
            func = found[name]
            assert isinstance(func, wasmtime.Func)
            self.exports[name] = func
        begin, end = found["wasmlet_begin"], found["wasmlet_end"]
        assert isinstance(begin, wasmtime.Func) and isinstance(end, wasmtime.Func)
        self._begin_func, self._end_func = begin, end
        self._alloc = self._fast("alloc", self.exports["alloc"])
        self._length = self._fast("length", self.exports["length"])
        self._error_get = self._fast("error_get", self.exports["error_get"])
        self._reset = self._fast("reset", self.exports["reset"])
        self._free = self._fast("free", self.exports["free"])
        self._begin = self._fast("wasmlet_begin", begin)
        self._end = self._fast("wasmlet_end", end)
        self.runners: dict[str, FastFunc] = {}  # export name -> its runner in this store
        # Bytes the host copies out of kernel memory per call: the output (a longer one
        # fails the call before any copy) and the error message (clipped). 0: no limit.
        self.output_limit = 0
        self.error_limit = 0

    @classmethod
    def instantiate(cls, store: wasmtime.Store) -> Kernel:
        """A fresh kernel in `store` (which counts its memory against the store's limits)."""
        return cls(store, wasmtime.Instance(store, kernel_module(store.engine), []))

    def _fast(self, name: str, func: wasmtime.Func) -> FastFunc:
        return FastFunc(self._ctx, native.func_handle(func), _SIGNATURES[name], self.store)

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
        begin = self._begin
        _ARG.pack_into(begin.raw, 0, size)
        begin.invoke()
        if not size:
            return
        (handle,) = _HANDLE.unpack_from(begin.raw)
        if not handle:
            raise MemoryLimit(f"plugin input of {size} bytes does not fit in kernel memory")
        view = self._current()
        if handle + size > len(view):  # cannot happen with a sound kernel; never corrupt
            raise RuntimeError("extism kernel returned a block outside its memory")
        view[handle : handle + size] = data

    def finish(self) -> tuple[bytes, str | None]:
        """(output bytes, error message or None) in one wasm call and at most two copies."""
        end = self._end
        end.invoke()
        out_off, out_len, err, err_len = _END.unpack_from(end.raw)
        return self._ended(out_off, out_len, err, err_len, self._current())

    def call(
        self, data: bytes, fn: FastFunc, runner: FastFunc | None = None
    ) -> tuple[bytes, str | None, int]:
        """Run the plugin export `fn` on `data`: (output, error message or None, the export's
        return code, 0 if it has none). With `runner` (see `runner`) and room for the input
        without growing the memory, in one wasm call; otherwise begin, `fn` and finish."""
        size = len(data)
        if runner is not None:
            length = native.raw_memory_size(self._ctx, self._memory_ref)
            if _STAGE + ((size + 7) & -8) <= length:  # the input block fits: begin puts it here
                view = self._view if length == self._view_size else self._map(length)
                view[_STAGE : _STAGE + size] = data
                raw = runner.raw
                _RUN_ARGS.pack_into(raw, 0, size, _STAGE if size else 0)
                runner.invoke()
                code, out_off, out_len, err, err_len, pages, ran = _RUN.unpack_from(raw)
                if not ran:  # cannot happen with this kernel: the export did not run
                    raise RuntimeError("extism kernel put the input elsewhere than staged")
                length = pages << 16
                view = self._view if length == self._view_size else self._map(length)
                output, message = self._ended(out_off, out_len, err, err_len, view)
                return output, message, code
        self.begin(data)
        results = fn()
        output, message = self.finish()
        return output, message, results[0] if results else 0

    def runner(self, name: str, export: wasmtime.Func, returns_code: bool) -> FastFunc:
        """The runner of plugin export `name` in this store (made on first use)."""
        runner = self.runners.get(name)
        if runner is None:
            module = runner_module(self.store.engine, returns_code)
            imports = (self._begin_func, self._end_func, self.memory, export)
            instance = wasmtime.Instance(self.store, module, imports)
            run = instance.exports(self.store)["run"]
            assert isinstance(run, wasmtime.Func)
            runner = self.runners[name] = FastFunc(
                self._ctx, native.func_handle(run), _RUN_SIGNATURE, self.store
            )
        return runner

    def _ended(
        self, out_off: int, out_len: int, err: int, err_len: int, view: memoryview
    ) -> tuple[bytes, str | None]:
        """Output and error message from wasmlet_end's results; `view`: the memory now.

        The lengths the plugin declared are checked before anything is copied: an output
        over `output_limit` fails the call (an error set wins: it says why), and an error
        message is clipped to `error_limit`."""
        length = len(view)
        message = None
        if err and err_len:
            message = self._clipped(view, err, err_len)
        elif self.output_limit and out_len > self.output_limit:
            raise GuestError(
                f"output of {out_len} bytes exceeds the limit of {self.output_limit} bytes"
            )
        # The kernel validates ranges; never read out of bounds all the same.
        if message is not None or out_off + out_len > length:
            return b"", message
        return view[out_off : out_off + out_len].tobytes(), None

    def _clipped(self, view: memoryview, offset: int, size: int) -> str:
        """A message of `size` bytes at `offset`, at most `error_limit` of them copied."""
        limit = self.error_limit
        taken = min(size, limit) if limit else size
        if offset + taken > len(view):
            return "(error message outside the plugin's memory)"
        text = view[offset : offset + taken].tobytes().decode("utf-8", "replace")
        return text if taken == size else f"{text}[... {size - taken} bytes dropped]"

    def output(self) -> bytes:
        """The bytes of the last `output_set` (b"" when none)."""
        return self.finish()[0]

    def error(self) -> str | None:
        """The plugin's error message (clipped to `error_limit`), or None when no
        (non-empty) error is set."""
        handle = _u64(self._error_get()[0])
        size = _u64(self._length(handle)[0]) if handle else 0
        if not size:
            return None
        return self._clipped(self._current(), handle, size)

    def read_prefix(self, handle: int, limit: int) -> tuple[bytes, int]:
        """At most `limit` bytes of a live block, and the block's whole length."""
        size = self.length(handle)
        return self._copy_out(handle, min(size, limit)), size

    # -- blocks ---------------------------------------------------------------------------------

    def read(self, handle: int) -> bytes:
        """The contents of a live block; b"" for 0 or anything that is not a live block."""
        if not handle:
            return b""
        return self._copy_out(handle, _u64(self._length(handle)[0]))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """A new block holding `data`; 0 when `data` is empty or the memory is exhausted."""
        if type(data) is not bytes:
            data = bytes(data)  # a memoryview of another format cannot be assigned
        size = len(data)
        if not size:
            return 0
        handle = _u64(self._alloc(size)[0])
        if handle:
            view = self._current()
            if handle + size > len(view):  # cannot happen with a sound kernel; never corrupt
                raise RuntimeError("extism kernel returned a block outside its memory")
            view[handle : handle + size] = data
        return handle

    def free(self, handle: int) -> None:
        self._free(handle)

    def length(self, handle: int) -> int:
        return _u64(self._length(handle)[0]) if handle else 0

    def _map(self, length: int) -> memoryview:
        """A view of the kernel memory, which has `length` bytes now."""
        base = native.raw_memory_data(self._ctx, self._memory_ref)
        self._view = memoryview((ctypes.c_ubyte * length).from_address(base)).cast("B")
        self._view_size = length
        return self._view

    def _current(self) -> memoryview:
        """The view, after anything that may have grown the memory."""
        length = native.raw_memory_size(self._ctx, self._memory_ref)
        return self._view if length == self._view_size else self._map(length)

    def _copy_out(self, offset: int, size: int) -> bytes:
        if not size:
            return b""
        view = self._current()
        if offset + size > len(view):  # the kernel validates ranges; never read out of bounds
            return b""
        return view[offset : offset + size].tobytes()
