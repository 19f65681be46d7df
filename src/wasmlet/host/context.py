"""Per-store state the host functions read and write, found from the calling store.

Every store whose guest imports host functions gets a HostContext (Extism plugins get a
PluginContext, which extends it). The pool opens it at the start of each call (`begin`)
with that call's deadline, log buffer and call chain, and collects what the call did
(outbound HTTP records) when it ends.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import wasmtime

from wasmlet.runtime.capture import BoundedBuffer
from wasmlet.spec import FunctionSpec
from wasmlet.wasm.native import store_address

if TYPE_CHECKING:
    from wasmlet.abi.base import Invocation
    from wasmlet.host.services import HostServices

LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "error": 4}
LEVEL_NAMES = {n: name for name, n in LEVELS.items()}
LOG_OFF = 2147483647


class HostError(Exception):
    """A host function refused or failed: the guest traps and the call fails with this
    message (`guest_error`). Messages are shown to the caller: never put secrets in them."""


class HostTimeout(HostError):
    """The call's time ran out while the guest was calling into the host. An epoch
    deadline only interrupts wasm code, and calls on the event loop run without the epoch
    ticker, so host functions check the deadline themselves (the call ends with `timeout`)."""


class HostInlineOverrun(BaseException):
    """A call running on the event loop spent its inline time in host functions (which burn
    no fuel, so the inline fuel cap does not see them): abandon it, and the invoker replays
    it off the loop. A BaseException so no `except Exception` on the way turns it into a
    guest-visible error."""


@dataclass(eq=False)
class HostContext:
    function: str
    spec: FunctionSpec
    services: HostServices | None = None
    log_level: int = LEVELS["info"]
    logs: BoundedBuffer | None = None
    deadline: float = 0.0  # time.monotonic() by which the current call must end
    # Function-to-function calls: the names of the functions above this call, outermost
    # first, so a cycle is caught before it runs.
    chain: tuple[str, ...] = ()
    calls_made: int = 0
    http_calls: list[dict[str, Any]] = field(default_factory=list)
    http_status: int = 0  # of the last outbound request (0: none, or it failed)
    http_headers: dict[str, str] | None = None
    # A result too large for the guest's buffer, kept for `result_read` (memory binding).
    pending: bytes | None = None
    # time.monotonic() after which an inline call must leave the event loop (0: not inline)
    inline_until: float = 0.0
    __weakref__: object = field(default=None, init=False, repr=False, compare=False)

    def begin(
        self, inv: Invocation, timeout_ms: int, logs: BoundedBuffer, inline_s: float = 0.0
    ) -> None:
        now = time.monotonic()
        self.deadline = now + timeout_ms / 1000
        self.inline_until = now + inline_s if inline_s else 0.0
        self.logs = logs
        self.chain = inv.chain
        self.calls_made = 0
        self.pending = None
        self.http_status, self.http_headers = 0, None
        if self.http_calls:
            self.http_calls = []

    def remaining(self) -> float:
        """Seconds left in the current call; HostError when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise HostError("the call has no time left")
        return left

    def log(self, level: int, text: str) -> None:
        if level < self.log_level or self.logs is None:
            return
        name = LEVEL_NAMES.get(min(max(level, 0), 4), "error")
        self.logs.write(f"[{name}] {text}\n".encode())

    def require(self, grant: str) -> None:
        if not self.spec.grants(grant):
            raise HostError(f"capability {grant!r} is not granted to function {self.function!r}")

    def service(self) -> HostServices:
        if self.services is None:
            raise HostError("host capabilities are not available in this process")
        return self.services


# Host functions find the context of the calling store here, by store context address.
# Weak values: a context lives exactly as long as the slot holding it, and nothing global
# keeps a store alive (wasmtime-py's store-data slab would, through context -> kernel).
CONTEXTS: weakref.WeakValueDictionary[int, HostContext] = weakref.WeakValueDictionary()


def attach(store: wasmtime.Store, ctx: HostContext) -> None:
    CONTEXTS[store_address(store)] = ctx


def context_of(caller: wasmtime.Caller) -> HostContext:
    ctx = CONTEXTS.get(store_address(caller))
    if ctx is None:
        raise HostError("no host context for this store")
    now = time.monotonic()
    if now > ctx.deadline:
        raise HostTimeout("the call ran out of time in a host function")
    if ctx.inline_until and now > ctx.inline_until:
        raise HostInlineOverrun
    return ctx
