"""The Extism kernel (kernel.wat): every `extism:host/env` kernel function, and the host side."""

from __future__ import annotations

import itertools
import random

import pytest
import wasmtime

from wasmlet.abi.extism.kernel import KERNEL_EXPORTS, Kernel, kernel_module
from wasmlet.errors import MemoryLimit

PAGE = 65536
HDR = 24  # kernel.wat's block header, for tests that reason about layout
MASK = 2**64 - 1


def i64(value: int) -> int:
    """An unsigned 64-bit value as the signed i64 wasm expects."""
    value &= MASK
    return value - 2**64 if value >= 2**63 else value


class K:
    """A kernel in a fresh store, its functions callable as methods with unsigned results."""

    def __init__(self, engine: wasmtime.Engine, memory_size: int | None = None) -> None:
        self.store = wasmtime.Store(engine)
        if memory_size is not None:
            self.store.set_limits(memory_size=memory_size)
        self.kernel = Kernel.instantiate(self.store)

    def __getattr__(self, name: str):
        func = self.kernel.exports[name]

        params = KERNEL_EXPORTS[name][0]

        def call(*args: int) -> int | None:
            values = [i64(a) if kind == "i64" else a for kind, a in zip(params, args, strict=True)]
            result = func(self.store, *values)
            return None if result is None else result & MASK

        return call

    @property
    def size(self) -> int:
        return self.kernel.memory.data_len(self.store)

    def snapshot(self) -> bytes:
        return bytes(self.kernel.memory.read(self.store, 0, self.size))


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


@pytest.fixture
def k(engine: wasmtime.Engine) -> K:
    return K(engine)


# -- module shape ------------------------------------------------------------------------------


def test_exports_match_the_abi_table(engine):
    module = kernel_module(engine)
    exports = {e.name: e.type for e in module.exports}
    # plus the two host-only entry points the plugin never imports
    assert set(exports) == set(KERNEL_EXPORTS) | {"memory", "wasmlet_begin", "wasmlet_end"}
    for name, (params, results) in KERNEL_EXPORTS.items():
        ty = exports[name]
        assert isinstance(ty, wasmtime.FuncType)
        assert tuple(map(str, ty.params)) == params, name
        assert tuple(map(str, ty.results)) == results, name
    memory = exports["memory"]
    assert isinstance(memory, wasmtime.MemoryType)
    assert memory.limits.min == 1 and memory.limits.max is None
    assert not module.imports


def test_module_is_compiled_once_per_engine(engine):
    assert kernel_module(engine) is kernel_module(engine)
    assert kernel_module(wasmtime.Engine()) is not kernel_module(engine)


# -- alloc / length / free ---------------------------------------------------------------------


def test_alloc_gives_distinct_disjoint_nonzero_blocks(k):
    sizes = [1, 7, 8, 9, 100, 3, 4096, 1]
    handles = [k.alloc(n) for n in sizes]
    assert all(handles) and len(set(handles)) == len(handles)
    spans = sorted((h, h + n) for h, n in zip(handles, sizes, strict=True))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    assert [k.length(h) for h in handles] == sizes
    assert [k.length_unsafe(h) for h in handles] == sizes


def test_alloc_zero_and_impossible_sizes(k):
    assert k.alloc(0) == 0
    assert k.alloc(2**32) == 0
    assert k.alloc(2**40) == 0
    assert k.alloc(MASK) == 0  # -1 as i64
    assert k.alloc(2**63) == 0
    assert k.memory_bytes() == 0
    assert k.alloc(5)


def test_alloc_grows_by_pages(k):
    assert k.size == PAGE
    h = k.alloc(3 * PAGE)
    assert h and k.length(h) == 3 * PAGE
    assert k.size % PAGE == 0 and k.size >= h + 3 * PAGE
    k.store_u8(h + 3 * PAGE - 1, 0xAB)
    assert k.load_u8(h + 3 * PAGE - 1) == 0xAB


def test_alloc_beyond_the_store_limit_returns_zero(engine):
    k = K(engine, memory_size=2 * PAGE)
    assert k.alloc(2 * PAGE) == 0  # needs a third page for the header
    assert k.alloc(10 * PAGE) == 0
    assert k.size <= 2 * PAGE
    h = k.alloc(PAGE)  # grows to two pages
    assert h and k.length(h) == PAGE
    assert k.alloc(PAGE) == 0
    small = k.alloc(100)
    assert small and k.length(small) == 100 and k.length(h) == PAGE


def test_length_is_zero_for_non_handles(k):
    h = k.alloc(64)
    other = k.alloc(16)
    assert k.length(h) == 64
    for bogus in (
        0,
        1,
        8,
        16,
        h + 1,
        h + 8,
        h + 32,
        h - 1,
        h - HDR,
        other + 8,
        other + 16,
        k.size - 8,
        k.size,
        k.size + 8,
        2**32,
        2**63,
        MASK,
        MASK - 7,
        12345,
    ):
        assert k.length(bogus) == 0, bogus
    assert k.length_unsafe(0) == 0


def test_length_unsafe_never_traps(k):
    k.alloc(10)
    for bogus in (0, 1, 23, 24, 40, 41, k.size, 2**32 + 40, 2**63, MASK):
        assert k.length_unsafe(bogus) in (0, k.length(bogus))


def test_length_ignores_a_forged_header_copied_elsewhere(k):
    """Header bytes copied into a block's data are not believed at another address."""
    h = k.alloc(8)
    data = k.alloc(64)
    header = k.kernel.memory.read(k.store, h - HDR, h)
    k.kernel.memory.write(k.store, header, data + 8)  # claims to be the header of `h`
    assert k.length(data + 8 + HDR) == 0
    assert k.length(h) == 8


def test_free_is_idempotent_and_ignores_non_handles(k):
    a, b, c = k.alloc(10), k.alloc(20), k.alloc(30)
    for bogus in (0, b + 1, b + 8, 12345, k.size, MASK):
        k.free(bogus)
    assert (k.length(a), k.length(b), k.length(c)) == (10, 20, 30)
    k.free(b)
    assert k.length(b) == 0
    k.free(b)
    k.free(b)
    assert (k.length(a), k.length(b), k.length(c)) == (10, 0, 30)
    d = k.alloc(20)  # room left: no reuse yet, so the freed handle stays dead
    assert d != b and k.length(d) == 20
    k.free(b)
    assert k.length(d) == 20


def test_freed_blocks_are_reused_when_memory_is_full(engine):
    k = K(engine, memory_size=PAGE)
    handles = []
    while h := k.alloc(1000):
        handles.append(h)
    assert len(handles) == (PAGE - 16) // (1000 + HDR)
    victim = handles[10]
    k.free(victim)
    assert k.alloc(1000) == victim and k.length(victim) == 1000
    assert k.alloc(1000) == 0
    while k.alloc(8):  # use up the tail too
        pass
    assert k.memory_bytes() > PAGE - 16 - 32
    # a big free block is split: the first part is reused, the rest stays available
    k.free(handles[20])
    small = k.alloc(100)
    assert small == handles[20] and k.length(small) == 100
    rest = k.alloc(500)
    assert rest and small + 100 <= rest < handles[21] and k.length(rest) == 500
    assert k.length(handles[19]) == 1000 and k.length(handles[21]) == 1000
    assert k.alloc(1000) == 0
    # blocks still hold their data after their neighbours were reused
    k.store_u64(handles[21], 0x1122334455667788)
    k.free(rest)
    assert k.alloc(400) == rest
    assert k.load_u64(handles[21]) == 0x1122334455667788


# -- raw loads and stores ----------------------------------------------------------------------


def test_store_load_round_trip_unaligned_with_tail(k):
    data = bytes(range(256)) * 3 + b"tail!"  # 773 bytes: 96 words + 5 tail bytes
    h = k.alloc(len(data) + 1)
    base = h + 1  # deliberately unaligned
    words, tail = divmod(len(data), 8)
    for i in range(words):
        k.store_u64(base + 8 * i, int.from_bytes(data[8 * i : 8 * i + 8], "little"))
    for i in range(words * 8, len(data)):
        k.store_u8(base + i, data[i])
    back = b"".join(k.load_u64(base + 8 * i).to_bytes(8, "little") for i in range(words))
    back += bytes(k.load_u8(base + i) for i in range(words * 8, len(data)))
    assert back == data
    assert k.kernel.memory.read(k.store, base, base + len(data)) == data
    assert tail == 5


def test_loads_and_stores_are_little_endian_unsigned(k):
    h = k.alloc(16)
    k.store_u64(h, 0x0102030405060708)
    assert [k.load_u8(h + i) for i in range(8)] == [8, 7, 6, 5, 4, 3, 2, 1]
    k.store_u64(h + 8, 0xFEDCBA9876543210)  # >= 2**63: travels as a negative i64
    assert k.load_u64(h + 8) == 0xFEDCBA9876543210
    k.store_u8(h, 0x1FF)  # only the low byte is written
    assert k.load_u8(h) == 0xFF and k.load_u8(h + 1) == 7


def test_out_of_range_access_reads_zero_and_writes_nothing(k):
    k.alloc(100)
    size = k.size
    last = size - 8
    k.store_u64(last, 0x0807060504030201)
    assert k.load_u64(last) == 0x0807060504030201  # the last whole word is in range
    assert k.load_u8(size - 1) == 8
    before = k.snapshot()
    for addr in (size, size + 1, 2**32, 2**32 + 5, 2**63, MASK, MASK - 7, MASK - 3):
        assert k.load_u8(addr) == 0
        assert k.load_u64(addr) == 0
        k.store_u8(addr, 0xAA)
        k.store_u64(addr, -1)
    for addr in range(size - 7, size):  # partly outside
        assert k.load_u64(addr) == 0
        k.store_u64(addr, -1)
    assert k.snapshot() == before
    assert k.size == size


# -- input -------------------------------------------------------------------------------------


def test_input_loads_are_relative_and_bounded(k):
    k.alloc(40)  # the input block is not the first one
    data = b"0123456789abcdefXYZ"  # 19 bytes
    h = k.alloc(len(data))
    k.kernel.memory.write(k.store, data, h)
    k.input_set(h, len(data))
    assert k.input_offset() == h and k.input_length() == len(data)
    assert bytes(k.input_load_u8(i) for i in range(len(data))) == data
    for i in range(len(data) - 7):
        assert k.input_load_u64(i) == int.from_bytes(data[i : i + 8], "little")
    for i in (len(data) - 7, len(data) - 1, len(data), 2**32, MASK, MASK - 7):
        assert k.input_load_u64(i) == 0
    for i in (len(data), len(data) + 1, 2**40, MASK):
        assert k.input_load_u8(i) == 0


def test_short_and_empty_input(k):
    h = k.kernel.write(b"abc")
    k.input_set(h, 3)
    assert k.input_load_u64(0) == 0  # fewer than 8 bytes
    assert bytes(k.input_load_u8(i) for i in range(4)) == b"abc\0"
    k.kernel.set_input(b"")
    assert k.input_length() == 0 and k.input_offset() == 0
    assert k.input_load_u8(0) == 0 and k.input_load_u64(0) == 0


def test_input_set_out_of_range_is_ignored(k):
    k.kernel.set_input(b"hello")
    for h, n in ((k.size, 1), (0, k.size + 1), (MASK, 2), (8, MASK)):
        k.input_set(h, n)
        assert k.input_length() == 5
    assert k.kernel.read(k.input_offset()) == b"hello"


def test_freeing_the_input_block_empties_the_input(k):
    k.kernel.set_input(b"some input bytes")
    h = k.input_offset()
    assert h and k.input_length() == 16
    k.free(h + 1)  # not the input handle
    assert k.input_length() == 16
    k.free(h)
    assert k.input_length() == 0 and k.input_offset() == 0
    assert k.input_load_u8(0) == 0 and k.length(h) == 0
    k.free(h)  # again: still a no-op


# -- output and error --------------------------------------------------------------------------


def test_output_round_trip_and_out_of_range_ignored(k):
    assert k.kernel.output() == b""
    h = k.kernel.write(b"result bytes")
    k.output_set(h, 12)
    assert (k.output_offset(), k.output_length()) == (h, 12)
    assert k.kernel.output() == b"result bytes"
    for off, n in ((k.size, 1), (k.size - 4, 5), (0, k.size + 1), (MASK, 2), (h, MASK)):
        k.output_set(off, n)
        assert (k.output_offset(), k.output_length()) == (h, 12)
    k.output_set(h + 7, 5)  # any in-memory range is accepted, not only whole blocks
    assert k.kernel.output() == b"bytes"
    k.output_set(h, 0)
    assert (k.output_offset(), k.output_length()) == (0, 0)
    k.output_set(h, 12)
    k.output_set(0, 0)
    assert (k.output_offset(), k.output_length()) == (0, 0)
    assert k.kernel.output() == b""


def test_error_set_get_and_clear(k):
    assert k.error_get() == 0 and k.kernel.error() is None
    h = k.kernel.write("boom: ünïcode".encode())
    k.error_set(h)
    assert k.error_get() == h
    assert k.kernel.error() == "boom: ünïcode"
    k.error_set(0)
    assert k.error_get() == 0 and k.kernel.error() is None
    bad = k.kernel.write(b"bad \xff\xfe utf-8")
    k.error_set(bad)
    assert k.kernel.error() == "bad \ufffd\ufffd utf-8"
    k.error_set(bad + 1)  # not a block: no message
    assert k.kernel.error() is None


# -- reset and accounting ----------------------------------------------------------------------


def test_reset_invalidates_everything(k):
    handles = [k.alloc(n) for n in (100, 8, 2000)]
    k.kernel.set_input(b"input")  # resets first
    inp = k.input_offset()
    assert all(k.length(h) == 0 for h in handles if h != inp)
    out = k.kernel.write(b"output")
    err = k.kernel.write(b"error")
    k.output_set(out, 6)
    k.error_set(err)
    assert k.memory_bytes() > 0
    k.reset()
    assert k.memory_bytes() == 0
    assert (k.input_length(), k.input_offset()) == (0, 0)
    assert (k.output_length(), k.output_offset(), k.error_get()) == (0, 0, 0)
    assert k.kernel.output() == b"" and k.kernel.error() is None
    assert k.length(inp) == k.length(out) == k.length(err) == 0


def test_stale_headers_from_before_a_reset_are_not_believed(k):
    a = k.alloc(100)
    b = k.alloc(8)  # its header sits inside `big` after the reset
    k.reset()
    big = k.alloc(300)
    assert big == a and big < b < big + 300
    assert k.length(b) == 0 and k.length(big) == 300
    k.free(b)
    assert k.length(big) == 300


def test_memory_bytes_grows_with_allocations(k):
    assert k.memory_bytes() == 0
    previous = 0
    for n in (1, 10, 1000, 100_000):
        k.alloc(n)
        now = k.memory_bytes()
        assert now >= previous + n
        previous = now
    assert k.memory_bytes() <= k.size


def test_no_argument_makes_the_kernel_trap(engine):
    """Seeded random calls, including writes that scribble over block headers."""
    rng = random.Random(1234)
    k = K(engine, memory_size=4 * PAGE)
    handles: list[int] = [0]
    edges = [0, 1, 7, 8, 16, 24, 40, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, MASK, MASK - 7]

    def value() -> int:
        choice = rng.random()
        if choice < 0.4:
            return rng.choice(handles) + rng.choice((0, 0, 0, 1, -1, 8, -24, -8, -16))
        if choice < 0.6:
            return rng.choice(edges)
        if choice < 0.8:
            return rng.randrange(k.size + 64)
        return rng.randrange(2**64)

    for _ in range(20_000):
        name = rng.choice(list(KERNEL_EXPORTS))
        if name == "reset" and rng.random() < 0.9:
            continue
        params = KERNEL_EXPORTS[name][0]
        args = [value() if kind == "i64" else rng.randrange(256) for kind in params]
        if name == "alloc" and rng.random() < 0.9:
            args = [rng.randrange(1, 3000)]
        result = getattr(k, name)(*args)
        if name == "alloc" and result:
            handles.append(result)
            assert k.length(result) == args[0]
    # still a working allocator
    k.reset()
    h = k.kernel.write(b"still works")
    assert k.kernel.read(h) == b"still works"


# -- host-side helpers -------------------------------------------------------------------------


def test_kernel_read_write_helpers(k):
    kernel = k.kernel
    assert kernel.write(b"") == 0
    assert kernel.read(0) == b""
    h = kernel.write(b"\x00\x01payload")
    assert kernel.length(h) == 9 and kernel.read(h) == b"\x00\x01payload"
    assert kernel.read(h + 1) == b"" and kernel.read(MASK) == b"" and kernel.length(0) == 0
    k.free(h)
    assert kernel.read(h) == b""
    for data in (bytearray(b"from a bytearray"), memoryview(b"from a memoryview")):
        assert kernel.read(kernel.write(data)) == bytes(data)
    kernel.set_input(bytearray(b"input"))
    assert kernel.read(k.input_offset()) == b"input"


def test_set_input_that_does_not_fit_raises_memory_limit(engine):
    k = K(engine, memory_size=2 * PAGE)
    with pytest.raises(MemoryLimit):
        k.kernel.set_input(b"x" * (3 * PAGE))
    assert k.input_length() == 0
    k.kernel.set_input(b"fits")
    assert k.kernel.read(k.input_offset()) == b"fits"


def test_kernel_under_fuel_and_epoch_interruption():
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    engine = wasmtime.Engine(config)
    store = wasmtime.Store(engine)
    store.set_fuel(1_000_000)
    store.set_epoch_deadline(1)
    kernel = Kernel.instantiate(store)
    kernel.set_input(b"abc")
    h = kernel.write(b"out")
    kernel.exports["output_set"](store, h, 3)
    assert kernel.output() == b"out"


# -- a real plugin linked against the kernel ---------------------------------------------------

COPY_PLUGIN = """
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "load_u64" (func $load_u64 (param i64) (result i64)))
  (import "extism:host/env" "load_u8" (func $load_u8 (param i64) (result i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (import "extism:host/env" "free" (func $free (param i64)))

  ;; copy the input with absolute loads from input_offset
  (func (export "copy") (result i32)
    (local $n i64) (local $src i64) (local $dst i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $src (call $input_offset))
    (local.set $dst (call $alloc (local.get $n)))
    (block $words (loop $w
      (br_if $words (i64.gt_u (i64.add (local.get $i) (i64.const 8)) (local.get $n)))
      (call $store_u64 (i64.add (local.get $dst) (local.get $i))
                       (call $load_u64 (i64.add (local.get $src) (local.get $i))))
      (local.set $i (i64.add (local.get $i) (i64.const 8)))
      (br $w)))
    (block $bytes (loop $b
      (br_if $bytes (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $dst) (local.get $i))
                      (call $load_u8 (i64.add (local.get $src) (local.get $i))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $b)))
    (call $output_set (local.get $dst) (local.get $n))
    (i32.const 0))

  ;; the same with input_load_* (offsets relative to the input), then frees the input
  (func (export "copy_rel") (result i32)
    (local $n i64) (local $dst i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $dst (call $alloc (local.get $n)))
    (block $words (loop $w
      (br_if $words (i64.gt_u (i64.add (local.get $i) (i64.const 8)) (local.get $n)))
      (call $store_u64 (i64.add (local.get $dst) (local.get $i))
                       (call $input_load_u64 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 8)))
      (br $w)))
    (block $bytes (loop $b
      (br_if $bytes (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $dst) (local.get $i))
                      (call $input_load_u8 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $b)))
    (call $free (call $input_offset))
    (call $free (call $input_offset))
    (call $output_set (local.get $dst) (local.get $n))
    (i32.const 0))

  ;; the input becomes the error message
  (func (export "fail") (result i32)
    (call $error_set (call $input_offset))
    (i32.const -1)))
"""


@pytest.fixture
def plugin(engine):
    """(kernel, call(export) -> return code) for COPY_PLUGIN linked to a fresh kernel."""
    store = wasmtime.Store(engine)
    kernel = Kernel.instantiate(store)
    module = wasmtime.Module(engine, COPY_PLUGIN)
    imports = []
    for imp in module.imports:
        assert imp.module == "extism:host/env"
        imports.append(kernel.exports[imp.name])
    instance = wasmtime.Instance(store, module, imports)
    exports = instance.exports(store)

    def call(name: str) -> int:
        return exports[name](store)

    return kernel, call


def test_plugin_copies_one_mib_through_the_kernel(plugin):
    kernel, call = plugin
    data = bytes((i * 7 + i // 251) & 0xFF for i in range(1 << 20)) + b"odd"
    kernel.set_input(data)
    assert call("copy") == 0
    assert kernel.output() == data
    assert kernel.error() is None


def test_plugin_three_calls_in_a_row(plugin):
    kernel, call = plugin
    inputs = [b"first input, 29 bytes long...", b"", bytes(range(256)) * 400 + b"\x01\x02\x03"]
    for export in ("copy", "copy_rel"):
        for data in inputs:
            kernel.set_input(data)  # resets: blocks from the previous call are gone
            assert call(export) == 0
            assert kernel.output() == data
            assert kernel.error() is None
    # reset keeps kernel memory from growing call after call
    sizes = []
    for data in inputs * 3:
        kernel.set_input(data)
        call("copy")
        sizes.append(kernel.memory.data_len(kernel.store))
    assert len(set(sizes)) == 1


def test_plugin_error_message(plugin):
    kernel, call = plugin
    kernel.set_input(b"it went wrong")
    assert call("fail") == -1
    assert kernel.error() == "it went wrong"
    kernel.set_input(b"fine")
    assert call("copy") == 0
    assert kernel.error() is None and kernel.output() == b"fine"
