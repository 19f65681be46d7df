"""Otoroshi's host functions (`proxy_*`, import module `env`), on wasmlet's capabilities.

Calling convention (EXTISM-ABI.md §6): an input is `(ptr i64, size i64)`, `size` bytes at
`ptr` in the plugin's *kernel* memory (normally a block the plugin allocated); the host
reads them and does not free anything. A result is either a new kernel block the plugin
owns (0 for nothing) or a raw integer. `unused` parameters are ignored.

What each group needs:
- always linked: proxy_log, proxy_log_event, the attrs functions, and the gateway-state
  functions (there is no gateway here: state reads answer empty JSON, proxy_config the
  function's config);
- `http`: proxy_http_call, with Otoroshi's allow rule (an empty allowed_hosts or `*`
  reaches any host; a denied URL answers a 403 description instead of trapping);
- `kv`: the plugin map (in-memory store) and plugin datastore (persistent store), in the
  function's own scope; `kv:global`: the global map and datastore, in the global scope.
An import whose grant is missing is not linked, so the deploy names it and fails.

Keys listed by `*_datastore_keys` are the function's keys as it stored them: wasmlet keeps
scopes outside the key, where Otoroshi shows its `<root>:wasm:<plugin>:` prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import wasmtime

from wasmlet.abi.extism.context import PluginContext
from wasmlet.abi.extism.host_env import context_of
from wasmlet.abi.otoroshi.contract import (
    ContractError,
    b64decode,
    b64encode,
    body_of,
    compact,
)
from wasmlet.host.context import HostError
from wasmlet.host.egress import EgressDenied
from wasmlet.host.http import fetch, otoroshi_allowed
from wasmlet.host.kv.base import KvError, KvStore
from wasmlet.host.kv_capability import check_key, check_value, store_for
from wasmlet.runtime.capture import BoundedBuffer
from wasmlet.spec import FunctionSpec

# Otoroshi registers its functions under `env`, and under `env/Otoroshi` for JavaScript
# plugins (the JS PDK imports interface `Otoroshi` of module `env` from there).
NAMESPACES = ("env", "env/Otoroshi")
# Listing operations (map dumps, keys, all_matching) stop after this many keys.
MAX_KEYS = 1000

Signature = tuple[tuple[str, ...], tuple[str, ...]]
_TEXT_IN: Signature = (("i64", "i64"), ("i64",))
_UNUSED_IN: Signature = (("i64",), ("i64",))
_LOG: Signature = (("i32", "i64", "i64"), ("i32",))


@dataclass(eq=False)
class OtoroshiContext(PluginContext):
    """A plugin's per-store state, plus the request attributes of the current call."""

    attrs: dict[str, Any] = field(default_factory=dict)

    def begin(self, inv: Any, timeout_ms: int, logs: BoundedBuffer, inline_s: float = 0.0) -> None:
        super().begin(inv, timeout_ms, logs, inline_s)
        self.attrs = {}


# -- reading arguments ------------------------------------------------------------------------


def _context(caller: wasmtime.Caller) -> OtoroshiContext:
    ctx = context_of(caller)
    if not isinstance(ctx, OtoroshiContext):
        raise HostError("no otoroshi plugin context for this store")
    return ctx


def _read(
    caller: wasmtime.Caller,
    ctx: OtoroshiContext,
    name: str,
    ptr: int,
    size: int,
    limit: int | None = None,
) -> bytes:
    """`size` bytes at `ptr` in kernel memory (only the first `limit` of them copied).
    Any address the plugin could load itself is fine (a block, or part of one); nothing
    past the kernel memory is."""
    if size == 0:
        return b""
    kernel = ctx.kernel
    assert kernel is not None
    if ptr <= 0 or size < 0 or ptr + size > kernel.memory.data_len(caller):
        raise HostError(f"{name}: {size} bytes at {ptr} lie outside the plugin's kernel memory")
    end = ptr + size if limit is None else ptr + min(size, limit)
    return bytes(kernel.memory.read(caller, ptr, end))


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HostError(f"{name}: the input is not UTF-8 text") from None


def _object(data: bytes, name: str, shape: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise HostError(f"{name}: expected a JSON object {shape}")
    return value


def _string(obj: dict[str, Any], key: str, name: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise HostError(f"{name}: {key!r} must be a string")
    return value


def _integer(value: Any, what: str) -> int:
    """An integer given as a JSON number or a numeric string (Otoroshi accepts both)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise HostError(f"{what} must be an integer, got {value!r}")


def _key(ctx: OtoroshiContext, key: str) -> str:
    check_key(ctx, key)
    return key


# -- logs, events, attributes, gateway state --------------------------------------------------


def proxy_log(caller: wasmtime.Caller, level: int, ptr: int, size: int) -> int:
    """Levels 0 trace, 1 debug, 2 info, 3 warn, 4 and above error."""
    ctx = _context(caller)
    logs = ctx.logs
    if level >= ctx.log_level and logs is not None:  # below it the message is not even read
        # Only what the log still has room for is copied out of the plugin's memory.
        data = _read(caller, ctx, "proxy_log", ptr, size, logs.room())
        ctx.log(level, data.decode("utf-8", "replace"))
        logs.dropped += size - len(data)
    return 0


def log_event(ctx: OtoroshiContext, data: bytes) -> int:
    """An analytics event: kept in the invocation's log, one JSON line."""
    event = _object(data, "proxy_log_event", "{function, message, level, route_id?}")
    if ctx.logs is not None:
        ctx.logs.write(b"[event] " + compact(event) + b"\n")
    return 0


def get_attrs(ctx: OtoroshiContext) -> bytes:
    return compact(ctx.attrs)


def clear_attrs(ctx: OtoroshiContext) -> int:
    ctx.attrs = {}
    return 0


def get_attr(ctx: OtoroshiContext, data: bytes) -> bytes | None:
    key = _text(data, "proxy_get_attr")
    return compact(ctx.attrs[key]) if key in ctx.attrs else None


def set_attr(ctx: OtoroshiContext, data: bytes) -> int:
    obj = _object(data, "proxy_set_attr", "{key, value}")
    ctx.attrs[_string(obj, "key", "proxy_set_attr")] = obj.get("value")
    return 1


def del_attr(ctx: OtoroshiContext, data: bytes) -> int:
    return int(ctx.attrs.pop(_text(data, "proxy_del_attr"), _MISSING) is not _MISSING)


_MISSING = object()


def empty_state(ctx: OtoroshiContext) -> bytes:
    """Gateway state (routes, apikeys, cluster members): wasmlet has none to show."""
    return b"{}"


def state_value(ctx: OtoroshiContext, data: bytes) -> bytes:
    """One entity of the gateway state: {entity, id?} answers null with an id (no such
    entity), else an empty list of them."""
    obj = _object(data, "proxy_state_value", "{entity, id?}")
    return b"null" if obj.get("id") is not None else b"[]"


def cluster_state_value(ctx: OtoroshiContext, data: bytes) -> bytes:
    return b"null"


def config(ctx: OtoroshiContext) -> bytes:
    return compact(ctx.config)


def global_config(ctx: OtoroshiContext) -> bytes:
    return b"{}"


# -- outbound HTTP ----------------------------------------------------------------------------


def http_call(ctx: OtoroshiContext, data: bytes) -> bytes:
    """JSON {url, method, headers, query, request_timeout, follow_redirects, body...} ->
    JSON {status, headers, body_base64}. A host the function may not reach answers 403."""
    req = _object(data, "proxy_http_call", "{url, method?, headers?, query?, body...}")
    url = _string(req, "url", "proxy_http_call")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HostError(f"proxy_http_call: {url!r} is not an http(s) URL")
    method = req.get("method") or "GET"
    headers = req.get("headers") or {}
    query = req.get("query") or {}
    if not isinstance(method, str) or not isinstance(headers, dict) or not isinstance(query, dict):
        raise HostError("proxy_http_call: method is a string, headers and query are objects")
    if query:
        url += ("&" if parts.query else "?") + urlencode({k: str(v) for k, v in query.items()})
    timeout = req.get("request_timeout")
    timeout_ms = None if timeout is None else _integer(timeout, "request_timeout")
    if timeout_ms is not None and timeout_ms <= 0:
        raise HostError("proxy_http_call: request_timeout must be positive")
    try:
        body = body_of(req)
    except ContractError as exc:
        raise HostError(f"proxy_http_call: {exc}") from None
    patterns = ctx.spec.allowed_hosts
    if not otoroshi_allowed(url, patterns):
        message = f"HTTP request to {url} is not allowed for this function"
        return compact(
            {
                "status": 403,
                "headers": {"content-type": "text/plain"},
                "body_base64": b64encode(message.encode()),
            }
        )
    try:
        response = fetch(
            ctx,
            method,
            url,
            {str(k): str(v) for k, v in headers.items()},
            body,
            allow=lambda u: otoroshi_allowed(u, patterns),
            timeout_ms=timeout_ms,
            follow_redirects=bool(req.get("follow_redirects", False)),
        )
    except EgressDenied as exc:  # answered like a host outside allowed_hosts (recorded)
        return compact(
            {
                "status": 403,
                "headers": {"content-type": "text/plain"},
                "body_base64": b64encode(str(exc).encode()),
            }
        )
    return compact(
        {
            "status": response.status,
            "headers": response.first_headers,
            "body_base64": b64encode(response.body),
        }
    )


# -- maps (in-memory store) and datastores (persistent store) ---------------------------------


def _kv(action: Callable[..., Any]) -> Callable[..., Any]:
    """Store failures (a value that is not a counter, Redis down) fail the call with a
    message, never the server."""

    def run(*args: Any) -> Any:
        try:
            return action(*args)
        except HostError:
            raise
        except KvError as exc:
            raise HostError(f"kv: {exc}") from None
        except Exception as exc:
            raise HostError(f"kv: store unavailable ({exc.__class__.__name__})") from None

    return run


@dataclass(frozen=True)
class _Scope:
    """One of the four stores a plugin may reach: plugin/global x map/datastore."""

    prefix: str  # name prefix of the functions, e.g. "proxy_plugin_map"
    memory: bool
    global_scope: bool

    def open(self, ctx: OtoroshiContext) -> tuple[KvStore, str]:
        return store_for(ctx, memory=self.memory, global_scope=self.global_scope)

    # maps

    def map_set(self, ctx: OtoroshiContext, data: bytes) -> int:
        name = f"{self.prefix}_set"
        obj = _object(data, name, "{key, value}")
        key = _key(ctx, _string(obj, "key", name))
        value = _string(obj, "value", name).encode("utf-8")
        check_value(ctx, value)
        store, scope = self.open(ctx)
        store.set(scope, key, value)
        return 0

    def get(self, ctx: OtoroshiContext, data: bytes) -> bytes | None:
        key = _key(ctx, _text(data, f"{self.prefix}_get"))
        store, scope = self.open(ctx)
        return store.get(scope, key)

    def map_del(self, ctx: OtoroshiContext, data: bytes) -> bytes:
        key = _key(ctx, _text(data, f"{self.prefix}_del"))
        store, scope = self.open(ctx)
        store.delete(scope, key)
        return b"StatusOK"

    def map_all(self, ctx: OtoroshiContext) -> bytes | None:
        """{key: base64(value)}; nothing (0) for an empty map, as for one never created."""
        store, scope = self.open(ctx)
        entries = self._values(store, scope, "*")
        return compact(dict(entries)) if entries else None

    def _values(self, store: KvStore, scope: str, pattern: str) -> list[tuple[str, str]]:
        out = []
        for key in store.keys(scope, pattern, MAX_KEYS):
            value = store.get(scope, key)
            if value is not None:  # expired between listing and reading
                out.append((key, b64encode(value)))
        return out

    # datastores

    def ds_set(self, ctx: OtoroshiContext, data: bytes, only_if_absent: bool = False) -> int:
        name = f"{self.prefix}_{'setnx' if only_if_absent else 'set'}"
        obj = _object(data, name, "{key, value | value_base64, ttl?}")
        key = _key(ctx, _string(obj, "key", name))
        if isinstance(obj.get("value"), str):
            value = obj["value"].encode("utf-8")
        elif isinstance(obj.get("value_base64"), str):
            try:
                value = b64decode(obj["value_base64"])
            except ContractError as exc:
                raise HostError(f"{name}: value_base64 is {exc}") from None
        else:
            raise HostError(f"{name}: give value (text) or value_base64")
        ttl = None if obj.get("ttl") is None else _integer(obj["ttl"], f"{name}: ttl")
        check_value(ctx, value)
        store, scope = self.open(ctx)
        return int(store.set(scope, key, value, ttl, only_if_absent=only_if_absent))

    def ds_setnx(self, ctx: OtoroshiContext, data: bytes) -> int:
        return self.ds_set(ctx, data, only_if_absent=True)

    def ds_exists(self, ctx: OtoroshiContext, data: bytes) -> int:
        return int(self.get(ctx, data) is not None)

    def ds_del(self, ctx: OtoroshiContext, data: bytes) -> int:
        name = f"{self.prefix}_del"
        keys = _object(data, name, "{keys: [...]}").get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise HostError(f"{name}: 'keys' must be a list of strings")
        store, scope = self.open(ctx)
        return sum(store.delete(scope, _key(ctx, k)) for k in keys)

    def ds_incrby(self, ctx: OtoroshiContext, data: bytes) -> int:
        name = f"{self.prefix}_incrby"
        obj = _object(data, name, "{key, incr}")
        key = _key(ctx, _string(obj, "key", name))
        delta = _integer(obj.get("incr"), f"{name}: incr")
        store, scope = self.open(ctx)
        return store.incr(scope, key, delta)

    def ds_pttl(self, ctx: OtoroshiContext, data: bytes) -> int:
        key = _key(ctx, _text(data, f"{self.prefix}_pttl"))
        store, scope = self.open(ctx)
        return store.pttl(scope, key)

    def ds_pexpire(self, ctx: OtoroshiContext, data: bytes) -> int:
        name = f"{self.prefix}_pexpire"
        obj = _object(data, name, "{key, pttl}")
        key = _key(ctx, _string(obj, "key", name))
        ttl = _integer(obj.get("pttl"), f"{name}: pttl")
        store, scope = self.open(ctx)
        return int(store.expire(scope, key, ttl))

    def ds_keys(self, ctx: OtoroshiContext, data: bytes) -> bytes:
        pattern = _text(data, f"{self.prefix}_keys") or "*"
        store, scope = self.open(ctx)
        return compact(store.keys(scope, pattern, MAX_KEYS))

    def ds_all_matching(self, ctx: OtoroshiContext, data: bytes) -> bytes:
        pattern = _text(data, f"{self.prefix}_all_matching") or "*"
        store, scope = self.open(ctx)
        return compact([value for _, value in self._values(store, scope, pattern)])


_PLUGIN_MAP = _Scope("proxy_plugin_map", memory=True, global_scope=False)
_GLOBAL_MAP = _Scope("proxy_global_map", memory=True, global_scope=True)
_PLUGIN_DS = _Scope("proxy_plugin_datastore", memory=False, global_scope=False)
_GLOBAL_DS = _Scope("proxy_datastore", memory=False, global_scope=True)


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyFn:
    name: str
    signature: Signature
    impl: Callable[..., Any]  # impl(caller, *wasm args)
    grant: str | None = None  # capability the function needs to be linked


def _handle(ctx: OtoroshiContext, result: bytes | None) -> int:
    assert ctx.kernel is not None
    return ctx.kernel.write(result) if result else 0


def _with_input(name: str, op: Callable[[OtoroshiContext, bytes], Any]) -> Callable[..., Any]:
    """(ptr, size) -> op(ctx, bytes); a bytes result becomes a new block, an int stays raw."""

    def impl(caller: wasmtime.Caller, ptr: int, size: int) -> int:
        ctx = _context(caller)
        result = op(ctx, _read(caller, ctx, name, ptr, size))
        return result if isinstance(result, int) else _handle(ctx, result)

    return impl


def _without_input(op: Callable[[OtoroshiContext], Any]) -> Callable[..., Any]:
    def impl(caller: wasmtime.Caller, unused: int) -> int:
        ctx = _context(caller)
        result = op(ctx)
        return result if isinstance(result, int) else _handle(ctx, result)

    return impl


def _table() -> list[ProxyFn]:
    fns = [
        ProxyFn("proxy_log", _LOG, proxy_log),
        ProxyFn("proxy_log_event", _TEXT_IN, _with_input("proxy_log_event", log_event)),
        ProxyFn("proxy_get_attrs", _UNUSED_IN, _without_input(get_attrs)),
        ProxyFn("proxy_clear_attrs", _UNUSED_IN, _without_input(clear_attrs)),
        ProxyFn("proxy_get_attr", _TEXT_IN, _with_input("proxy_get_attr", get_attr)),
        ProxyFn("proxy_set_attr", _TEXT_IN, _with_input("proxy_set_attr", set_attr)),
        ProxyFn("proxy_del_attr", _TEXT_IN, _with_input("proxy_del_attr", del_attr)),
        ProxyFn("proxy_state", _UNUSED_IN, _without_input(empty_state)),
        ProxyFn("proxy_cluster_state", _UNUSED_IN, _without_input(empty_state)),
        ProxyFn("proxy_config", _UNUSED_IN, _without_input(config)),
        ProxyFn("proxy_global_config", _UNUSED_IN, _without_input(global_config)),
        ProxyFn("proxy_state_value", _TEXT_IN, _with_input("proxy_state_value", state_value)),
        ProxyFn(
            "proxy_cluster_state_value",
            _TEXT_IN,
            _with_input("proxy_cluster_state_value", cluster_state_value),
        ),
        ProxyFn(
            "proxy_http_call", _TEXT_IN, _with_input("proxy_http_call", http_call), grant="http"
        ),
    ]
    for scope, grant in ((_PLUGIN_MAP, "kv"), (_GLOBAL_MAP, "kv:global")):
        p = scope.prefix
        fns += [
            ProxyFn(f"{p}_set", _TEXT_IN, _with_input(f"{p}_set", _kv(scope.map_set)), grant),
            ProxyFn(f"{p}_get", _TEXT_IN, _with_input(f"{p}_get", _kv(scope.get)), grant),
            ProxyFn(f"{p}_del", _TEXT_IN, _with_input(f"{p}_del", _kv(scope.map_del)), grant),
            ProxyFn(p, _UNUSED_IN, _without_input(_kv(scope.map_all)), grant),
        ]
    operations: list[tuple[str, Callable[..., Any]]]
    for scope, grant in ((_PLUGIN_DS, "kv"), (_GLOBAL_DS, "kv:global")):
        operations = [
            ("get", scope.get),
            ("set", scope.ds_set),
            ("setnx", scope.ds_setnx),
            ("exists", scope.ds_exists),
            ("del", scope.ds_del),
            ("incrby", scope.ds_incrby),
            ("pttl", scope.ds_pttl),
            ("pexpire", scope.ds_pexpire),
            ("keys", scope.ds_keys),
            ("all_matching", scope.ds_all_matching),
        ]
        for suffix, op in operations:
            name = f"{scope.prefix}_{suffix}"
            fns.append(ProxyFn(name, _TEXT_IN, _with_input(name, _kv(op)), grant))
    return fns


FUNCTIONS: dict[str, ProxyFn] = {fn.name: fn for fn in _table()}


def granted_functions(spec: FunctionSpec) -> dict[str, tuple[Signature, Callable[..., Any]]]:
    """Import name -> (signature, implementation) of every function this spec may link."""
    return {
        fn.name: (fn.signature, fn.impl)
        for fn in FUNCTIONS.values()
        if fn.grant is None or spec.grants(fn.grant)
    }
