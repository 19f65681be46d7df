"""classify(): every kind of wasmtime failure becomes the right platform error."""

from __future__ import annotations

import pytest
import wasmtime

from tests.runtime.support import FIXTURES, LOOP_WAT, TRAP_WAT, wasm_bytes
from wasmlet.errors import GuestError, GuestTrap, MemoryLimit, Timeout
from wasmlet.runtime.faults import classify

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    return wasmtime.Engine(config)


def raised(engine, source, export: str, *args, fuel: int = 10**9, wasi: bool = False):
    """Run an export and return what wasmtime raised."""
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1_000_000)
    store.set_fuel(fuel)
    linker = wasmtime.Linker(engine)
    if wasi:
        linker.define_wasi()
        store.set_wasi(wasmtime.WasiConfig())
    inst = linker.instantiate(store, wasmtime.Module(engine, wasm_bytes(source)))
    with pytest.raises((wasmtime.Trap, wasmtime.WasmtimeError)) as exc:
        inst.exports(store)[export](store, *args)
    return exc.value


def kw(**overrides):
    values = {"timeout_ms": 200, "memory_used": 65536, "memory_cap": 16 * MiB, "fuel": None}
    values.update(overrides)
    return values


def test_interrupt_is_timeout(engine) -> None:
    store = wasmtime.Store(engine)
    store.set_fuel(10**12)
    store.set_epoch_deadline(1)
    inst = wasmtime.Instance(store, wasmtime.Module(engine, wasm_bytes(LOOP_WAT)), [])
    engine.increment_epoch()
    engine.increment_epoch()
    with pytest.raises(wasmtime.Trap) as exc:
        inst.exports(store)["spin"](store)
    assert exc.value.trap_code == wasmtime.TrapCode.INTERRUPT
    err = classify(exc.value, **kw(timeout_ms=250))
    assert isinstance(err, Timeout)
    assert err.code == "timeout" and err.status == 504
    assert "250 ms" in err.message


def test_out_of_fuel_is_a_trap_about_fuel(engine) -> None:
    trap = raised(engine, LOOP_WAT, "spin", fuel=1000)
    assert trap.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
    err = classify(trap, **kw(fuel=1000))
    assert type(err) is GuestTrap
    assert "fuel" in err.message
    assert "1000" in err.message


def test_plain_trap_reports_the_root_cause_only(engine) -> None:
    trap = raised(engine, TRAP_WAT, "boom")
    assert "backtrace" in trap.message  # what wasmtime says ...
    err = classify(trap, **kw())
    assert type(err) is GuestTrap
    assert err.code == "guest_trap" and err.status == 500
    # ... and what the client gets: one line, no frames, no offsets.
    assert err.message == "wasm trap: wasm `unreachable` instruction executed"
    assert "\n" not in err.message
    assert "backtrace" not in err.message
    assert "0x" not in err.message


def test_divide_by_zero_message(engine) -> None:
    err = classify(raised(engine, TRAP_WAT, "divide", 1, 0), **kw())
    assert type(err) is GuestTrap
    assert err.message == "wasm trap: integer divide by zero"


def test_trap_near_the_memory_cap_is_memory_limit(engine) -> None:
    trap = raised(engine, TRAP_WAT, "boom")
    cap = 16 * MiB
    for used in (cap, cap - MiB, cap - 65536):
        err = classify(trap, **kw(memory_used=used, memory_cap=cap))
        assert type(err) is MemoryLimit, used
        assert err.code == "memory_limit"
        assert "16 MiB" in err.message
        assert "unreachable" in err.message
    # Well below the cap it is the guest's own trap.
    far = classify(trap, **kw(memory_used=cap - 2 * MiB, memory_cap=cap))
    assert type(far) is GuestTrap


def test_small_cap_uses_at_least_one_page_of_slack(engine) -> None:
    trap = raised(engine, TRAP_WAT, "boom")
    cap = MiB  # cap // 16 is under a page: one 64 KiB page counts as "at the cap"
    assert type(classify(trap, **kw(memory_used=cap - 65536, memory_cap=cap))) is MemoryLimit
    assert type(classify(trap, **kw(memory_used=cap - 2 * 65536, memory_cap=cap))) is GuestTrap


def test_exit_trap_is_guest_error(engine) -> None:
    exc = raised(engine, FIXTURES / "cgi_exit3.wat", "_start", wasi=True)
    assert isinstance(exc, wasmtime.ExitTrap)
    assert exc.code == 3
    err = classify(exc, **kw())
    assert type(err) is GuestError
    assert err.message == "guest exited with status 3"


def test_instantiation_over_the_memory_limit_is_memory_limit(engine) -> None:
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=16 * MiB)
    module = wasmtime.Module(engine, wasm_bytes("(module (memory 300))"))  # 18.75 MiB
    with pytest.raises(wasmtime.WasmtimeError) as exc:
        wasmtime.Instance(store, module, [])
    err = classify(exc.value, **kw(memory_used=0))
    assert type(err) is MemoryLimit
    assert "16 MiB" in err.message
    assert "\n" not in err.message


def test_other_instantiation_error_is_a_trap(engine) -> None:
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, wasm_bytes(FIXTURES / "needs_import.wat"))
    with pytest.raises(wasmtime.WasmtimeError) as exc:
        wasmtime.Linker(engine).instantiate(store, module)
    err = classify(exc.value, **kw())
    assert type(err) is GuestTrap
    assert err.message.startswith("wasm error: ")
    assert "secret_host_fn" in err.message


def test_anything_else_is_re_raised() -> None:
    with pytest.raises(ValueError, match="not wasm"):
        classify(ValueError("not wasm"), **kw())
