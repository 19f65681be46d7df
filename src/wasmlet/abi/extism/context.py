"""Per-store and per-function state that the Extism host functions read and write."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wasmlet.runtime.capture import BoundedBuffer

if TYPE_CHECKING:
    from wasmlet.abi.extism.kernel import Kernel

# Per-entry overhead counted against max_var_bytes, as the Extism runtime does.
VAR_OVERHEAD = 48


class VarStore:
    """A function's plugin variables on this node, shared by all its pooled instances.

    Writes made during a call are staged in the call's context and applied when the call
    succeeds, so an abandoned inline attempt (replayed off-loop) changes nothing twice.
    """

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

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


@dataclass
class PluginContext:
    """Attached to a plugin's store; host functions find it through the caller."""

    function: str
    config: dict[str, str]
    vars: VarStore
    max_var_bytes: int
    allowed_hosts: list[str]
    max_http_response_bytes: int
    log_level: int
    kernel: Kernel | None = None
    logs: BoundedBuffer | None = None
    deadline: float = 0.0  # time.monotonic() by which the current call must end
    pending_vars: dict[str, bytes | None] = field(default_factory=dict)
    http_status: int = 0
    http_headers: dict[str, str] | None = None

    def begin(self, timeout_ms: int, logs: BoundedBuffer) -> None:
        self.deadline = time.monotonic() + timeout_ms / 1000
        self.logs = logs
        self.pending_vars.clear()
        self.http_status = 0
        self.http_headers = None

    def var(self, key: str) -> bytes | None:
        if key in self.pending_vars:
            return self.pending_vars[key]
        return self.vars.get(key)

    def commit(self) -> None:
        if self.pending_vars:
            self.vars.apply(self.pending_vars)
            self.pending_vars.clear()
