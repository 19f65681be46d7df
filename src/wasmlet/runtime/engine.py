"""The process's one wasmtime Engine, its fingerprint, and the epoch ticker that bounds time."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import platform
import resource
import threading

import wasmtime

from wasmlet.config import Settings
from wasmlet.wasm import native

log = logging.getLogger(__name__)

# Bumped when the engine configuration below changes in a way that alters compiled code.
_CONFIG_REVISION = "1"


def build_engine(settings: Settings) -> wasmtime.Engine:
    pooling = bool(settings.max_instances)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if pooling and soft != resource.RLIM_INFINITY:
        # The pool reserves (not commits) terabytes of address space up front; under an
        # address-space ulimit wasmtime cannot reserve it and aborts the process rather
        # than return an error, so do not even try.
        log.warning("address space is limited (ulimit -v); allocating instances on demand")
        pooling = False
    return wasmtime.Engine(_config(settings, pooling=pooling))


def _config(settings: Settings, *, pooling: bool) -> wasmtime.Config:
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = settings.fuel_metering
    config.cranelift_opt_level = "speed"
    if pooling:
        _use_pooling_allocator(config, settings)
    return config


def _use_pooling_allocator(config: wasmtime.Config, settings: Settings) -> None:
    """Preallocate instance slots: a fresh instance then costs ~15 us less (no mmap/munmap
    of its linear memory per request). wasmtime-py has no wrapper for this yet, so it is
    set through the C API (wasm/native.py). `max_instances` bounds live instances in the
    process (pooled idle ones included); past it instantiation fails with a clear error.
    """
    native.use_pooling_allocator(
        config, settings.max_instances, settings.max_memory_mb * 1024 * 1024
    )


def engine_fingerprint(settings: Settings) -> str:
    """Names the compiled-artifact cache: artifacts are only valid for an identical engine."""
    parts = [
        _CONFIG_REVISION,
        _wasmtime_version(),
        platform.machine(),
        platform.system(),
        f"fuel={settings.fuel_metering}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _wasmtime_version() -> str:
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class EpochTicker:
    """Advances the engine's epoch every `tick_ms` while any call needs it.

    A store's wall-clock deadline is counted in ticks. The ticker is a Python thread, and
    every wake-up needs the GIL, which it can only take from the event loop thread at a
    cost (a forced switch on a busy 2-core machine). So it ticks only while some call is
    held to a wall-clock deadline — calls running on the executor — and sleeps without
    wake-ups otherwise. Inline calls are bounded by fuel instead (runtime/dispatch.py).
    Without fuel metering the ticker always runs.
    """

    def __init__(self, engine: wasmtime.Engine, tick_ms: int, *, always: bool = False) -> None:
        self.engine = engine
        self.tick_ms = tick_ms
        self.tick_s = tick_ms / 1000
        self._users = 1 if always else 0
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        if always:
            self._wanted.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wasmlet-epoch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wanted.set()
        self._thread.join(timeout=1)

    def hold(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._wanted.set()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._wanted.clear()

    def ticks_for(self, timeout_ms: int) -> int:
        # +1: the first tick may land at any moment after the deadline is armed.
        return max(1, -(-timeout_ms // self.tick_ms)) + 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait()
            if self._stop.wait(self.tick_s):
                return
            self.engine.increment_epoch()
