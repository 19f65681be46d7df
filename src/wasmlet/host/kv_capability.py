"""The key-value capability as guests see it: grants, scopes and size caps.

A guest names a store with flags: bit 0 (`GLOBAL`) picks the global namespace instead of
the function's own, bit 1 (`MEMORY`) the in-memory store instead of the persistent one.
The function's own namespace needs the `kv` grant, the global one `kv:global`. The scope
is chosen here from the calling function's name, never from guest input, so a function
can neither read nor list another function's keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from wasmlet.host.context import HostContext, HostError
from wasmlet.host.kv.base import KvError, KvStore
from wasmlet.host.kv.scopes import global_scope_of
from wasmlet.names import namespace_of

GLOBAL = 1
MEMORY = 2
_KNOWN = GLOBAL | MEMORY
_MAX_KEYS = 1000


def function_scope(name: str) -> str:
    return f"fn:{name}"


def global_scope(namespace: str) -> str:
    """The global namespace of a tenant: shared by its functions, never by another's."""
    return global_scope_of(namespace)


def globals_of(function: str) -> str:
    return global_scope(namespace_of(function))


def store_for(ctx: HostContext, *, memory: bool, global_scope: bool) -> tuple[KvStore, str]:
    """The store and scope a call may use, or HostError when not granted."""
    if global_scope:
        ctx.require("kv:global")
    else:
        ctx.require("kv")
    services = ctx.service()
    store = services.kv_memory if memory else services.kv_persistent
    if global_scope:
        return store, globals_of(ctx.function)
    return store, function_scope(ctx.function)


def check_key(ctx: HostContext, key: str) -> None:
    limit = ctx.service().settings.kv_max_key_bytes
    if not key:
        raise HostError("kv: empty key")
    if len(key.encode()) > limit:
        raise HostError(f"kv: key longer than {limit} bytes")


def check_value(ctx: HostContext, value: bytes) -> None:
    limit = ctx.service().settings.kv_max_value_bytes
    if len(value) > limit:
        raise HostError(f"kv: value larger than {limit} bytes")


def _open(ctx: HostContext, flags: int) -> tuple[KvStore, str]:
    if flags & ~_KNOWN:
        raise HostError(f"kv: unknown flags {flags}")
    return store_for(ctx, memory=bool(flags & MEMORY), global_scope=bool(flags & GLOBAL))


def _key(ctx: HostContext, raw: bytes) -> str:
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HostError("kv: keys are UTF-8 text") from None
    check_key(ctx, key)
    return key


_R = TypeVar("_R")


def _guarded(action: Callable[..., _R]) -> Callable[..., _R]:
    """Store failures (a bad value, Redis down) fail the call, never the server."""

    def run(*args: Any) -> _R:
        try:
            return action(*args)
        except KvError as exc:
            raise HostError(f"kv: {exc}") from None
        except HostError:
            raise
        except Exception as exc:
            raise HostError(f"kv: store unavailable ({exc.__class__.__name__})") from None

    run.__name__ = action.__name__
    run.__doc__ = action.__doc__
    return run


# -- operations offered to guests (host/catalog.py) ---------------------------------------


@_guarded
def kv_get(ctx: HostContext, flags: int, key: bytes) -> bytes | None:
    """The value of a key, or nothing when absent."""
    store, scope = _open(ctx, flags)
    return store.get(scope, _key(ctx, key))


@_guarded
def kv_set(ctx: HostContext, flags: int, key: bytes, value: bytes, ttl_ms: int) -> int:
    """Store a value; ttl_ms > 0 makes it expire. Returns 0."""
    store, scope = _open(ctx, flags)
    name = _key(ctx, key)
    check_value(ctx, value)
    store.set(scope, name, value, ttl_ms if ttl_ms > 0 else None)
    return 0


@_guarded
def kv_delete(ctx: HostContext, flags: int, key: bytes) -> int:
    """1 when the key existed, else 0."""
    store, scope = _open(ctx, flags)
    return int(store.delete(scope, _key(ctx, key)))


@_guarded
def kv_keys(ctx: HostContext, flags: int, pattern: bytes) -> bytes:
    """A JSON array of the keys matching a glob (empty pattern: all), at most 1000."""
    store, scope = _open(ctx, flags)
    glob = pattern.decode("utf-8", "replace") or "*"
    return json.dumps(store.keys(scope, glob, _MAX_KEYS)).encode()


@_guarded
def kv_incr(ctx: HostContext, flags: int, key: bytes, delta: int) -> int:
    """Add delta to an integer value (absent counts as 0) and return the result."""
    store, scope = _open(ctx, flags)
    return store.incr(scope, _key(ctx, key), delta)
