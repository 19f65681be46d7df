"""Which namespace owns which hosts: the operator's assignments (table `namespace_hosts`).

The rules a route is held to (`HostOwners.may_route`), applied when a route is added
(api/routes.py) and again when the route table is built (api/router.py):
- a tenant's route names a host covered by a pattern assigned to the tenant: never "any
  host", never a wildcard wider than its own;
- the operator's (`default`) routes name any host no tenant's pattern reaches, or no host.

Assignments are written under the routes' lock (registry/routes.py), so a route and an
assignment cannot both pass their checks against a state the other is changing. Patterns
of different namespaces are never `related` (hostnames.py): no host, and no parent domain
of a host, belongs to two tenants. Taking a pattern away deletes the namespace's routes
for the hosts it no longer owns, in the same transaction: a route never outlives its
host's assignment (else it would come back to life, or block the next owner).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from wasmlet.errors import Conflict, InvalidRequest, NotFound
from wasmlet.hostnames import HostSet, covers, intersects, related
from wasmlet.names import DEFAULT_NAMESPACE, namespace_of
from wasmlet.registry.models import NamespaceHost, Route, utcnow
from wasmlet.registry.routes import list_routes, lock_routes
from wasmlet.registry.views import UtcDatetime


class HostView(BaseModel):
    namespace: str
    pattern: str
    created_at: UtcDatetime


class HostOwners:
    """A snapshot of the assignments, for deciding who may route a host."""

    def __init__(self, rows: Iterable[tuple[str, str]] = ()) -> None:
        by_namespace: dict[str, list[str]] = {}
        for namespace, pattern in rows:
            by_namespace.setdefault(namespace, []).append(pattern)
        self.by_namespace = {ns: tuple(ps) for ns, ps in by_namespace.items()}
        self.assigned = tuple(p for ps in self.by_namespace.values() for p in ps)

    def may_route(self, namespace: str, host: str) -> bool:
        """Whether a route of `namespace` may name `host` ("" = any host)."""
        if namespace == DEFAULT_NAMESPACE:
            return not any(intersects(p, host) for p in self.assigned) if host else True
        # No pattern covers "" (any host): a tenant's routes always name a host.
        return any(covers(p, host) for p in self.by_namespace.get(namespace, ()))


def _view(row: NamespaceHost) -> HostView:
    return HostView(namespace=row.namespace, pattern=row.pattern, created_at=row.created_at)


def owners(s: Session) -> HostOwners:
    rows = s.execute(select(NamespaceHost.namespace, NamespaceHost.pattern))
    return HostOwners((namespace, pattern) for namespace, pattern in rows)


class HostStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def owners(self) -> HostOwners:
        with self.sessions() as s:
            return owners(s)

    def list_hosts(self, namespace: str | None = None) -> list[HostView]:
        query = select(NamespaceHost).order_by(NamespaceHost.namespace, NamespaceHost.pattern)
        if namespace is not None:
            query = query.where(NamespaceHost.namespace == namespace)
        with self.sessions() as s:
            return [_view(row) for row in s.scalars(query)]

    def assign(self, namespace: str, patterns: list[str], platform: HostSet) -> list[HostView]:
        """Give `patterns` (normalised already) to a tenant; all or none. Idempotent."""
        if namespace == DEFAULT_NAMESPACE:
            raise InvalidRequest(
                "the operator's namespace needs no hosts: it routes every host no tenant has"
            )
        with self.sessions.begin() as s:
            lock_routes(s)
            rows = list(s.scalars(select(NamespaceHost)))
            routes = list_routes(s)
            mine = {r.pattern for r in rows if r.namespace == namespace}
            for pattern in patterns:
                if platform.touches(pattern):
                    raise InvalidRequest(
                        f"host {pattern} is one the API answers on (api_hosts): "
                        "it cannot belong to a tenant"
                    )
                for row in rows:
                    if row.namespace != namespace and related(pattern, row.pattern):
                        raise Conflict(
                            f"host {pattern} overlaps {row.pattern}, assigned to namespace "
                            f"{row.namespace} (a host or its parent domain has one owner)"
                        )
                taken = [
                    r.id
                    for r in routes
                    if r.host
                    and namespace_of(r.function) != namespace
                    and intersects(pattern, r.host)
                ]
                if taken:
                    raise Conflict(
                        f"host {pattern} is routed by another namespace's routes "
                        f"({', '.join(map(str, taken))}): delete them first"
                    )
            now = utcnow()
            for pattern in dict.fromkeys(patterns):
                if pattern not in mine:
                    s.add(NamespaceHost(namespace=namespace, pattern=pattern, created_at=now))
        return self.list_hosts(namespace)

    def unassign(self, namespace: str, patterns: list[str]) -> tuple[list[str], list[int]]:
        """Take `patterns` from a namespace, with its routes for hosts it no longer owns.
        Returns the patterns and the ids of the routes deleted."""
        with self.sessions.begin() as s:
            lock_routes(s)
            rows = {
                row.pattern: row
                for row in s.scalars(
                    select(NamespaceHost).where(NamespaceHost.namespace == namespace)
                )
            }
            missing = [p for p in patterns if p not in rows]
            if missing:
                raise NotFound(f"host {missing[0]} is not assigned to namespace {namespace}")
            for pattern in dict.fromkeys(patterns):
                s.delete(rows.pop(pattern))
            left = HostOwners((namespace, p) for p in rows)
            orphans = [
                r.id
                for r in list_routes(s)
                if namespace_of(r.function) == namespace and not left.may_route(namespace, r.host)
            ]
            if orphans:
                s.execute(delete(Route).where(Route.id.in_(orphans)))
        return list(dict.fromkeys(patterns)), orphans
