"""The small interface every calling convention implements, and the values it trades in."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import wasmtime

from wasmlet.host.binding import MEMORY_NS, define_memory, memory_provides, open_host
from wasmlet.runtime.module_info import Import, ModuleInfo
from wasmlet.spec import FunctionSpec

if TYPE_CHECKING:
    from wasmlet.runtime.slot import Slot

WASI_P1 = "wasi_snapshot_preview1"

Instantiator = Callable[[wasmtime.Store], wasmtime.Instance]


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
    via: str = "api"  # api | gateway | compat | route | call
    # The URL prefix the function is mounted at (CGI SCRIPT_NAME); None: /fn/{name}.
    script_name: str | None = None
    server_name: str = "localhost"
    server_port: int = 80
    remote_addr: str = ""
    scheme: str = "http"
    # Function-to-function calls: the functions above this one, outermost first.
    chain: tuple[str, ...] = ()

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


def is_json(data: bytes) -> bool:
    """Whether output promised as JSON is JSON (UTF-8, any nesting the parser takes)."""
    try:
        json.loads(data)
        return True
    except (ValueError, RecursionError):
        return False


class Abi(Protocol):
    name: ClassVar[str]
    default_reuse: ClassVar[bool]
    allows_reuse: ClassVar[bool]

    def instantiator(
        self,
        engine: wasmtime.Engine,
        module: wasmtime.Module,
        spec: FunctionSpec,
        extras: dict[str, wasmtime.Module],
    ) -> Instantiator:
        """Resolve the module's imports once; the result instantiates it in a given store.

        `extras` are the function's further modules (spec.modules), compiled, by name."""

    def provides(self, imp: Import, spec: FunctionSpec) -> bool:
        """Whether this convention satisfies an import for a function with this spec."""

    def replayable(self, spec: FunctionSpec) -> bool:
        """Whether an abandoned call can run again without effects outside its instance."""

    def forget(self, name: str, function_id: str) -> None:
        """A function was deleted: drop any state this convention keeps for it."""

    def default_export(self, info: ModuleInfo) -> str | None: ...

    def check(self, info: ModuleInfo, spec: FunctionSpec) -> None:
        """Raise InvalidRequest (422) when the module cannot be called this way."""

    def configure_store(self, slot: Slot, inv: Invocation | None) -> None:
        """Prepare a new store before instantiation (WASI context, output capture)."""

    def on_instance(self, slot: Slot) -> None:
        """Run once per new instance, after instantiation (reactor initialisers)."""

    def call(self, slot: Slot, inv: Invocation) -> Outcome:
        """Run one invocation in a slot the caller holds exclusively."""


def wasi_instantiator(
    engine: wasmtime.Engine, module: wasmtime.Module, spec: FunctionSpec
) -> Instantiator:
    """Imports resolved once against a linker of (sandboxed) WASI and the host functions
    the function was granted: ~25 us per instance thereafter."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    if any(i.module == MEMORY_NS for i in module.imports):
        define_memory(linker, spec)
    return linker.instantiate_pre(module).instantiate


def _signature(ty: object) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    if not isinstance(ty, wasmtime.FuncType):
        return None
    return tuple(str(t) for t in ty.params), tuple(str(t) for t in ty.results)


class WasiOnlyAbi:
    """Defaults for conventions whose guests import (sandboxed) WASI and the host
    functions of the `wasmlet` namespace they were granted (host/binding.py)."""

    def instantiator(
        self,
        engine: wasmtime.Engine,
        module: wasmtime.Module,
        spec: FunctionSpec,
        extras: dict[str, wasmtime.Module],
    ) -> Instantiator:
        return wasi_instantiator(engine, module, spec)

    def provides(self, imp: Import, spec: FunctionSpec) -> bool:
        if imp.module == WASI_P1:
            return True
        return memory_provides(imp.module, imp.name, _signature(imp.type), spec)

    def forget(self, name: str, function_id: str) -> None:
        return None

    def replayable(self, spec: FunctionSpec) -> bool:
        # Without capabilities nothing leaves the instance, so a call can run again.
        return not spec.capabilities

    def open_host(self, slot: Slot) -> None:
        if MEMORY_NS in slot.function.import_modules:
            open_host(slot)
