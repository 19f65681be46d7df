"""Turning whatever wasmtime raised into the platform's error codes."""

from __future__ import annotations

import wasmtime
from wasmtime import TrapCode

from wasmlet.errors import GuestError, GuestTrap, MemoryLimit, Timeout, WasmletError


def classify(
    exc: BaseException,
    *,
    timeout_ms: int,
    memory_used: int,
    memory_cap: int,
    fuel: int | None,
) -> WasmletError:
    """Map a wasmtime failure during a call or instantiation to a WasmletError.

    wasmtime's StoreLimits make `memory.grow` return -1 at the cap rather than trap, and the
    guest then traps on its own (a failed malloc aborts). The C API offers no limiter callback,
    so a trap with linear memory within one growth step (1/16) of the cap counts as
    `memory_limit`.
    """
    if isinstance(exc, wasmtime.ExitTrap):
        return GuestError(f"guest exited with status {exc.code}")
    if isinstance(exc, wasmtime.Trap):
        code = exc.trap_code
        if code == TrapCode.INTERRUPT:
            return Timeout(f"function exceeded its {timeout_ms} ms timeout")
        if code == TrapCode.OUT_OF_FUEL:
            return GuestTrap(f"function ran out of fuel (limit {fuel})")
        if memory_cap and memory_used >= memory_cap - max(memory_cap // 16, 65536):
            return MemoryLimit(
                f"function hit its memory limit of {memory_cap // (1024 * 1024)} MiB "
                f"({_cause(exc.message)})"
            )
        return GuestTrap(f"wasm trap: {_cause(exc.message)}")
    if isinstance(exc, wasmtime.WasmtimeError):
        message = str(exc)
        if "memory" in message and ("limit" in message or "exceeds" in message):
            return MemoryLimit(
                f"function needs more memory than its limit of "
                f"{memory_cap // (1024 * 1024)} MiB: {_cause(message)}"
            )
        return GuestTrap(f"wasm error: {_cause(message)}")
    raise exc


def _cause(message: str) -> str:
    """The root cause of a wasmtime message, without the backtrace that precedes it."""
    text = message.strip()
    if "Caused by:" in text:
        text = text.rsplit("Caused by:", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "unknown"
    cause = lines[-1] if "Caused by:" in message else lines[0]
    return cause.removeprefix("wasm trap: ")
