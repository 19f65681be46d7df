"""The small interface every calling convention implements, and the values it trades in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import wasmtime

from wasmlet.runtime.module_info import Import, ModuleInfo
from wasmlet.spec import FunctionSpec

if TYPE_CHECKING:
    from wasmlet.runtime.slot import Slot

WASI_P1 = "wasi_snapshot_preview1"


@dataclass(slots=True)
class Invocation:
    """One request to a function, whichever route it came by."""

    method: str = "POST"
    path: str = "/"  # the path within the function, after /fn/{name}
    query: str = ""  # raw query string, not decoded
    # As ASGI gives them: lower-case names, latin-1 bytes. Decoded only by ABIs that need them.
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    export: str | None = None
    args: Any = None  # JSON arguments from the invoke API (numeric ABIs)
    via: str = "api"  # api | gateway | compat
    server_name: str = "localhost"
    server_port: int = 80
    remote_addr: str = ""
    scheme: str = "http"

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


@dataclass(slots=True)
class Outcome:
    status: int
    headers: list[tuple[bytes, bytes]]  # lower-case names, as sent on the wire
    body: bytes
    logs: bytes = b""


class Abi(Protocol):
    name: ClassVar[str]
    default_reuse: ClassVar[bool]
    allows_reuse: ClassVar[bool]

    def define_imports(self, linker: wasmtime.Linker) -> None:
        """Add everything this convention offers guests to a linker."""

    def provides(self, imp: Import) -> bool:
        """Whether this convention satisfies an import (capabilities are checked elsewhere)."""

    def default_export(self, info: ModuleInfo) -> str | None: ...

    def check(self, info: ModuleInfo, spec: FunctionSpec) -> None:
        """Raise InvalidRequest (422) when the module cannot be called this way."""

    def configure_store(self, slot: Slot, inv: Invocation | None) -> None:
        """Prepare a new store before instantiation (WASI context, output capture)."""

    def on_instance(self, slot: Slot) -> None:
        """Run once per new instance, after instantiation (reactor initialisers)."""

    def call(self, slot: Slot, inv: Invocation) -> Outcome:
        """Run one invocation in a slot the caller holds exclusively."""
