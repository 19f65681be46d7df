"""The engine, its fingerprint, and the epoch ticker that only ticks while held."""

from __future__ import annotations

import gc
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime

from tests.runtime.support import LOOP_WAT, wasm_bytes
from wasmlet.config import Settings
from wasmlet.runtime import engine as engine_module
from wasmlet.runtime.engine import EpochTicker, build_engine, engine_fingerprint

LOOP_SRC = wasm_bytes(LOOP_WAT)


class CountingEngine:
    """Stands in for an Engine to count the ticker's increments."""

    def __init__(self) -> None:
        self.ticks = 0

    def increment_epoch(self) -> None:
        self.ticks += 1


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> wasmtime.Engine:
    data_dir = tmp_path_factory.mktemp("e")
    return build_engine(Settings(data_dir=data_dir, fuel_metering=True, max_instances=0))


def spin_store(engine, deadline_ticks: int, fuel: int) -> tuple[wasmtime.Store, wasmtime.Func]:
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(deadline_ticks)
    store.set_fuel(fuel)
    inst = wasmtime.Instance(store, wasmtime.Module(engine, wasm_bytes(LOOP_WAT)), [])
    return store, inst.exports(store)["spin"]


def trap_of(store, func) -> tuple[wasmtime.TrapCode, float]:
    started = time.perf_counter()
    with pytest.raises(wasmtime.Trap) as exc:
        func(store)
    return exc.value.trap_code, time.perf_counter() - started


def test_build_engine_follows_fuel_setting(tmp_path: Path) -> None:
    metered = build_engine(Settings(data_dir=tmp_path, fuel_metering=True, max_instances=0))
    store = wasmtime.Store(metered)
    store.set_fuel(5)
    assert store.get_fuel() == 5
    plain = build_engine(Settings(data_dir=tmp_path, fuel_metering=False, max_instances=0))
    with pytest.raises(wasmtime.WasmtimeError):
        wasmtime.Store(plain).set_fuel(5)


def test_pooled_engine_bounds_live_instances(tmp_path: Path) -> None:
    engine = build_engine(Settings(data_dir=tmp_path, max_instances=3, max_memory_mb=64))
    plain = build_engine(Settings(data_dir=tmp_path, max_instances=0))
    # Artifacts compiled without the pool load into it (the fingerprint ignores pooling).
    module = wasmtime.Module.deserialize(engine, wasmtime.Module(plain, LOOP_SRC).serialize())

    def instantiate() -> wasmtime.Store:
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(10)
        wasmtime.Instance(store, module, [])
        return store

    live = [instantiate() for _ in range(3)]
    with pytest.raises(wasmtime.WasmtimeError, match="concurrent limit of 3"):
        instantiate()
    live.clear()
    gc.collect()
    live = [instantiate() for _ in range(3)]  # slots come back when stores go
    assert len(live) == 3


def test_engine_falls_back_when_the_pool_cannot_be_reserved(tmp_path: Path) -> None:
    # Under an address-space ulimit wasmtime cannot reserve the pool and would abort the
    # whole process (it panics rather than return an error), so this runs in a child.
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))\n"
        "from wasmlet.config import Settings\n"
        "from wasmlet.runtime.engine import build_engine\n"
        f"build_engine(Settings(data_dir={str(tmp_path)!r}))\n"
        "print('built')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "built" in proc.stdout
    assert "allocating instances on demand" in proc.stderr


def test_limited_address_space_skips_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limit = (64 << 30, resource.RLIM_INFINITY)
    monkeypatch.setattr(engine_module.resource, "getrlimit", lambda _which: limit)
    engine = build_engine(Settings(data_dir=tmp_path, max_instances=2))
    assert "allocating instances on demand" in caplog.text
    module = wasmtime.Module(engine, LOOP_SRC)
    stores = []
    for _ in range(3):  # more than max_instances: no pool, no limit
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(10)
        wasmtime.Instance(store, module, [])
        stores.append(store)
    assert len(stores) == 3


def test_held_ticker_interrupts_a_loop(engine) -> None:
    ticker = EpochTicker(engine, 10)
    ticker.start()
    try:
        store, spin = spin_store(engine, ticker.ticks_for(100), fuel=2**62)
        ticker.hold()
        try:
            code, elapsed = trap_of(store, spin)
        finally:
            ticker.release()
    finally:
        ticker.stop()
    assert code == wasmtime.TrapCode.INTERRUPT  # the epoch ended it (fuel: 2**62)
    assert elapsed >= 0.09  # at its deadline, not sooner (a lower bound: load only delays)


def test_idle_ticker_does_not_advance_the_epoch(engine) -> None:
    ticker = EpochTicker(engine, 5)
    ticker.start()
    try:
        time.sleep(0.05)  # ten ticks' worth of time, but nobody holds it
        store, spin = spin_store(engine, 1, fuel=3_000_000)
        code, _ = trap_of(store, spin)
    finally:
        ticker.stop()
    # Deadline of one tick, yet only fuel ended the loop: the epoch stood still.
    assert code == wasmtime.TrapCode.OUT_OF_FUEL


def _ticks_reach(counter: CountingEngine, n: int) -> None:
    """Wait until the ticker has counted `n` ticks (the 30 s bound only catches a stall)."""
    deadline = time.monotonic() + 30
    while counter.ticks < n:
        assert time.monotonic() < deadline, f"{counter.ticks} ticks, waiting for {n}"
        time.sleep(0.005)


def test_ticks_only_while_held() -> None:
    # The ticker ticks after a tick's wait, so at most one tick (the one in flight) lands
    # after the last holder leaves: checks below count ticks, not how fast they came.
    counter = CountingEngine()
    ticker = EpochTicker(counter, 5)  # type: ignore[arg-type]
    ticker.start()
    try:
        time.sleep(0.05)  # ten ticks' worth of time, but nobody holds it
        assert counter.ticks == 0
        ticker.hold()
        ticker.hold()  # nested holders
        _ticks_reach(counter, 4)
        ticker.release()
        moving = counter.ticks
        _ticks_reach(counter, moving + 4)  # still held by the other holder
        ticker.release()
        at_release = counter.ticks
        time.sleep(0.06)
        assert counter.ticks <= at_release + 1
    finally:
        ticker.stop()


def test_always_ticker_runs_without_holders() -> None:
    counter = CountingEngine()
    ticker = EpochTicker(counter, 5, always=True)  # type: ignore[arg-type]
    ticker.start()
    _ticks_reach(counter, 4)
    ticker.stop()
    assert not ticker._thread.is_alive()
    after_stop = counter.ticks
    time.sleep(0.03)
    assert counter.ticks == after_stop


def test_stop_returns_promptly_when_idle() -> None:
    # An hour between ticks: stop() (which waits up to 1 s for the thread) finds it ended
    # only if it wakes the thread rather than waiting for the next tick.
    ticker = EpochTicker(CountingEngine(), 3_600_000)  # type: ignore[arg-type]
    ticker.start()
    ticker.stop()
    assert not ticker._thread.is_alive()


@pytest.mark.parametrize(
    ("tick_ms", "timeout_ms", "ticks"),
    [
        (10, 0, 2),
        (10, 1, 2),
        (10, 10, 2),
        (10, 11, 3),
        (10, 200, 21),
        (10, 5000, 501),
        (7, 100, 16),  # ceil(100 / 7) = 15, plus one for the partial first tick
        (1, 1, 2),
    ],
)
def test_ticks_for_rounds_up_plus_one(tick_ms, timeout_ms, ticks) -> None:
    assert EpochTicker(CountingEngine(), tick_ms).ticks_for(timeout_ms) == ticks  # type: ignore[arg-type]


def test_fingerprint_stable_and_tracks_fuel_metering(tmp_path: Path) -> None:
    a = engine_fingerprint(Settings(data_dir=tmp_path, fuel_metering=True))
    b = engine_fingerprint(Settings(data_dir=tmp_path / "other", port=1, fuel_metering=True))
    c = engine_fingerprint(Settings(data_dir=tmp_path, fuel_metering=False))
    assert a == b  # unrelated settings do not change compiled code
    assert a != c
    assert len(a) == 16
    int(a, 16)
