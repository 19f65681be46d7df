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
