"""Every host operation a guest may import, written once over bytes and integers.

Parameter and result kinds: `i` i32, `I` i64, `b` bytes (how bytes travel depends on
the binding: a kernel handle for Extism plugins, pointer and length for core modules;
see host/binding.py). A `grant` names the capability that must be granted for the
operation to be linked at all; an ungranted import fails the deploy, naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wasmlet.host import calls, clock, kv_capability, logs, settings
from wasmlet.host.context import HostContext, HostError
from wasmlet.host.http import extism_allowed, fetch
from wasmlet.spec import FunctionSpec


@dataclass(frozen=True, slots=True)
class HostFn:
    name: str
    params: str
    result: str  # "" (nothing), "i", "I" or "b"
    impl: Callable[..., Any]  # impl(ctx, *params)
    grant: str | None = None  # "kv" (kv or kv:global), "http", "call" (any call:<name>)

    def granted(self, spec: FunctionSpec) -> bool:
        if self.grant is None:
            return True
        if self.grant == "kv":
            return spec.grants("kv") or spec.grants("kv:global")
        if self.grant == "call":
            return any(c.startswith("call:") for c in spec.capabilities)
        return spec.grants(self.grant)


def http_request(ctx: HostContext, request: bytes, body: bytes) -> bytes | None:
    """JSON {url, method?, headers?} and a body; the response body. Status and headers
    of the last response are read with http_status / http_headers."""
    try:
        req = json.loads(request)
        url, method = req["url"], (req.get("method") or "GET")
        headers = req.get("headers") or {}
        if not isinstance(url, str) or not isinstance(headers, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise HostError("http_request: expected JSON {url, method?, headers?}") from None
    ctx.http_status, ctx.http_headers = 0, None
    allowed = ctx.spec.allowed_hosts
    response = fetch(ctx, method, url, headers, body, allow=lambda u: extism_allowed(u, allowed))
    ctx.http_status, ctx.http_headers = response.status, response.headers
    return response.body


def http_status(ctx: HostContext) -> int:
    """Status of the last http_request (0 before any, or after a failure)."""
    return ctx.http_status


def http_headers(ctx: HostContext) -> bytes | None:
    """JSON {name: value} of the last http_request's response headers."""
    return json.dumps(ctx.http_headers).encode() if ctx.http_headers is not None else None


CATALOG: dict[str, HostFn] = {
    fn.name: fn
    for fn in (
        HostFn("log", "ib", "", logs.log),
        HostFn("log_level", "", "i", logs.log_level),
        HostFn("now_ms", "", "I", clock.now_ms),
        HostFn("random_bytes", "I", "b", clock.random_bytes),
        HostFn("config_get", "b", "b", settings.config_get),
        HostFn("secret_get", "b", "b", settings.secret_get),
        HostFn("kv_get", "ib", "b", kv_capability.kv_get, "kv"),
        HostFn("kv_set", "ibbI", "i", kv_capability.kv_set, "kv"),
        HostFn("kv_delete", "ib", "i", kv_capability.kv_delete, "kv"),
        HostFn("kv_keys", "ib", "b", kv_capability.kv_keys, "kv"),
        HostFn("kv_incr", "ibI", "I", kv_capability.kv_incr, "kv"),
        HostFn("http_request", "bb", "b", http_request, "http"),
        HostFn("http_status", "", "i", http_status, "http"),
        HostFn("http_headers", "", "b", http_headers, "http"),
        HostFn("call", "bb", "b", calls.call, "call"),
    )
}


def granted(spec: FunctionSpec) -> list[HostFn]:
    return [fn for fn in CATALOG.values() if fn.granted(spec)]
