"""Which namespace (tenant) a store scope belongs to, for quotas counted per namespace.

Scopes are made by the kv capability (host/kv_capability.py) and the management API:
`global` (the operator's global keys), `global:<namespace>` (a tenant's), and
`fn:<qualified function name>` (a function's own; the name carries its namespace).
"""

from __future__ import annotations

from wasmlet.names import DEFAULT_NAMESPACE, SEPARATOR, namespace_of

_GLOBAL = "global"
_FN = "fn:"


def scope_namespace(scope: str) -> str:
    """The namespace owning `scope`; scopes of no known shape count as the operator's."""
    if scope.startswith(_GLOBAL + ":"):
        return scope[len(_GLOBAL) + 1 :]
    if scope.startswith(_FN):
        return namespace_of(scope[len(_FN) :])
    return DEFAULT_NAMESPACE


def tenant_fn_prefix(namespace: str) -> str | None:
    """The common prefix of a tenant's function scopes; None for the operator's, whose
    function scopes (`fn:<bare name>`) share none that the tenants' lack."""
    if namespace == DEFAULT_NAMESPACE:
        return None
    return f"{_FN}{namespace}{SEPARATOR}"


def global_scope_of(namespace: str) -> str:
    return _GLOBAL if namespace == DEFAULT_NAMESPACE else f"{_GLOBAL}:{namespace}"
