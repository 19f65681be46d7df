"""Who may do what: API keys on every management request and on private invocations,
namespaces kept apart, quotas applied. Used by the raw hot path (api/hotpath.py), which
sees every request first; the management routes read the caller from the request state.

Rules:
- `/docs`, `/redoc`, `/openapi.json` need no key. `/healthz` needs none either but says
  only that the node is up unless the operator asks. `/metrics` names every tenant's
  functions: it needs the `metrics` scope of a `default`-namespace key (an operator admin
  key has it), or the separate listener of `metrics_port`.
- Keys: `Authorization: Bearer <token>` or `X-API-Key: <token>`; never the query string.
  Whatever carries a key is removed before a guest sees the request (`without_keys`).
- `/api/v1/keys`, `/api/v1/namespaces`: scope `admin`; other management requests
  (`/api/...`, the WasmEngine `/function/...` API): `read` for GET/HEAD, `deploy` otherwise.
- Invocations: a `public` function needs no key; a `private` one a key with scope `invoke`
  of the function's namespace. A caller that may not invoke it (no key, a key of another
  namespace) gets exactly the 404 a missing function gets: no existence oracle.
- Names a caller gives are qualified with the caller's namespace (names.py); a qualified
  name (`ns~name`) of another namespace is refused, except for the operator (an admin key
  of the `default` namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable
from typing import Any

from fastapi import Request

from wasmlet.auth import tokens
from wasmlet.auth.keys import KeyStore, Principal
from wasmlet.auth.quotas import UNLIMITED, Limiter, Quota
from wasmlet.errors import Forbidden, NotFound, Unauthorized
from wasmlet.names import (
    DEFAULT_NAMESPACE,
    SEPARATOR,
    check_name,
    is_valid_name,
    namespace_of,
    qualify,
    split,
)
from wasmlet.pending import Pending, settled

ADMIN_PREFIXES = ("/api/v1/keys", "/api/v1/namespaces")
_READ_METHODS = frozenset({"GET", "HEAD"})


# Header names the platform reads a key from (ASGI and the fast lane lower-case names).
_KEY_HEADERS = frozenset((b"authorization", b"x-api-key"))
# A wasmlet key anywhere in a value, however it is spelled around it (`bearer`, extra
# spaces or tabs, a list of credentials): `wl_<12 hex>_`, the shape tokens.parse accepts.
_KEY_TEXT = re.compile(rb"wl_[0-9a-f]{12}_", re.IGNORECASE)


def _token(scope: dict[str, Any]) -> str | None:
    """A wasmlet key the request carries. Other credentials (a bearer token meant for the
    function itself) are not ours: they pass through to the guest untouched."""
    headers: Iterable[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == b"authorization":
            kind, _, token = value.decode("latin-1").strip().partition(" ")
            if kind.lower() == "bearer" and is_key(token):
                return token.strip()
        elif key == b"x-api-key" and is_key(value.decode("latin-1")):
            return value.decode("latin-1").strip()
    return None


def is_key(text: str) -> bool:
    return text.lstrip().startswith(tokens.PREFIX + "_")


def without_keys(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Request headers minus every one that carries a wasmlet key, valid or not, whether
    or not it authenticated this request: a guest (public ones, routes' included) never
    sees a platform credential. A function's own Authorization values pass. The common
    case, no key at all, returns the list itself (this runs on every invocation)."""
    for name, value in headers:
        if name in _KEY_HEADERS and _KEY_TEXT.search(value):
            return [(k, v) for k, v in headers if not (k in _KEY_HEADERS and _KEY_TEXT.search(v))]
    return headers


def unknown_function(name: str) -> NotFound:
    """The one answer for a function a caller cannot invoke, whether it is missing or
    private to a namespace the caller has no invoke key of. A 401/403 for the private one
    would tell anyone which names exist in another tenant; 404 for both (rather than 401
    for both) keeps the plain answer for a mistyped public name, and the message says what
    a private function needs."""
    return NotFound(
        f"function {name!r} not found (a private function answers only to an API key "
        "of its namespace with the 'invoke' scope)"
    )


class Access:
    def __init__(self, keys: KeyStore, limiter: Limiter, executor: Any) -> None:
        self.keys = keys
        self.limiter = limiter
        self.executor = executor

    def principal(self, scope: dict[str, Any]) -> Principal | None:
        """The caller's key, None without one; Unauthorized for a key that is not live.
        Pending when the key has not been verified in this process yet."""
        raw = _token(scope)
        if raw is None:
            return None
        found = self.keys.cached(raw)
        if found is None:
            raise Pending(lambda: self._verify(raw))
        scope.setdefault("state", {})["principal"] = found
        return found

    async def _verify(self, raw: str) -> None:
        # argon2: tens of milliseconds, off the event loop. A live key is cached by it.
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self.executor, self.keys.authenticate, raw) is None:
            raise Unauthorized("invalid or revoked API key")

    def _fresh_quotas(self) -> None:
        if self.limiter.stale():
            raise Pending(self._reload_quotas)

    async def _reload_quotas(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.limiter.reload)

    # -- management --------------------------------------------------------------------------

    async def management(self, scope: dict[str, Any]) -> None:
        """Authenticate and authorise a request the management app will answer."""
        if scope["path"] == "/healthz":
            return await self.health(scope)
        await settled(lambda: self._management(scope))

    async def health(self, scope: dict[str, Any]) -> None:
        """/healthz: a key is optional (probes send none); a valid one is remembered for
        the details only the operator gets, an invalid one is ignored."""
        with contextlib.suppress(Unauthorized):
            await settled(lambda: self.principal(scope))

    def _management(self, scope: dict[str, Any]) -> None:
        path: str = scope["path"]
        if path == "/metrics":
            return self._metrics(scope)
        if not path.startswith(("/api/", "/function/")) or scope["method"] == "OPTIONS":
            return  # docs, health, CORS preflights, or nothing (a plain 404)
        principal = self.principal(scope)
        if principal is None:
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer <key>' "
                "(the first start wrote an admin key to <data_dir>/admin.key)"
            )
        if path.startswith(ADMIN_PREFIXES):
            need = "admin"
        else:
            need = "read" if scope["method"] in _READ_METHODS else "deploy"
        if not principal.allows(need):
            raise Forbidden(f"this key lacks the {need!r} scope")
        self._fresh_quotas()
        self.limiter.admit(principal.namespace, self.limiter.quota(principal.namespace))

    def _metrics(self, scope: dict[str, Any]) -> None:
        # Metric labels name every tenant's functions: the operator's keys only.
        principal = self.principal(scope)
        if principal is None:
            raise Unauthorized(
                "/metrics needs an API key with the 'metrics' scope of the 'default' "
                "namespace (or the metrics_port listener)"
            )
        if not principal.scrapes_metrics:
            raise Forbidden("this key lacks the 'metrics' scope of the 'default' namespace")

    # -- invocations ---------------------------------------------------------------------------

    def invocation_name(self, scope: dict[str, Any], raw: str) -> str:
        """The qualified function an invocation names: `ns~name` as given, else the name in
        the caller's namespace (the default namespace without a key)."""
        principal = self.principal(scope)
        if SEPARATOR in raw:
            return raw
        return qualify(principal.namespace if principal else DEFAULT_NAMESPACE, raw)

    def admit_invocation(self, scope: dict[str, Any], name: str, public: bool) -> tuple[str, Quota]:
        """Check the caller may invoke `name` and the namespace's rate; returns the
        namespace whose concurrency the call counts against, and its quota. Every check
        that may be Pending comes before the rate bucket is charged."""
        namespace = namespace_of(name)
        if not public:
            principal = scope.get("state", {}).get("principal")
            if principal is None:
                principal = self.principal(scope)
            if principal is None or (principal.namespace != namespace and not principal.operator):
                raise unknown_function(name)  # as if missing: no existence oracle
            if not principal.allows("invoke"):  # its own namespace's: it may know the name
                raise Forbidden("this key lacks the 'invoke' scope")
        self._fresh_quotas()
        quota = self.limiter.quota(namespace)
        if quota is not UNLIMITED:
            self.limiter.admit(namespace, quota)
        return namespace, quota


# -- for the management routes ------------------------------------------------------------------


def caller(request: Request) -> Principal:
    """The authenticated caller (the hot path has checked the key and scope already)."""
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    if principal is None:  # only if a route is reached without passing the hot path
        raise Unauthorized("an API key is required")
    return principal


def own_name(principal: Principal, name: str) -> str:
    """The qualified name for a name a caller gave, in the caller's namespace."""
    if SEPARATOR in name:
        if not is_valid_name(name):
            raise NotFound(f"function {name!r} not found")
        if namespace_of(name) != principal.namespace and not principal.operator:
            raise NotFound(f"function {name!r} not found")
        return name
    return qualify(principal.namespace, name)


def visible(principal: Principal, qualified: str) -> bool:
    """Whether a qualified function belongs to the caller's namespace."""
    return namespace_of(qualified) == principal.namespace


def function_name(request: Request, name: str) -> str:
    """A path's function name, qualified with the caller's namespace (a dependency)."""
    if not is_valid_name(name):
        check_name(name)
    return own_name(caller(request), name)


def shown(name: str) -> str:
    """How a qualified name is shown to its own namespace: bare."""
    return split(name)[1]
