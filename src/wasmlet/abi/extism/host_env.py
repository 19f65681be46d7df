"""The built-in Extism host functions (`extism:host/env`) and wasmlet's user functions.

These are the only calls from an Extism plugin into Python. Each reads its arguments from
kernel memory in one copy and writes its result the same way. They find the calling
store's PluginContext through the store's address (host/context.py). A host function that
fails raises HostError: the plugin traps and the call fails with that message
(`guest_error`). wasmlet's own functions in `extism:host/user` come from host/binding.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import wasmtime

from wasmlet.abi.extism.context import VAR_OVERHEAD, PluginContext
from wasmlet.host import settings
from wasmlet.host.context import LEVELS, HostError
from wasmlet.host.context import context_of as _context_of
from wasmlet.host.http import extism_allowed, fetch
from wasmlet.wasm.fastcall import guarded

ENV = "extism:host/env"
LEGACY = "env"  # pre-1.0 PDKs: the same functions, named extism_<name>


def context_of(caller: wasmtime.Caller) -> PluginContext:
    ctx = _context_of(caller)
    if not isinstance(ctx, PluginContext):
        raise HostError("no plugin context for this store")
    return ctx


def _text(ctx: PluginContext, handle: int, what: str) -> str:
    """Read a UTF-8 block the plugin passed; an invalid non-zero handle is an error."""
    assert ctx.kernel is not None
    if not handle:
        return ""
    if not ctx.kernel.length(handle):
        raise HostError(f"invalid {what} handle {handle}")
    return ctx.kernel.read(handle).decode("utf-8", errors="replace")


def _free(ctx: PluginContext, *handles: int) -> None:
    assert ctx.kernel is not None
    for handle in handles:
        if handle:
            ctx.kernel.free(handle)


# -- config and vars ----------------------------------------------------------------------


def config_get(caller: wasmtime.Caller, key: int) -> int:
    ctx = context_of(caller)
    name = _text(ctx, key, "key")
    _free(ctx, key)
    # The function's config, then its secrets: unmodified plugins read credentials this way.
    value = ctx.config.get(name) or settings.secret(ctx, name)
    assert ctx.kernel is not None  # set when the plugin's store was instantiated
    return ctx.kernel.write(value.encode()) if value else 0


def var_get(caller: wasmtime.Caller, key: int) -> int:
    ctx = context_of(caller)
    name = _text(ctx, key, "key")
    _free(ctx, key)
    value = _claimed(ctx, lambda: ctx.var(name))
    assert ctx.kernel is not None  # set when the plugin's store was instantiated
    return ctx.kernel.write(value) if value else 0


def var_set(caller: wasmtime.Caller, key: int, value: int) -> None:
    ctx = context_of(caller)
    if ctx.max_var_bytes == 0:
        raise HostError("Vars are disabled by this host")
    name = _text(ctx, key, "key")
    assert ctx.kernel is not None  # set when the plugin's store was instantiated
    data = ctx.kernel.read(value) if value else b""
    _free(ctx, key, value)
    _claimed(ctx, ctx.claim_vars)
    if not data:
        ctx.pending_vars[name] = None  # an empty value deletes the key
        return
    projected = ctx.vars.size() + sum(
        len(k.encode()) + len(v) + VAR_OVERHEAD for k, v in ctx.pending_vars.items() if v
    )
    if projected + len(name.encode()) + len(data) + VAR_OVERHEAD > ctx.max_var_bytes:
        raise HostError("Variable store is full")
    ctx.pending_vars[name] = data


def _claimed(ctx: PluginContext, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except TimeoutError as exc:
        raise HostError(str(exc)) from None


# -- HTTP ---------------------------------------------------------------------------------


def http_request(caller: wasmtime.Caller, req: int, body: int) -> int:
    ctx = context_of(caller)
    kernel = ctx.kernel
    assert kernel is not None
    raw = _text(ctx, req, "request")
    payload = kernel.read(body) if body else b""
    _free(ctx, req, body)
    ctx.http_status, ctx.http_headers = 0, None
    try:
        spec = json.loads(raw)
        url = spec["url"]
        method = (spec.get("method") or "GET").upper()
        headers = spec.get("headers") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise HostError("invalid HTTP request description") from None
    allowed = ctx.allowed_hosts
    response = fetch(
        ctx,
        method,
        url,
        headers,
        payload,
        allow=lambda u: extism_allowed(u, allowed),
        limit=ctx.max_http_response_bytes,
    )
    ctx.http_status, ctx.http_headers = response.status, response.headers
    return kernel.write(response.body) if response.body else 0


def http_status_code(caller: wasmtime.Caller) -> int:
    return context_of(caller).http_status


def http_headers(caller: wasmtime.Caller) -> int:
    ctx = context_of(caller)
    if ctx.http_headers is None:
        return 0
    assert ctx.kernel is not None  # set when the plugin's store was instantiated
    return ctx.kernel.write(json.dumps(ctx.http_headers).encode())


# -- logs ---------------------------------------------------------------------------------


def _logger(level: str) -> Callable[[wasmtime.Caller, int], None]:
    number = LEVELS[level]
    tag = f"[{level}] ".encode()

    def log(caller: wasmtime.Caller, msg: int) -> None:
        ctx = context_of(caller)
        if number < ctx.log_level:
            _free(ctx, msg)
            return
        logs, kernel = ctx.logs, ctx.kernel
        assert kernel is not None
        if msg and not kernel.length(msg):
            raise HostError(f"invalid log message handle {msg}")
        if logs is not None:
            # Copy only what the log still has room for: a message the size of the
            # plugin's memory is never copied whole to be dropped.
            data, size = kernel.read_prefix(msg, logs.room()) if msg else (b"", 0)
            logs.write(tag + data + b"\n")
            logs.dropped += size - len(data)
        _free(ctx, msg)

    return log


def get_log_level(caller: wasmtime.Caller) -> int:
    return context_of(caller).log_level


def _ty(signature: str) -> wasmtime.FuncType:
    """ "II:I" -> (i64, i64) -> i64; "I" is i64, "i" is i32."""
    kinds = {"I": wasmtime.ValType.i64, "i": wasmtime.ValType.i32}
    params, _, results = signature.partition(":")
    return wasmtime.FuncType([kinds[c]() for c in params], [kinds[c]() for c in results])


# name -> (namespace, signature, implementation), all in extism:host/env. Types are built
# per linker: wasmtime ties a FuncType to the engine it is first used with.
BUILTINS: dict[str, tuple[str, str, Callable[..., Any]]] = {
    "config_get": (ENV, "I:I", config_get),
    "var_get": (ENV, "I:I", var_get),
    "var_set": (ENV, "II:", var_set),
    "http_request": (ENV, "II:I", http_request),
    "http_status_code": (ENV, ":i", http_status_code),
    "http_headers": (ENV, ":I", http_headers),
    "get_log_level": (ENV, ":i", get_log_level),
    **{f"log_{lvl}": (ENV, "I:", _logger(lvl)) for lvl in LEVELS},
}


def define_builtins(linker: wasmtime.Linker) -> None:
    """Every built-in, under its namespace and (env ones) under the legacy alias too."""
    for name, (namespace, signature, impl) in BUILTINS.items():
        ty = _ty(signature)
        linker.define_func(namespace, name, ty, guarded(impl), access_caller=True)
        if namespace == ENV:
            linker.define_func(
                LEGACY, f"extism_{name}", _ty(signature), guarded(impl), access_caller=True
            )
