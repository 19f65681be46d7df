"""Deploy, patch, roll back and delete: every check happens before anything is stored.

Order matters for "a rejected deploy stores nothing": parse (WAT or binary), compile
(full validation), resolve the spec, check imports and exports against the ABI; only then
write the blob, the compiled artifact and the SQL rows, and signal the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import wasmtime

from wasmlet.abi import get_abi
from wasmlet.abi.extism.plugin import link_order
from wasmlet.config import Settings
from wasmlet.errors import InvalidRequest, PayloadTooLarge
from wasmlet.names import check_name
from wasmlet.registry.blobs import BlobStore, digest_of
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.locks import registry_lock
from wasmlet.registry.module_limits import (
    check_data_fits,
    check_functions,
    check_memories,
    sections_of,
)
from wasmlet.registry.repository import Repository
from wasmlet.registry.views import FunctionView
from wasmlet.runtime.compile_cache import CompileCache
from wasmlet.runtime.module_info import Import, ModuleInfo, describe, module_meta
from wasmlet.spec import FunctionSpec, SpecUpdate, check_limits, merge, within_ceilings

log = logging.getLogger(__name__)

_WASM_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\0\0\0"
_COMPONENT_LAYER = b"\x01\0"  # bytes 6-7 of a component's header (a module's are 0)


@dataclass(frozen=True)
class Candidate:
    wasm: bytes
    module: wasmtime.Module
    info: ModuleInfo
    initial_memory: int = 0  # bytes of its largest defined memory at instantiation


class Deployer:
    def __init__(
        self,
        settings: Settings,
        engine: wasmtime.Engine,
        cache: CompileCache,
        blobs: BlobStore,
        repo: Repository,
        changes: ChangeSignal,
    ) -> None:
        self.settings = settings
        # Called with a function's name once it is deleted: state kept elsewhere (its
        # persistent KV keys, its secrets) goes with it.
        self.on_delete: list[Callable[[str], None]] = []
        # Called with (qualified name, bytes to add) before a deploy: raises when the
        # function's namespace is at its quota (auth/quotas.py).
        self.check_quota: Callable[[str, int], None] | None = None
        # Called with a qualified name: the spec ceilings of its namespace, by spec field
        # (auth/quotas.py `ceilings_of`); None: none.
        self.ceilings: Callable[[str], Mapping[str, int]] | None = None
        self.engine = engine
        self.cache = cache
        self.blobs = blobs
        self.repo = repo
        self.changes = changes

    # -- checks ----------------------------------------------------------------------------

    def parse(self, data: bytes) -> Candidate:
        if not data:
            raise InvalidRequest("module is empty")
        if len(data) > self.settings.max_module_bytes:
            raise PayloadTooLarge(
                f"module is {len(data)} bytes; the limit is {self.settings.max_module_bytes}"
            )
        if data.startswith(_WASM_MAGIC):
            if len(data) < 8:
                raise InvalidRequest("module is truncated: it ends inside the 8-byte header")
            if data[6:8] == _COMPONENT_LAYER:
                raise InvalidRequest(
                    "this looks like a WebAssembly component; components are not supported yet"
                )
            if data[4:8] != _CORE_VERSION:
                raise InvalidRequest(f"unsupported wasm binary version 0x{data[4:8].hex()}")
            wasm = data
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest("not a wasm module (bad magic) and not WAT text") from None
            try:
                wasm = bytes(wasmtime.wat2wasm(text))
            except wasmtime.WasmtimeError as exc:
                raise InvalidRequest(f"WAT syntax error: {_short(str(exc))}") from None
        sections = sections_of(wasm)
        check_functions(sections, self.settings.max_module_functions)
        memories = check_memories(sections, self.settings.max_memory_mb)
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise InvalidRequest(f"invalid wasm module: {_short(str(exc))}") from None
        check_data_fits(sections, memories, module)
        return Candidate(wasm, module, describe(module, wasm), max(memories, default=0))

    def resolve(
        self,
        candidate: Candidate,
        update: SpecUpdate,
        base: FunctionSpec | None = None,
        extras: dict[str, Candidate] | None = None,
        ceilings: Mapping[str, int] | None = None,
    ) -> FunctionSpec:
        """The full spec of a version; `ceilings`: its namespace's (a field asked above
        one is refused, a default or a kept value above one is lowered to it)."""
        check_limits(update, self.settings, ceilings)
        info = candidate.info
        abi_name = update.abi or (base.abi if base else None) or _guess_abi(info)
        abi = get_abi(abi_name)
        kept = base if base is not None and base.abi == abi_name else None  # same abi only
        same_abi = kept is not None
        export = (
            update.export or (kept.export if kept is not None else None) or abi.default_export(info)
        )
        if export is None:
            names = ", ".join(sorted(info.func_exports)) or "none"
            raise InvalidRequest(
                f"choose the export to call (exported functions: {names}); pass export"
            )
        reuse = update.reuse
        if reuse is None:
            reuse = kept.reuse if kept is not None else abi.default_reuse
        if base is not None:
            values = merge(base, SpecUpdate())  # a patch keeps every field it does not name
        else:
            values = {
                "timeout_ms": self.settings.default_timeout_ms,
                "memory_mb": self.settings.default_memory_mb,
                "pool_size": self.settings.default_pool_size,
            }
        values.update(abi=abi_name, export=export, reuse=reuse)
        if not same_abi:  # e.g. otoroshi answers failed calls with 400, as Otoroshi does
            values["error_status"] = getattr(abi, "default_error_status", 500)
        values.update(update.model_dump(exclude_none=True, exclude={"abi", "export", "reuse"}))
        extras = extras or {}
        if extras:
            if abi_name != "extism":
                raise InvalidRequest("only extism functions link extra modules")
            values["modules"] = {n: digest_of(c.wasm) for n, c in sorted(extras.items())}
            link_order({n: c.module for n, c in extras.items()})  # refuses import cycles
        spec = FunctionSpec.model_validate(within_ceilings(values, ceilings or {}))
        missing = [
            f"{i.module}.{i.name}"
            for module_info in [info, *(c.info for c in extras.values())]
            for i in module_info.imports
            if not _linked(i, extras) and not abi.provides(i, spec)
        ]
        if missing:
            raise InvalidRequest(
                f"module imports {', '.join(missing)}, which the {abi_name} abi and the "
                "function's granted capabilities do not provide"
            )
        abi.check(info, spec)
        for part in [candidate, *extras.values()]:
            if part.initial_memory > spec.memory_bytes:
                raise InvalidRequest(
                    f"the module's memory starts at {-(-part.initial_memory // 2**20)} MiB, "
                    f"more than the function's memory_mb ({spec.memory_mb}): every call would "
                    "fail; raise memory_mb"
                )
        return spec

    # -- operations ------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        data: bytes,
        update: SpecUpdate,
        extras: dict[str, bytes] | None = None,
    ) -> tuple[FunctionView, bool]:
        """Deploy `data` as NAME; `extras` are further modules linked by name (extism)."""
        check_name(name)
        if self.check_quota is not None:  # before any parsing: a tenant at its limit pays 0
            self.check_quota(name, len(data) + sum(len(b) for b in (extras or {}).values()))
        candidate = self.parse(data)
        linked = {check_module_name(n): self.parse(b) for n, b in (extras or {}).items()}
        spec = self.resolve(candidate, update, extras=linked, ceilings=self._ceilings(name))
        return self._store(name, candidate, spec, linked)

    def patch(self, name: str, update: SpecUpdate) -> FunctionView:
        check_name(name)
        active = self.repo.active_version(name)
        base = FunctionSpec.model_validate(active.spec)
        candidate = self.parse(self.blobs.get(active.module_digest))
        linked = {n: self.parse(self.blobs.get(d)) for n, d in base.modules.items()}
        spec = self.resolve(candidate, update, base, extras=linked, ceilings=self._ceilings(name))
        view, _ = self._store(name, candidate, spec, linked)
        return view

    def _ceilings(self, name: str) -> Mapping[str, int]:
        return self.ceilings(name) if self.ceilings is not None else {}

    def rollback(self, name: str, digest: str) -> FunctionView:
        check_name(name)
        with registry_lock(self.settings.data_dir):
            view = self.repo.activate(name, digest)
        self.changes.bump()
        return view

    def delete(self, name: str) -> int:
        """Stop serving a function now, then drop the module bytes nothing else uses."""
        check_name(name)
        with registry_lock(self.settings.data_dir):
            modules = set()
            for v in self.repo.versions(name):
                modules.add(v.module_digest)
                modules.update(v.spec.get("modules", {}).values())
            # Its keys and secrets first: a crash in between must not leave them for a
            # function deployed later under the same name.
            for forget in self.on_delete:
                forget(name)
            self.repo.delete_function(name)
        self.changes.bump()
        return self.collect_garbage(modules)

    def collect_garbage(self, candidates: set[str] | None = None) -> int:
        """Remove blobs and compiled artifacts no version refers to.

        With `candidates`, only those digests are considered, so a blob uploaded for a
        deploy that has not happened yet is left alone.
        """
        removed = 0
        with registry_lock(self.settings.data_dir):
            referenced = self.repo.referenced_modules()
            for digest in list(candidates if candidates is not None else self.blobs.digests()):
                if digest not in referenced:
                    self.blobs.delete(digest)
                    self.cache.discard(digest)
                    removed += 1
        return removed

    def _store(
        self,
        name: str,
        candidate: Candidate,
        spec: FunctionSpec,
        extras: dict[str, Candidate] | None = None,
    ) -> tuple[FunctionView, bool]:
        with registry_lock(self.settings.data_dir):
            for extra in (extras or {}).values():
                self.cache.store(self.blobs.put(extra.wasm), extra.module)
            module_digest = self.blobs.put(candidate.wasm)
            assert module_digest == digest_of(candidate.wasm)
            self.cache.store(module_digest, candidate.module)
            view, created = self.repo.add_version(
                name,
                module_digest=module_digest,
                size=len(candidate.wasm),
                abi=spec.abi,
                spec=spec.canonical(),
                exports=module_meta(candidate.info),
            )
        self.changes.bump()
        assert view.active_version is not None  # add_version made the new version active
        log.info("deployed %s %s (%s)", name, view.active_version.digest[:19], spec.abi)
        return view, created


_RESERVED_MODULES = {"main", "env", "extism:host/env", "extism:host/user", "wasi_snapshot_preview1"}


def check_module_name(name: str) -> str:
    if not name or len(name) > 128 or name in _RESERVED_MODULES or "\0" in name:
        raise InvalidRequest(f"invalid module name {name!r} for a linked module")
    return name


def _linked(imp: Import, extras: dict[str, Candidate]) -> bool:
    """An import another module of the function satisfies, with the same type."""
    extra = extras.get(imp.module)
    if extra is None:
        return False
    export = extra.info.exports.get(imp.name)
    return export is not None and _same_type(export, imp.type)


def _same_type(a: object, b: object) -> bool:
    if isinstance(a, wasmtime.FuncType) and isinstance(b, wasmtime.FuncType):
        return [str(t) for t in a.params] == [str(t) for t in b.params] and [
            str(t) for t in a.results
        ] == [str(t) for t in b.results]
    return type(a) is type(b)


def _guess_abi(info: ModuleInfo) -> str:
    return "wasi-cgi" if "_start" in info.func_exports else "core"


# -- module shape: rules wasmtime's validation does not make ----------------------------------
# Compiling costs ~65 us per function however small it is (config.py, max_module_functions),
# so functions are counted before compiling. A memory larger than any function may have, or a
# data segment that does not fit its memory, would fail every instantiation: refused at
# deploy instead. Sections are length-prefixed, so only the few needed are read.


def _short(message: str) -> str:
    """First line of a wasmtime/wat error plus its location, without the source excerpt."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    where = next((ln.removeprefix("--> ") for ln in lines[1:] if ln.startswith("-->")), "")
    return (f"{lines[0]} (at {where})" if where else lines[0])[:500]
