"""Function-to-function calls: a guest granted `call:<name>` may invoke that function
with bytes in and bytes out.

`<name>` is a bare name, resolved in the caller's own namespace: tenant a's `call:helper`
reaches `a~helper` and nothing else. A qualified `ns~name` is refused like any invalid
name, so no grant or guest input reaches a function of another namespace.

The callee runs in an instance of its own with its own limits, but never past the
caller's deadline. Chains are bounded in depth, each invocation in how many calls it
makes, and a call to a function already in the chain (a cycle) fails at once rather than
waiting for the deadline.
"""

from __future__ import annotations

from wasmlet.host.context import HostContext, HostError
from wasmlet.names import is_valid_bare_name, namespace_of, qualify


def call(ctx: HostContext, name: bytes, payload: bytes) -> bytes:
    """Invoke function `name` with `payload` as its request body; its response body."""
    bare = name.decode("utf-8", "replace")
    if not is_valid_bare_name(bare):
        raise HostError(f"call: invalid function name {bare!r}")
    ctx.require(f"call:{bare}")
    services = ctx.service()
    callee = qualify(namespace_of(ctx.function), bare)
    chain = (*ctx.chain, ctx.function)
    if callee in chain:
        raise HostError(f"call cycle: {' -> '.join((*chain, callee))}")
    settings = services.settings
    if len(chain) >= settings.max_call_depth:
        raise HostError(f"call depth exceeds {settings.max_call_depth}")
    if ctx.calls_made >= settings.max_calls_per_invocation:
        raise HostError(f"more than {settings.max_calls_per_invocation} calls in one invocation")
    if services.call is None:
        raise HostError("function calls are not available in this process")
    ctx.calls_made += 1
    # The caller resolves the qualified name: it never leaves the caller's namespace.
    return services.call(ctx, callee, payload)
