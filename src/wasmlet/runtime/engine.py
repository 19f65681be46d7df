"""The process's one wasmtime Engine, its fingerprint, and the epoch ticker that bounds time."""

from __future__ import annotations

import hashlib
import platform
import threading

import wasmtime

from wasmlet.config import Settings

# Bumped when the engine configuration below changes in a way that alters compiled code.
_CONFIG_REVISION = "1"


def build_engine(settings: Settings) -> wasmtime.Engine:
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = settings.fuel_metering
    config.cranelift_opt_level = "speed"
    return wasmtime.Engine(config)


def engine_fingerprint(settings: Settings) -> str:
    """Names the compiled-artifact cache: artifacts are only valid for an identical engine."""
    parts = [
        _CONFIG_REVISION,
        getattr(wasmtime, "__version__", "unknown"),
        platform.machine(),
        platform.system(),
        f"fuel={settings.fuel_metering}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class EpochTicker:
    """Advances the engine's epoch every `tick_ms`; a store's deadline is counted in ticks.

    The thread sleeps outside the GIL and increments a counter in C, so its cost is a few
    microseconds per tick, whatever the guests are doing.
    """

    def __init__(self, engine: wasmtime.Engine, tick_ms: int) -> None:
        self.engine = engine
        self.tick_s = tick_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wasmlet-epoch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def ticks_for(self, timeout_ms: int) -> int:
        # +1: the first tick may land at any moment after the deadline is armed.
        return max(1, -(-timeout_ms // int(self.tick_s * 1000))) + 1

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.engine.increment_epoch()
