"""InstancePool: the instances of one function version, each lent to one request at a time.

A pool owns an `InstancePre` (imports resolved once), hands a request either an idle
instance (reuse mode) or a fresh one (~25 us from the InstancePre), arms its deadline,
fuel and memory cap, and takes it back only if the call ended cleanly. Concurrency is
bounded by the caller (runtime/invoker.py) with `capacity`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import time
import types
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import wasmtime

from wasmlet.errors import GuestError, Timeout
from wasmlet.host.context import HostError, HostInlineOverrun, HostTimeout
from wasmlet.runtime.faults import classify
from wasmlet.runtime.slot import UNLIMITED_FUEL, Slot
from wasmlet.spec import FunctionSpec
from wasmlet.wasm import native
from wasmlet.wasm.fastcall import KINDS, Signature

if TYPE_CHECKING:
    from wasmlet.abi.base import Abi, Invocation, Outcome
    from wasmlet.host.services import HostServices
    from wasmlet.runtime.engine import EpochTicker


# Wall time an inline call may spend before a host function sends it off the event loop.
_INLINE_HOST_S = 0.02


class InlineOverrun(Exception):
    """An inline attempt used up its fuel cap; its instance is gone, replay it off-loop."""


@dataclass(frozen=True)
class VersionRef:
    """The active version of a function, as the registry describes it to the runtime."""

    name: str
    digest: str
    module_digest: str
    spec: FunctionSpec
    functions: dict[str, Any] = field(default_factory=dict)  # export -> signature
    wasi: bool = False
    function_id: str = ""  # the function's identity: a name deleted and reused gets a new one


@dataclass(slots=True)
class CallReport:
    """What one call cost, filled in whether it succeeded or not."""

    duration_us: float = 0.0
    # CPU time of the calling thread: unlike wall time it does not grow while an offloaded
    # call waits for the GIL, so it measures what the call would cost the event loop.
    cpu_us: float = 0.0
    fuel_used: int | None = None
    peak_memory: int = 0
    instantiated: bool = False
    logs: bytes = b""
    http_calls: list[dict[str, Any]] | None = None


class InstancePool:
    def __init__(
        self,
        ref: VersionRef,
        abi: Abi,
        engine: wasmtime.Engine,
        module: wasmtime.Module,
        ticker: EpochTicker,
        *,
        fuel_metering: bool,
        log_limit: int,
        output_limit: int,
        files_dir: Path | None = None,
        extras: dict[str, wasmtime.Module] | None = None,
        services: HostServices | None = None,
    ) -> None:
        self.ref = ref
        self.spec = ref.spec
        self.abi = abi
        self.engine = engine
        self.ticker = ticker
        self.fuel_metering = fuel_metering
        self.log_limit = log_limit
        self.output_limit = output_limit
        # The function's own folder for granted WASI preopens (<data_dir>/files/<name>).
        self.files_dir = files_dir
        self.services = services
        # Import modules of the main module: an ABI links host functions only when asked.
        self.import_modules = frozenset(i.module for i in module.imports)
        self.instantiate = abi.instantiator(engine, module, ref.spec, extras or {})
        self.reuse = ref.spec.reuse
        self.capacity = ref.spec.pool_size
        self.idle: deque[Slot] = deque()
        self.inline_ok = True  # an ABI may rule inline calls out once it sees they can block
        _POOLS.add(self)
        self._signatures: dict[str, Signature | None] = {}
        self.instantiations = 0
        self._fuel = ref.spec.fuel if ref.spec.fuel is not None else UNLIMITED_FUEL
        self._ticks = ticker.ticks_for(ref.spec.timeout_ms)
        self._ticks_arg = ctypes.c_uint64(self._ticks)  # never changed: shared by threads
        # A new store is made through raw C calls (native.new_store) with these, made once.
        self._engine_ptr = engine.ptr()
        self._limits = tuple(
            ctypes.c_int64(n) for n in (ref.spec.memory_bytes, 1_000_000, -1, -1, -1)
        )  # memory_size, table_elements, then instances, tables, memories: unset
        # An InstancePre's own instantiate (most ABIs') is called raw too; the bound method
        # in self.instantiate keeps the InstancePre alive.
        method = self.instantiate
        self._pre = (
            method.__self__.ptr()
            if isinstance(method, types.MethodType)
            and isinstance(method.__self__, wasmtime.InstancePre)
            and method.__func__ is wasmtime.InstancePre.instantiate
            else None
        )

    def execute(
        self,
        inv: Invocation,
        report: CallReport,
        timeout_ms: int | None = None,
        *,
        offloaded: bool = False,
        fuel_cap: int | None = None,
    ) -> Outcome:
        """Run one invocation to completion on the calling thread. Thread-safe.

        `fuel_cap` bounds an inline attempt: running out of it raises InlineOverrun (the
        caller replays the call off-loop) rather than an error. `offloaded` calls also
        measure thread CPU time (a syscall, so inline calls, whose wall time is their CPU
        time, skip it).
        """
        ticks = self._ticks if timeout_ms is None else self.ticker.ticks_for(timeout_ms)
        fuel = self._fuel if fuel_cap is None or fuel_cap >= self._fuel else fuel_cap
        started = time.perf_counter()
        cpu_started = time.thread_time() if offloaded else 0.0
        slot: Slot | None = None
        healthy = False
        try:
            slot = None
            if self.reuse and self.idle:
                with contextlib.suppress(IndexError):  # another thread took the last one
                    slot = self.idle.pop()
            if slot is None:
                slot = self._new_slot(inv, ticks, fuel)
                report.instantiated = True
            else:
                native.raw_set_epoch_deadline(
                    slot.ctx, self._ticks_arg if timeout_ms is None else ctypes.c_uint64(ticks)
                )
                if self.fuel_metering:
                    slot.fuel_out.value = fuel
                    err = native.raw_set_fuel(slot.ctx, slot.fuel_out)
                    if err:
                        raise native.error(err)
                if slot.logs.size:
                    slot.logs.clear()
            if slot.host is not None:
                inline_s = _INLINE_HOST_S if fuel_cap is not None else 0.0
                slot.host.begin(inv, timeout_ms or self.spec.timeout_ms, slot.logs, inline_s)
            outcome = self.abi.call(slot, inv)
            healthy = True
            return outcome
        except HostInlineOverrun:
            raise InlineOverrun from None
        except HostTimeout:
            raise Timeout(f"function exceeded its {self.spec.timeout_ms} ms timeout") from None
        except HostError as exc:  # a host function refused; its message is for the caller
            raise GuestError(str(exc), status=self.spec.error_status) from None
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            if (
                fuel < self._fuel
                and isinstance(exc, wasmtime.Trap)
                and exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
            ):
                raise InlineOverrun from None
            raise classify(
                exc,
                timeout_ms=self.spec.timeout_ms,
                memory_used=slot.largest_memory() if slot and slot.instance else 0,
                memory_cap=self.spec.memory_bytes,
                fuel=self.spec.fuel,
            ) from None
        finally:
            report.duration_us = (time.perf_counter() - started) * 1e6
            report.cpu_us = (
                (time.thread_time() - cpu_started) * 1e6 if offloaded else report.duration_us
            )
            if slot is not None:
                if self.fuel_metering:
                    err = native.raw_get_fuel(slot.ctx, slot.fuel_ref)
                    if err:
                        raise native.error(err)
                    report.fuel_used = fuel - slot.fuel_out.value
                if slot.instance is not None:
                    report.peak_memory = slot.memory_bytes()
                if slot.logs.size:
                    report.logs = slot.logs.getvalue()
                if slot.host is not None and slot.host.http_calls:
                    report.http_calls = slot.host.http_calls
                slot.calls += 1
                if healthy and self.reuse and not slot.retired:
                    self.idle.append(slot)

    def _new_slot(self, inv: Invocation, ticks: int, fuel: int) -> Slot:
        store, ctx = native.new_store(self.engine, self._engine_ptr, self._limits)
        native.raw_set_epoch_deadline(
            ctx, self._ticks_arg if ticks == self._ticks else ctypes.c_uint64(ticks)
        )
        if self.fuel_metering:
            err = native.raw_set_fuel(ctx, ctypes.c_uint64(fuel))
            if err:
                raise native.error(err)
        slot = Slot(store, self.log_limit, ctx)
        slot.function = self
        self.abi.configure_store(slot, inv)
        self.instantiations += 1
        slot.bind(
            self.instantiate(store) if self._pre is None else native.instantiate_pre(self._pre, ctx)
        )
        self.abi.on_instance(slot)
        return slot

    def signature(self, export: str) -> Signature | None:
        """The call layout of an export, computed once from the version's stored metadata."""
        try:
            return self._signatures[export]
        except KeyError:
            meta = self.ref.functions.get(export)
            sig = None
            if meta and set(meta["params"] + meta["results"]) <= KINDS:
                sig = Signature(tuple(meta["params"]), tuple(meta["results"]))
            self._signatures[export] = sig
            return sig

    def drain(self) -> None:
        self.idle.clear()


# Every pool in the process, so interpreter exit can drop their stores first. A wasmtime
# store still alive while Python finalises (one whose WASI output or host functions call
# back into Python) can abort the process in wasmtime's teardown.
_POOLS: weakref.WeakSet[InstancePool] = weakref.WeakSet()


@atexit.register
def _drop_stores() -> None:
    for pool in list(_POOLS):
        pool.drain()
    gc.collect()
