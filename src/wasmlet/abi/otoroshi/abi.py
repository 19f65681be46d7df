"""`otoroshi`: run plugins written for Otoroshi's WasmBackend (EXTISM-ABI.md §6).

The plugin is an Extism plugin (same kernel, built-in functions, limits and instance reuse
as abi/extism). What changes is the data: its input is the JSON description of the request
(abi/otoroshi/contract.py), its output a JSON answer {status, headers, body...} that becomes
the HTTP response, and it may import Otoroshi's `proxy_*` host functions from `env`
(abi/otoroshi/proxy.py), each linked only when the function holds its capability.

Failures: as Otoroshi answers 400 when a backend call fails (trap, error set, non-zero
return code, an answer that cannot be sent), every such failure is `guest_error` with the
function's `error_status`, which deploy defaults to `default_error_status` (400) for this
ABI. Timeouts, fuel and memory limits end a call exactly as for every other ABI.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import wasmtime

from wasmlet.abi.base import Invocation, Outcome
from wasmlet.abi.extism.plugin import ExtismAbi
from wasmlet.abi.otoroshi.contract import ContractError, context_json, outcome_of, request_id
from wasmlet.abi.otoroshi.proxy import NAMESPACES, OtoroshiContext, granted_functions
from wasmlet.errors import GuestError, GuestTrap
from wasmlet.runtime.faults import classify
from wasmlet.runtime.module_info import ModuleInfo
from wasmlet.runtime.slot import Slot
from wasmlet.spec import FunctionSpec

# Traps that are limits, not plugin failures: the pool reports them (and an inline attempt
# that runs out of its fuel cap is replayed off the event loop, which needs the raw trap).
_LIMIT_TRAPS = (wasmtime.TrapCode.INTERRUPT, wasmtime.TrapCode.OUT_OF_FUEL)


class OtoroshiAbi(ExtismAbi):
    name: ClassVar[str] = "otoroshi"
    default_export_name: ClassVar[str] = "call_backend"  # Otoroshi's default functionName
    default_error_status: ClassVar[int] = 400  # what Otoroshi answers for a failed call

    def extra_imports(self, spec: FunctionSpec) -> dict[str, dict[str, tuple[Any, Any]]]:
        imports = super().extra_imports(spec)
        functions = granted_functions(spec)
        for namespace in NAMESPACES:
            imports[namespace] = functions
        return imports

    def default_export(self, info: ModuleInfo) -> str | None:
        ty = info.func_exports.get(self.default_export_name)
        if ty is not None and not list(ty.params) and [str(t) for t in ty.results] in ([], ["i32"]):
            return self.default_export_name
        return super().default_export(info)

    def new_context(self, slot: Slot, name: str, spec: FunctionSpec) -> OtoroshiContext:
        base = super().new_context(slot, name, spec)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
        return OtoroshiContext(**fields)

    def call(self, slot: Slot, inv: Invocation) -> Outcome:
        spec: FunctionSpec = slot.function.spec
        context = context_json(inv, slot.function.ref.name, spec.config, request_id())
        try:
            raw = super().call(slot, dataclasses.replace(inv, body=context))
        except GuestError as exc:
            exc.status = spec.error_status  # host-function failures included
            raise
        except wasmtime.Trap as exc:
            if exc.trap_code in _LIMIT_TRAPS:
                raise
            failure = classify(
                exc,
                timeout_ms=spec.timeout_ms,
                memory_used=slot.largest_memory(),
                memory_cap=spec.memory_bytes,
                fuel=spec.fuel,
            )
            if type(failure) is not GuestTrap:  # a memory limit: reported as for any ABI
                raise
            slot.retired = True
            raise GuestError(failure.message, status=spec.error_status) from None
        try:
            outcome = outcome_of(raw.body)
        except ContractError as exc:
            raise GuestError(
                f"plugin answer cannot be sent: {exc}", status=spec.error_status
            ) from None
        # The answer itself was held to the output limit as it left kernel memory (the
        # extism kernel); the body it decodes to (body_json re-serialised, say) is too.
        limit = slot.function.output_limit
        if len(outcome.body) > limit:
            raise GuestError(
                f"output of {len(outcome.body)} bytes exceeds the limit of {limit} bytes",
                status=spec.error_status,
            )
        return outcome


__all__ = ["OtoroshiAbi"]
