"""Host assignments in the registry (registry/hosts.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, delete

from wasmlet.errors import Conflict, InvalidRequest, NotFound
from wasmlet.hostnames import HostSet
from wasmlet.registry.db import make_sessionmaker, upgrade
from wasmlet.registry.hosts import HostStore
from wasmlet.registry.models import NamespaceHost, Route
from wasmlet.registry.routes import RouteStore

PLATFORM = HostSet(["localhost", "127.0.0.1"])


@pytest.fixture
def stores(db_url: str) -> Iterator[tuple[HostStore, RouteStore]]:
    engine = create_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:  # PostgreSQL: one database for the whole session
        s.execute(delete(NamespaceHost))
        s.execute(delete(Route))
    try:
        yield HostStore(sessions), RouteStore(sessions)
    finally:
        engine.dispose()


def _route(routes: RouteStore, host: str, function: str, path: str = "/") -> int:
    return routes.add(host=host, path=path, methods=[], function=function, strip_prefix=False).id


def test_assign_is_idempotent_and_listed(stores: tuple[HostStore, RouteStore]) -> None:
    hosts, _ = stores
    hosts.assign("a", ["shop.test", "*.shop.test"], PLATFORM)
    again = hosts.assign("a", ["shop.test", "shop.test"], PLATFORM)
    assert [(h.namespace, h.pattern) for h in again] == [("a", "*.shop.test"), ("a", "shop.test")]
    hosts.assign("b", ["b.test"], PLATFORM)
    assert [h.pattern for h in hosts.list_hosts("b")] == ["b.test"]
    assert len(hosts.list_hosts()) == 3
    assert hosts.owners().may_route("a", "x.shop.test")


def test_assign_refuses(stores: tuple[HostStore, RouteStore]) -> None:
    hosts, routes = stores
    hosts.assign("a", ["shop.test"], PLATFORM)
    with pytest.raises(InvalidRequest, match="operator"):
        hosts.assign("default", ["op.test"], PLATFORM)
    for pattern in ("localhost", "*.0.0.1"):
        with pytest.raises(InvalidRequest, match="API answers on"):
            hosts.assign("b", [pattern], PLATFORM)
    for pattern in ("shop.test", "*.shop.test", "a.shop.test", "*.test"):
        with pytest.raises(Conflict, match="namespace a"):
            hosts.assign("b", [pattern], PLATFORM)
    # The operator's route on a host makes it unassignable until the route is gone.
    taken = _route(routes, "op.test", "fn")
    with pytest.raises(Conflict, match=f"routes \\({taken}\\)"):
        hosts.assign("b", ["*.op.test", "op.test"], PLATFORM)
    # All or none: nothing of a refused batch was assigned.
    assert hosts.list_hosts("b") == []
    routes.delete(taken)
    hosts.assign("b", ["op.test"], PLATFORM)


def test_unassign_deletes_the_routes_it_orphans(stores: tuple[HostStore, RouteStore]) -> None:
    hosts, routes = stores
    hosts.assign("a", ["shop.test", "*.shop.test", "other.test"], PLATFORM)
    bare = _route(routes, "shop.test", "a~fn")
    sub = _route(routes, "x.shop.test", "a~fn")
    wild = _route(routes, "*.shop.test", "a~fn")
    other = _route(routes, "other.test", "a~fn")
    legacy = _route(routes, "", "a~fn", "/legacy")  # an any-host row of an older version
    operator = _route(routes, "", "fn", "/op")
    with pytest.raises(NotFound):
        hosts.unassign("a", ["shop.test", "nope.test"])
    assert len(routes.list_routes()) == 6
    removed, deleted = hosts.unassign("a", ["*.shop.test"])
    assert removed == ["*.shop.test"] and sorted(deleted) == sorted([sub, wild, legacy])
    assert {r.id for r in routes.list_routes()} == {bare, other, operator}


def test_a_conflict_names_no_other_namespaces_route(stores: tuple[HostStore, RouteStore]) -> None:
    _, routes = stores
    mine = _route(routes, "h.test", "a~fn", "/p")
    with pytest.raises(Conflict) as other:
        _route(routes, "h.test", "b~fn", "/p")
    assert str(mine) not in other.value.message and "a~" not in other.value.message
    assert "an existing route" in other.value.message
    with pytest.raises(Conflict, match=f"route {mine} "):
        _route(routes, "h.test", "a~other", "/p")
