"""The direct C bindings used on every request, checked against wasmtime-py's wrappers."""

from __future__ import annotations

import ctypes
import time

import pytest
import wasmtime

from tests.runtime.support import LOOP_WAT, wasm_bytes
from wasmlet.runtime.engine import EpochTicker
from wasmlet.wasm import native
from wasmlet.wasm.fastcall import FastFunc, fast_func


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    return wasmtime.Engine(config)


@pytest.fixture(scope="module")
def loop_module(engine) -> wasmtime.Module:
    return wasmtime.Module(engine, wasm_bytes(LOOP_WAT))


def spinner(engine, module) -> tuple[wasmtime.Store, wasmtime.Instance, FastFunc]:
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1_000_000)
    store.set_fuel(1_000_000)
    inst = wasmtime.Instance(store, module, [])
    return store, inst, fast_func(store, inst.exports(store)["spin"])


def test_fuel_round_trip(engine) -> None:
    store = wasmtime.Store(engine)
    ctx = store._context()
    out = ctypes.c_uint64()
    for fuel in (0, 1, 12345, 2**62):
        native.set_fuel(ctx, fuel)
        assert native.get_fuel(ctx, out) == fuel
        assert out.value == fuel
        assert store.get_fuel() == fuel
    store.set_fuel(999)
    assert native.get_fuel(ctx, out) == 999


def test_fuel_errors_without_fuel_metering() -> None:
    store = wasmtime.Store(wasmtime.Engine())
    with pytest.raises(wasmtime.WasmtimeError, match="fuel"):
        native.set_fuel(store._context(), 10)
    with pytest.raises(wasmtime.WasmtimeError, match="fuel"):
        native.get_fuel(store._context(), ctypes.c_uint64())


def test_fuel_is_consumed_by_guest_code(engine, loop_module) -> None:
    store, _inst, spin = spinner(engine, loop_module)
    native.set_fuel(store._context(), 5000)
    with pytest.raises(wasmtime.Trap) as exc:
        spin()
    assert exc.value.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
    assert native.get_fuel(store._context(), ctypes.c_uint64()) == 0


def test_memory_size_equals_data_len(engine, loop_module) -> None:
    store, inst, _spin = spinner(engine, loop_module)
    memory = inst.exports(store)["memory"]
    ctx = store._context()
    assert native.memory_size(ctx, memory) == memory.data_len(store) == 65536
    memory.grow(store, 3)
    assert native.memory_size(ctx, memory) == memory.data_len(store) == 4 * 65536


def test_epoch_deadline_with_ticker_interrupts_a_loop(engine, loop_module) -> None:
    store, _inst, spin = spinner(engine, loop_module)
    ctx = store._context()
    native.set_fuel(ctx, 2**62)
    native.set_epoch_deadline(ctx, 3)
    ticker = EpochTicker(engine, 10)
    ticker.start()
    ticker.hold()
    started = time.perf_counter()
    try:
        with pytest.raises(wasmtime.Trap) as exc:
            spin()
    finally:
        ticker.release()
        ticker.stop()
    elapsed = time.perf_counter() - started
    assert exc.value.trap_code == wasmtime.TrapCode.INTERRUPT  # the epoch, not fuel (2**62)
    assert elapsed >= 0.015  # after the ticks it was given (a lower bound: load only delays)


def test_epoch_deadline_is_relative_to_the_current_epoch(engine, loop_module) -> None:
    store, _inst, spin = spinner(engine, loop_module)
    ctx = store._context()
    native.set_fuel(ctx, 2**62)
    native.set_epoch_deadline(ctx, 2)
    engine.increment_epoch()
    engine.increment_epoch()
    with pytest.raises(wasmtime.Trap) as exc:
        spin()
    assert exc.value.trap_code == wasmtime.TrapCode.INTERRUPT
    # Re-armed from the new epoch, the same store is not interrupted (fuel ends it).
    native.set_epoch_deadline(ctx, 2)
    native.set_fuel(ctx, 100_000)
    with pytest.raises(wasmtime.Trap) as exc:
        spin()
    assert exc.value.trap_code == wasmtime.TrapCode.OUT_OF_FUEL


# -- the rest of wasm/native.py: stores, instances and handles made without the wrappers ------

START_WAT = """
(module
  (import "host" "hit" (func $hit))
  (memory (export "memory") 1)
  (func $start (call $hit))
  (start $start)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))
"""


def test_new_store_is_a_wasmtime_store_with_its_limits(engine) -> None:
    limits = tuple(ctypes.c_int64(n) for n in (2 * 65536, 1_000_000, -1, -1, -1))
    store, ctx = native.new_store(engine, engine.ptr(), limits)
    assert isinstance(store, wasmtime.Store) and store.engine is engine
    assert native.store_address(store) == ctypes.cast(ctx, ctypes.c_void_p).value
    store.set_epoch_deadline(1_000_000)
    store.set_fuel(1_000_000)
    linker = wasmtime.Linker(engine)
    linker.define_func("host", "hit", wasmtime.FuncType([], []), lambda: None)
    inst = linker.instantiate(store, wasmtime.Module(engine, START_WAT))
    grow = inst.exports(store)["grow"]
    assert grow(store, 1) == 1  # 2 pages: at the cap
    assert grow(store, 1) == -1  # a third would pass memory_size in `limits`


def test_instantiate_pre_fails_as_instance_pre_does(engine) -> None:
    """A trap in the start function is a Trap; a host function's own exception wins.
    (The raw call takes pointers: the InstancePre and the Store are kept alive here.)"""
    module = wasmtime.Module(engine, START_WAT)

    def pre_for(hit):
        linker = wasmtime.Linker(engine)
        linker.define_func("host", "hit", wasmtime.FuncType([], []), hit)
        return linker.instantiate_pre(module)

    def new_store() -> wasmtime.Store:
        s = wasmtime.Store(engine)
        s.set_fuel(1_000_000)
        s.set_epoch_deadline(1_000_000)
        return s

    fine = pre_for(lambda: None)
    s = new_store()
    inst = native.instantiate_pre(fine.ptr(), native.store_context(s))
    assert isinstance(inst, wasmtime.Instance)
    assert isinstance(inst.exports(s)["memory"], wasmtime.Memory)

    class Refused(Exception):
        pass

    def refuse() -> None:
        raise Refused("no")

    refusing = pre_for(refuse)
    s = new_store()
    with pytest.raises(Refused):
        native.instantiate_pre(refusing.ptr(), native.store_context(s))
    s = new_store()
    with pytest.raises(Refused):  # wasmtime-py's own wrapper, for comparison
        refusing.instantiate(s)

    s = new_store()
    s.set_fuel(0)
    with pytest.raises(wasmtime.Trap) as exc:
        native.instantiate_pre(fine.ptr(), native.store_context(s))
    assert exc.value.trap_code == wasmtime.TrapCode.OUT_OF_FUEL


def test_store_address_is_the_same_from_a_caller(engine) -> None:
    seen: list[int] = []
    store = wasmtime.Store(engine)
    store.set_fuel(1_000_000)
    store.set_epoch_deadline(1_000_000)
    linker = wasmtime.Linker(engine)
    ty = wasmtime.FuncType([], [])
    linker.define_func(
        "host",
        "hit",
        ty,
        lambda caller: seen.append(native.store_address(caller)),
        access_caller=True,
    )
    linker.instantiate(store, wasmtime.Module(engine, START_WAT))
    assert seen == [native.store_address(store)] and seen[0] != 0


def test_handles_round_trip(engine, loop_module) -> None:
    store, inst, _spin = spinner(engine, loop_module)
    memory = inst.exports(store)["memory"]
    again = native.memory_from_raw(native.memory_handle(memory))
    assert again.data_len(store) == memory.data_len(store)
    spin = inst.exports(store)["spin"]
    assert (
        native.func_from_raw(native.func_handle(spin)).type(store).params == spin.type(store).params
    )
    item = native.Extern()
    found = native.raw_export_get(
        native.store_context(store),
        ctypes.byref(native.instance_handle(inst)),
        b"memory",
        ctypes.c_size_t(6),
        ctypes.byref(item),
    )
    assert found and item.kind == native.EXTERN_MEMORY
