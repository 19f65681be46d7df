"""The gateway route table: which function answers a request, by host, path and method.

The rules, in the order they are applied:

1. Host routes first. The request's host is the Host header in canonical form
   (hostnames.py: lower-case, no port, no trailing dot, no IPv6 brackets, IPv4 as a dotted
   quad). Routes for exactly that host are tried first, then wildcard routes from the most
   to the least specific (`*.b.example.com`, then `*.example.com`); a wildcard matches any
   sub-domain but not the bare domain. A host's routes see every path on that host: whoever
   routes a host owns it, except on the hosts the API answers on (`api_hosts` and the
   address the server binds), where wasmlet's own paths (RESERVED: `/api`, `/fn`,
   `/function`, `/healthz`, ...) skip the host routes. When none of them matches the path,
   the next tier is tried.
2. Then host-less routes, but never for wasmlet's own paths on any host, so a catch-all
   `/` route cannot take the platform away.
3. Then the management app, which answers 404 for anything it does not know.

Creating a route refuses all of this already (api/routes.py); the table applies it again,
so a route row that got past those checks (an older version, a hand-edited database, a
host assignment taken away) still cannot capture the platform: the table also leaves out
every route its namespace may not have for its host (registry/hosts.py).

Within a tier the longest matching path prefix wins. A prefix matches at segment
boundaries: `/search` matches `/search`, `/search/x` (the query string plays no part) but
not `/searching`; `/` matches every path. Only routes that allow the request's method are
candidates (HEAD is a method of its own: a GET-only route does not take HEAD), and at one
prefix a route listing the method beats a route for any method. If some prefix of the tier
matched the path but no route there allows the method, the answer is 405 with an `Allow`
header listing the methods that would have worked; it does not fall through to the next
tier, as the path plainly belongs to this one.

The table is immutable and rebuilt from the registry whenever the registry's change
generation moves (registry/changes.py), so every worker process sees a route change on its
very next request. With no routes at all, routing costs a request one generation read and
two attribute tests; the Host header is only looked at when some route names a host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

from wasmlet.errors import InvalidRequest
from wasmlet.hostnames import HostSet, canonical
from wasmlet.names import namespace_of
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.hosts import HostOwners
from wasmlet.registry.routes import RouteView

log = logging.getLogger(__name__)

# Every path the platform serves (with everything below it): no route claims or matches
# them for any host, nor on a host the API answers on. tests/api/test_router.py checks the
# app serves nothing outside this list.
RESERVED = ("/api", "/fn", "/function", "/healthz", "/metrics", "/docs", "/redoc", "/openapi.json")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def within(path: str, prefix: str) -> bool:
    """True when `prefix` matches `path` at a segment boundary."""
    if prefix == "/":
        return True
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


def is_reserved(path: str) -> bool:
    return any(within(path, prefix) for prefix in RESERVED)


def request_host(raw: str) -> str:
    """A Host header value as routes name hosts (hostnames.canonical)."""
    return canonical(raw)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a route table is built from, read in one transaction."""

    routes: list[RouteView]
    owners: HostOwners


@dataclass(frozen=True, slots=True)
class Match:
    route: RouteView
    path: str  # the path handed to the function (without the prefix when strip_prefix)


@dataclass(slots=True)
class _Bucket:
    """The routes of one tier at one path prefix."""

    by_method: dict[str, RouteView] = field(default_factory=dict)
    any_method: RouteView | None = None


class _Tier:
    """The routes of one host (or of no host), indexed by path prefix."""

    def __init__(self) -> None:
        self.buckets: dict[str, _Bucket] = {}
        self.longest = 0

    def add(self, route: RouteView) -> None:
        bucket = self.buckets.setdefault(route.path, _Bucket())
        self.longest = max(self.longest, len(route.path))
        # The registry refuses overlapping routes; should two nodes race one past it anyway,
        # the older route (lower id, added first) keeps the requests.
        if not route.methods and bucket.any_method is None:
            bucket.any_method = route
        for method in route.methods:
            bucket.by_method.setdefault(method, route)

    def _prefixes(self, path: str) -> Iterator[str]:
        """The prefixes of `path` at segment boundaries that some route could have, longest
        first. Bounded by the longest route prefix, not by the (client-chosen) path."""
        if path != "/" and len(path) <= self.longest:
            yield path
        cut = path.rfind("/", 0, min(len(path), self.longest + 1))
        while cut > 0:
            yield path[:cut]
            cut = path.rfind("/", 0, cut)
        yield "/"

    def find(self, path: str, method: str) -> Match | None:
        """The route for this request, None if no prefix matches, 405 if no method does."""
        allowed: set[str] = set()
        for prefix in self._prefixes(path):
            bucket = self.buckets.get(prefix)
            if bucket is None:
                continue
            route = bucket.by_method.get(method)
            if route is None:
                route = bucket.any_method
            if route is not None:
                return Match(route, _guest_path(route, path))
            allowed.update(bucket.by_method)
        if allowed:
            allow = ", ".join(m for m in METHODS if m in allowed)
            raise InvalidRequest(
                f"method {method} is not allowed here; the routes for this path accept {allow}",
                status=405,
                headers={"Allow": allow},
            )
        return None


def _guest_path(route: RouteView, path: str) -> str:
    if not route.strip_prefix or route.path == "/":
        return path
    return path[len(route.path) :] or "/"


class RouteTable:
    """An immutable snapshot of the routes, built once per registry change."""

    def __init__(
        self,
        routes: Iterable[RouteView] = (),
        *,
        owners: HostOwners | None = None,
        platform: HostSet | None = None,
    ) -> None:
        self.exact: dict[str, _Tier] = {}
        self.wildcard: dict[str, _Tier] = {}  # by the domain after "*."
        self.default = _Tier()
        self.platform = platform or HostSet()
        self.size = 0
        owners = owners or HostOwners()
        for route in sorted(routes, key=lambda r: r.id):
            if not owners.may_route(namespace_of(route.function), route.host):
                log.warning(
                    "route %d (host %r) is not its namespace's to have: left out",
                    route.id,
                    route.host or "(any)",
                )
                continue
            self.size += 1
            if not route.host:
                tier = self.default
            elif route.host.startswith("*."):
                tier = self.wildcard.setdefault(route.host[2:], _Tier())
            else:
                tier = self.exact.setdefault(route.host, _Tier())
            tier.add(route)
        self.has_hosts = bool(self.exact or self.wildcard)
        self.has_default = bool(self.default.buckets)

    def match(self, host: str, path: str, method: str) -> Match | None:
        """Host routes, then host-less routes. None: let the app answer."""
        return self.match_host(host, path, method) or self.match_default(path, method)

    def match_host(self, host: str, path: str, method: str) -> Match | None:
        if host in self.platform and is_reserved(path):
            return None  # the API's own paths on its own hosts
        tier = self.exact.get(host)
        if tier is not None:
            found = tier.find(path, method)
            if found is not None:
                return found
        if self.wildcard:
            dot = host.find(".")
            while dot != -1:
                tier = self.wildcard.get(host[dot + 1 :])
                if tier is not None:
                    found = tier.find(path, method)
                    if found is not None:
                        return found
                dot = host.find(".", dot + 1)
        return None

    def match_default(self, path: str, method: str) -> Match | None:
        if not self.has_default or is_reserved(path):
            return None
        return self.default.find(path, method)


class Router:
    """This process's route table, reloaded when the registry's generation moves.

    Like `Invoker.sync`: the first request to see a change starts the reload, and every
    request arriving while it runs waits for the same reload, so none is routed by a table
    older than the change it follows. A failed reload is logged, the previous table keeps
    serving, and the next request tries again.
    """

    def __init__(
        self,
        load: Callable[[], list[RouteView] | Snapshot],
        changes: ChangeSignal,
        executor: Executor | None = None,
        *,
        platform: HostSet | None = None,
    ) -> None:
        self.platform = platform or HostSet()
        self.table = RouteTable(platform=self.platform)
        self._load = load
        self._changes = changes
        self._executor = executor
        self._reloading: asyncio.Future[None] | None = None
        self._retry = False
        # Reloads run one after another, so an older read can never replace a newer table.
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Load the table now (at startup); errors propagate."""
        self._changes.changed()  # what we load below is at least this generation
        await self._reload()

    def pending(self) -> asyncio.Future[None] | None:
        """The reload this request must wait for, or None when the table is current.

        A plain function so that the common case costs no coroutine: one memory read.
        """
        if self._changes.changed() or self._retry:
            self._retry = False
            self._reloading = asyncio.ensure_future(self._reload_logged())
        reloading = self._reloading
        if reloading is not None and reloading.done():
            self._reloading = reloading = None
        return reloading

    async def sync(self) -> None:
        reloading = self.pending()
        if reloading is not None:
            await asyncio.shield(reloading)

    async def _reload(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            loaded = await loop.run_in_executor(self._executor, self._load)
            if isinstance(loaded, Snapshot):
                table = RouteTable(loaded.routes, owners=loaded.owners, platform=self.platform)
            else:
                table = RouteTable(loaded, platform=self.platform)
            self.table = table

    async def _reload_logged(self) -> None:
        try:
            await self._reload()
        except Exception:
            log.exception("reloading the route table failed; keeping the previous one")
            self._retry = True
