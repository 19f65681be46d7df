"""SQL operations on gateway routes (host and/or path prefix and methods -> a function).

Values arrive validated and normalised by the API (api/routes.py); this module only stores
them. A new route is refused with `Conflict` when it would share a request with an existing
one: same host and path prefix and an overlapping method set (two "any method" routes
overlap; a route listing methods never overlaps one for any method, it is just more
specific). The unique constraint on (host, path_prefix, methods) catches exact duplicates;
the overlap check needs a read before the write, so it runs under a table-wide write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pydantic import BaseModel
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wasmlet.errors import Conflict, NotFound
from wasmlet.names import namespace_of
from wasmlet.registry.models import Route, utcnow
from wasmlet.registry.views import UtcDatetime

# Ids are 32-bit integers in every database; a larger one cannot name a route.
_MAX_ID = 2**31 - 1


class RouteView(BaseModel):
    id: int
    host: str  # "" = any host; "*.example.com" = any sub-domain of example.com
    path: str  # the path prefix, matched at segment boundaries
    methods: list[str]  # upper-case, sorted; empty = any method
    function: str
    strip_prefix: bool
    created_at: UtcDatetime


def join_methods(methods: Iterable[str]) -> str:
    """The stored form: "GET,POST" (upper-case, sorted, no repeats), "" for any method."""
    return ",".join(sorted({m.upper() for m in methods}))


def _view(r: Route) -> RouteView:
    return RouteView(
        id=r.id,
        host=r.host,
        path=r.path_prefix,
        methods=r.methods.split(",") if r.methods else [],
        function=r.function,
        strip_prefix=r.strip_prefix,
        created_at=r.created_at,
    )


def _describe(host: str, path: str, methods: str) -> str:
    return f"host {host or '(any)'}, path {path}, methods {methods or '(any)'}"


def lock_routes(s: Session) -> None:
    """Serialise route writers for the read-check-insert below, on any node. Host
    assignments (registry/hosts.py) take the same lock: a route is checked against them.

    SQLite: a write statement takes the database-wide RESERVED lock for the transaction.
    PostgreSQL: SHARE ROW EXCLUSIVE conflicts with itself but lets readers through.
    """
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text("UPDATE routes SET id = id WHERE 0 = 1"))
    else:
        s.execute(text("LOCK TABLE routes IN SHARE ROW EXCLUSIVE MODE"))


def list_routes(s: Session) -> list[RouteView]:
    return [_view(r) for r in s.scalars(select(Route).order_by(Route.id))]


class RouteStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def list_routes(self) -> list[RouteView]:
        with self.sessions() as s:
            return list_routes(s)

    def get(self, route_id: int) -> RouteView:
        with self.sessions() as s:
            route = s.get(Route, route_id) if 0 < route_id <= _MAX_ID else None
            if route is None:
                raise NotFound(f"route {route_id} not found")
            return _view(route)

    def add(
        self,
        *,
        host: str,
        path: str,
        methods: Iterable[str],
        function: str,
        strip_prefix: bool,
        check: Callable[[Session], None] | None = None,
    ) -> RouteView:
        """Store a route. `check` runs under the lock, before anything is read: the
        caller's rules about who may route which host (api/routes.py)."""
        stored = join_methods(methods)
        wanted = set(stored.split(",")) if stored else set()
        try:
            with self.sessions.begin() as s:
                lock_routes(s)
                if check is not None:
                    check(s)
                same_place = s.scalars(
                    select(Route).where(Route.host == host, Route.path_prefix == path)
                )
                for other in same_place:
                    theirs = set(other.methods.split(",")) if other.methods else set()
                    if theirs == wanted or theirs & wanted:
                        # Another namespace's route is not named (nor is that it exists
                        # elsewhere than as a conflict).
                        same = namespace_of(other.function) == namespace_of(function)
                        which = f"route {other.id} ({_describe(host, path, other.methods)})"
                        raise Conflict(
                            f"{which if same else 'an existing route'} already matches the "
                            f"requests of {_describe(host, path, stored)}"
                        )
                route = Route(
                    host=host,
                    path_prefix=path,
                    methods=stored,
                    function=function,
                    strip_prefix=strip_prefix,
                    created_at=utcnow(),
                )
                s.add(route)
                s.flush()
                return _view(route)
        except IntegrityError:
            # Only reachable if the lock above were bypassed (a writer of another version).
            raise Conflict(f"a route for {_describe(host, path, stored)} exists") from None

    def delete(self, route_id: int) -> None:
        with self.sessions.begin() as s:
            route = s.get(Route, route_id) if 0 < route_id <= _MAX_ID else None
            if route is None:
                raise NotFound(f"route {route_id} not found")
            s.delete(route)
