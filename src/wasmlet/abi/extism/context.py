"""Per-store and per-function state that the Extism host functions read and write."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wasmlet.host.context import HostContext
from wasmlet.runtime.capture import BoundedBuffer

if TYPE_CHECKING:
    from wasmlet.abi.base import Invocation
    from wasmlet.abi.extism.kernel import Kernel

# Per-entry overhead counted against max_var_bytes, as the Extism runtime does.
VAR_OVERHEAD = 48


class VarStore:
    """A function's plugin variables on this node, shared by all its pooled instances.

    A call that touches vars holds the store's lock from its first var access to its end,
    so concurrent calls see one consistent store and read-modify-write loses no update.
    Writes are staged in the call's context and applied only when the call succeeds, so a
    failed or abandoned (replayed) call changes nothing.
    """

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.lock = threading.Lock()  # held by the one call using the vars
        self.used = False  # some call touched vars: such calls are kept off the event loop

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def size(self) -> int:
        return sum(len(k.encode()) + len(v) + VAR_OVERHEAD for k, v in self._data.items())

    def apply(self, writes: dict[str, bytes | None]) -> None:
        with self._lock:
            for key, value in writes.items():
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = value


@dataclass(eq=False)
class PluginContext(HostContext):
    """Attached to a plugin's store; host functions find it through the caller."""

    config: dict[str, str] = field(default_factory=dict)
    vars: VarStore = field(default_factory=VarStore)
    max_var_bytes: int = 1024 * 1024
    allowed_hosts: list[str] = field(default_factory=list)
    max_http_response_bytes: int = 50 * 1024 * 1024
    kernel: Kernel | None = None
    pending_vars: dict[str, bytes | None] = field(default_factory=dict)
    holds_vars: bool = False

    def begin(
        self, inv: Invocation, timeout_ms: int, logs: BoundedBuffer, inline_s: float = 0.0
    ) -> None:
        super().begin(inv, timeout_ms, logs, inline_s)
        self.pending_vars.clear()

    def claim_vars(self) -> None:
        """Take the function's var lock for the rest of this call (once per call)."""
        if self.holds_vars:
            return
        self.vars.used = True
        if not self.vars.lock.acquire(timeout=max(0.0, self.deadline - time.monotonic())):
            raise TimeoutError("timed out waiting for the plugin's variable store")
        self.holds_vars = True

    def var(self, key: str) -> bytes | None:
        self.claim_vars()
        if key in self.pending_vars:
            return self.pending_vars[key]
        return self.vars.get(key)

    def finish(self, success: bool) -> None:
        """End the call: apply staged var writes if it succeeded, release the var lock."""
        try:
            if success and self.pending_vars:
                self.vars.apply(self.pending_vars)
        finally:
            self.pending_vars.clear()
            if self.holds_vars:
                self.holds_vars = False
                self.vars.lock.release()
