"""`extism`: run unmodified Extism plugins, with wasmlet's own host (no Extism SDK).

Per store: a kernel instance (abi/extism/kernel.py) owns the memory plugin and host share;
the plugin is linked to the kernel's exports, to the built-in host functions
(abi/extism/host_env.py) and, when granted, to WASI. The request body is the plugin's
input; its output is the response body. Outcomes follow EXTISM-ABI.md §1: an error set by
the plugin, a non-zero return code or a non-zero WASI exit fails the call (`guest_error`);
traps, timeouts and limits end it like any other ABI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import wasmtime

from wasmlet.abi.base import WASI_P1, Instantiator, Invocation, Outcome, is_json
from wasmlet.abi.extism.context import PluginContext, VarStore
from wasmlet.abi.extism.host_env import BUILTINS, ENV, LEGACY, define_builtins
from wasmlet.abi.extism.kernel import KERNEL_EXPORTS, Kernel
from wasmlet.errors import GuestError, InvalidRequest, NotFound, Timeout
from wasmlet.host import preopens
from wasmlet.host.binding import EXTISM_NS as USER
from wasmlet.host.binding import define_signatures, extism_functions, open_host
from wasmlet.host.context import CONTEXTS, HostError, HostTimeout, attach
from wasmlet.runtime.module_info import Import, ModuleInfo
from wasmlet.runtime.slot import Slot
from wasmlet.spec import FunctionSpec
from wasmlet.wasm.native import store_address

_INITIALISERS = ("__wasm_call_ctors", "_initialize")
_HIDDEN = {"memory", "_start", "hs_init", *_INITIALISERS}
_JSON = b"application/json"
ERROR_FLOOR = 1024
_OCTET = b"application/octet-stream"


def _signature(ty: object) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    if not isinstance(ty, wasmtime.FuncType):
        return None
    return tuple(str(t) for t in ty.params), tuple(str(t) for t in ty.results)


def _expected(imp: Import) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The signature wasmlet provides for an import, or None when it provides none."""
    kernel = _kernel_name(imp)
    if kernel is not None:
        return KERNEL_EXPORTS[kernel]
    if not _builtin(imp):
        return None
    sig = BUILTINS[imp.name.removeprefix("extism_") if imp.module == LEGACY else imp.name][1]
    kinds = {"I": "i64", "i": "i32"}
    params, _, results = sig.partition(":")
    return tuple(kinds[c] for c in params), tuple(kinds[c] for c in results)


def _kernel_name(imp: Import) -> str | None:
    """The kernel export an import refers to (current or legacy naming), if any."""
    if imp.module == ENV and imp.name in KERNEL_EXPORTS:
        return imp.name
    if imp.module == LEGACY and imp.name.startswith("extism_"):
        name = imp.name.removeprefix("extism_")
        return name if name in KERNEL_EXPORTS else None
    return None


def _builtin(imp: Import) -> bool:
    if imp.module == LEGACY and imp.name.startswith("extism_"):
        entry = BUILTINS.get(imp.name.removeprefix("extism_"))
        return entry is not None and entry[0] == ENV
    entry = BUILTINS.get(imp.name)
    return entry is not None and entry[0] == imp.module


def _callable(ty: wasmtime.FuncType) -> bool:
    results = [str(t) for t in ty.results]
    return not list(ty.params) and results in ([], ["i32"])


class PluginInstantiator:
    """Instantiates a plugin in a store; `calls_host`: whether any of its modules imports a
    host function implemented in Python (not the kernel's, not WASI's)."""

    __slots__ = ("_instantiate", "calls_host")

    def __init__(self, instantiate: Instantiator, calls_host: bool) -> None:
        self._instantiate = instantiate
        self.calls_host = calls_host

    def __call__(self, store: wasmtime.Store) -> wasmtime.Instance:
        return self._instantiate(store)


class ExtismAbi:
    name: ClassVar[str] = "extism"
    default_reuse: ClassVar[bool] = True  # upstream keeps one instance per plugin
    allows_reuse: ClassVar[bool] = True

    def __init__(self) -> None:
        self._vars: dict[tuple[str, str], VarStore] = {}

    # -- deploy-time checks -------------------------------------------------------------------

    def provides(self, imp: Import, spec: FunctionSpec) -> bool:
        if imp.module == WASI_P1:
            return spec.wasi
        expected = _expected(imp)
        if expected is None:
            extra = self.extra_imports(spec).get(imp.module, {}).get(imp.name)
            expected = extra[0] if extra else None
        return expected is not None and _signature(imp.type) == expected

    def extra_imports(self, spec: FunctionSpec) -> dict[str, dict[str, tuple[Any, Any]]]:
        """Host functions beyond extism:host/env, by import module then name:
        (signature, implementation). Here: wasmlet's user functions, as granted."""
        return {USER: extism_functions(spec)}

    def default_export(self, info: ModuleInfo) -> str | None:
        names = [n for n, t in info.func_exports.items() if n not in _HIDDEN and _callable(t)]
        return names[0] if len(names) == 1 else None

    def check(self, info: ModuleInfo, spec: FunctionSpec) -> None:
        ty = info.func_exports.get(spec.export)
        if ty is None:
            raise InvalidRequest(f"plugin has no exported function {spec.export!r}")
        if not _callable(ty):
            raise InvalidRequest(
                f"export {spec.export!r} must take no parameters and return nothing or an i32"
            )

    def replayable(self, spec: FunctionSpec) -> bool:
        # Var writes are staged until the call succeeds; outbound HTTP and the other
        # capabilities cannot be undone.
        return not spec.allowed_hosts and not spec.capabilities

    # -- instances ----------------------------------------------------------------------------

    def instantiator(
        self,
        engine: wasmtime.Engine,
        module: wasmtime.Module,
        spec: FunctionSpec,
        extras: dict[str, wasmtime.Module],
    ) -> Instantiator:
        """Per store: the kernel, then the linked modules (each after the ones it imports
        from), then the main module; every import resolved by a plan made once here."""
        linker = wasmtime.Linker(engine)
        define_builtins(linker)
        for namespace, functions in self.extra_imports(spec).items():
            define_signatures(linker, namespace, functions)
        if spec.wasi:
            linker.define_wasi()

        def plan(mod: wasmtime.Module) -> list[tuple[str, str, str]]:
            steps = []
            for item in mod.imports:
                imp = Import(item.module, item.name or "", item.type)
                kname = _kernel_name(imp)
                if kname is not None:
                    steps.append(("kernel", kname, ""))
                elif imp.module in extras:
                    steps.append(("module", imp.module, imp.name))
                else:
                    steps.append(("linker", imp.module, imp.name))
            return steps

        order = link_order(extras)
        plans = {name: plan(extras[name]) for name in order}
        main_plan = plan(module)

        def instantiate(store: wasmtime.Store) -> wasmtime.Instance:
            kernel = Kernel.instantiate(store)
            ctx = CONTEXTS[store_address(store)]
            assert isinstance(ctx, PluginContext)  # attached by configure_store
            ctx.kernel = kernel
            linked: dict[str, Any] = {}

            def resolve(steps: list[tuple[str, str, str]]) -> list[Any]:
                return [
                    kernel.exports[a]
                    if kind == "kernel"
                    else linked[a][b]
                    if kind == "module"
                    else linker.get(store, a, b)
                    for kind, a, b in steps
                ]

            for name in order:
                linked[name] = wasmtime.Instance(store, extras[name], resolve(plans[name])).exports(
                    store
                )
            return wasmtime.Instance(store, module, resolve(main_plan))

        # WASI is wasmtime's own code; any other linker import is a Python host function.
        calls_host = any(
            kind == "linker" and namespace != WASI_P1
            for steps in (main_plan, *plans.values())
            for kind, namespace, _ in steps
        )
        return PluginInstantiator(instantiate, calls_host)

    def forget(self, name: str, function_id: str) -> None:
        """The function is gone: its vars go with it."""
        self._vars.pop((name, function_id), None)

    def configure_store(self, slot: Slot, inv: Invocation | None) -> None:
        spec: FunctionSpec = slot.function.spec
        name = slot.function.ref.name
        if spec.wasi:
            set_wasi(slot, slot.function.files_dir, spec.allowed_paths)
        ctx = self.new_context(slot, name, spec)
        slot.abi_state = ctx  # the slot keeps the context alive; CONTEXTS only points to it
        if getattr(slot.function.instantiate, "calls_host", True):
            open_host(slot, ctx)
        else:
            # No host function can see it: the pool skips its per-call begin (slot.host is
            # None); instantiation still finds it in CONTEXTS to give it the kernel.
            attach(slot.store, ctx)

    def new_context(self, slot: Slot, name: str, spec: FunctionSpec) -> PluginContext:
        services = slot.function.services
        max_var_bytes, max_http = spec.max_var_bytes, spec.max_http_response_bytes
        if services is not None:  # a version stored before the node's caps were lowered
            max_var_bytes = min(max_var_bytes, services.settings.max_var_bytes)
            max_http = min(max_http, services.settings.max_http_response_bytes)
        return PluginContext(
            function=name,
            spec=spec,
            services=slot.function.services,
            config=dict(spec.config),
            vars=self._vars.setdefault((name, slot.function.ref.function_id), VarStore()),
            max_var_bytes=max_var_bytes,
            allowed_hosts=list(spec.allowed_hosts),
            max_http_response_bytes=max_http,
        )

    def on_instance(self, slot: Slot) -> None:
        """Run the guest runtime's initialiser once, as EXTISM-ABI.md §4 orders it."""
        kernel = slot.abi_state.kernel
        if kernel is not None:  # kernel memory counts in the call's memory figures
            slot.extra_memories = (kernel.memory,)
            # What the host copies out per call: the output up to max_output_bytes, error
            # messages up to max_log_bytes (at least 1 KiB: an error must still say why).
            kernel.output_limit = slot.function.output_limit
            kernel.error_limit = max(slot.function.log_limit, ERROR_FLOOR)
        functions = slot.function.ref.functions
        if "hs_init" in functions:
            init = slot.func("_initialize") if "_initialize" in functions else None
            if init is not None and not init.params and not init.results:
                init()
            hs_init = slot.func("hs_init")
            if hs_init is not None and len(hs_init.params) == 2:
                hs_init(0, 0)
            return
        for name in _INITIALISERS:
            if name in functions:
                init = slot.func(name)
                if init is not None and not init.params and not init.results:
                    init()
                    return

    # -- calls --------------------------------------------------------------------------------

    def call(self, slot: Slot, inv: Invocation) -> Outcome:
        ctx: PluginContext = slot.abi_state
        kernel = ctx.kernel
        assert kernel is not None
        spec = slot.function.spec
        export = inv.export or spec.export
        fn = slot.func(export) if export not in ("memory", "hs_init") else None
        if fn is None or fn.params or fn.results not in ((), ("i32",)):
            raise NotFound(f"plugin has no callable export {export!r}")
        if slot.host is None:  # nothing to stage or release: no host function can run
            try:
                return self._run(slot, ctx, kernel, fn, inv, export, spec)
            finally:
                if ctx.vars.used:
                    slot.function.inline_ok = False  # var users may wait on the var lock
        success = False
        try:
            outcome = self._run(slot, ctx, kernel, fn, inv, export, spec)
            success = True
            return outcome
        finally:
            ctx.finish(success)
            if ctx.vars.used:
                slot.function.inline_ok = False  # var users may wait on the var lock

    def _run(
        self,
        slot: Slot,
        ctx: PluginContext,
        kernel: Kernel,
        fn: Any,
        inv: Invocation,
        export: str,
        spec: FunctionSpec,
    ) -> Outcome:
        runner = None
        if slot.calls:  # a reused instance: worth a runner (one wasm call, not three)
            runner = kernel.runners.get(export)
            if runner is None:
                func = slot.export_func(export)
                if func is not None:
                    runner = kernel.runner(export, func, bool(fn.results))
        if export == "_start":
            slot.retired = True  # WASI command semantics: never reuse after _start
        done = None
        message: str | None
        try:
            done = kernel.call(inv.body, fn, runner)
        except HostTimeout:
            slot.retired = True
            raise Timeout(f"function exceeded its {spec.timeout_ms} ms timeout") from None
        except HostError as exc:
            slot.retired = True
            raise GuestError(str(exc)) from None
        except wasmtime.ExitTrap as exc:
            slot.retired = True
            if exc.code != 0:
                message = kernel.error() or f"plugin exited with status {exc.code}"
                raise GuestError(message, status=spec.error_status) from None
        except wasmtime.Trap as exc:
            if exc.trap_code not in (wasmtime.TrapCode.INTERRUPT, wasmtime.TrapCode.OUT_OF_FUEL):
                message = kernel.error()
                if message:
                    slot.retired = True
                    raise GuestError(message, status=spec.error_status) from None
            raise
        if done is None:  # exited with status 0: the output is what it set before
            out, message = kernel.finish()
            code = 0
        else:
            out, message, code = done
        if message:
            raise GuestError(message, status=spec.error_status)
        if code != 0:
            raise GuestError(f"Returned non-zero exit code: {code}", status=spec.error_status)
        if spec.content_type and _declares_json(spec.content_type) and not is_json(out):
            raise GuestError(
                f"plugin output is not valid JSON, which its content type "
                f"{spec.content_type!r} promises",
                status=spec.error_status,
            )
        return Outcome(200, [(b"content-type", _content_type(spec, out))], out)


def set_wasi(slot: Slot, files_dir: Path | None, allowed_paths: dict[str, str]) -> None:
    """WASI with no args, env or stdio; preopens only below the function's own folder,
    opened without following links (host/preopens.py)."""
    config = wasmtime.WasiConfig()
    if not allowed_paths:
        slot.store.set_wasi(config)
        return
    if files_dir is None:
        raise GuestError("this function's allowed_paths need a data folder")
    with preopens.opened(files_dir, allowed_paths) as opened:
        for item in opened:
            config.preopen_dir(item.path, item.guest, fs_mutable=not item.read_only)
        slot.store.set_wasi(config)


def link_order(extras: dict[str, wasmtime.Module]) -> list[str]:
    """Linked modules ordered so each comes after the modules it imports from."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise InvalidRequest(f"linked modules import each other in a cycle ({name})")
        visiting.add(name)
        for item in extras[name].imports:
            if item.module in extras:
                visit(item.module)
        visiting.discard(name)
        order.append(name)

    for name in sorted(extras):
        visit(name)
    return order


def _declares_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# json.loads(out) for an output that starts with "{" or "[": its encoding detection then
# always picks UTF-8 (a zero second byte makes it try UTF-16/32, in which no text ends with
# "}" or "]"; UTF-8 rejects such output too), and with a bracket last, only a value that
# ends exactly there is whole. The same verdict as json.loads at a quarter of its overhead.
_DECODER = json.JSONDecoder()


def _content_type(spec: FunctionSpec, out: bytes) -> bytes:
    if spec.content_type:
        return spec.content_type.encode("latin-1")
    if out[:1] in (b"{", b"[") and out[-1:] in (b"}", b"]"):
        try:
            text = out.decode("utf-8", "surrogatepass")
            if _DECODER.raw_decode(text)[1] == len(text):
                return _JSON
        except (ValueError, RecursionError):  # RecursionError: nested too deep to decode
            pass
    return _OCTET


__all__ = ["USER", "ExtismAbi"]
