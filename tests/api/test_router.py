"""The route table's matching rules (api/router.py), without a server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wasmlet.api.app import create_app
from wasmlet.api.openapi import HOT_PATHS
from wasmlet.api.router import Router, RouteTable, is_reserved, request_host, within
from wasmlet.config import Settings
from wasmlet.errors import InvalidRequest
from wasmlet.hostnames import HostSet
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.hosts import HostOwners
from wasmlet.registry.routes import RouteView

_ids = iter(range(1, 10_000))


def route(
    fn: str,
    path: str = "/",
    *,
    host: str = "",
    methods: tuple[str, ...] = (),
    strip: bool = False,
    id: int | None = None,
) -> RouteView:
    return RouteView(
        id=id if id is not None else next(_ids),
        host=host,
        path=path,
        methods=sorted(methods),
        function=fn,
        strip_prefix=strip,
        created_at=datetime.now(UTC),
    )


def fn_of(table: RouteTable, path: str, method: str = "GET", host: str = "") -> str | None:
    found = table.match(host, path, method)
    return found.route.function if found else None


def test_empty_table_matches_nothing() -> None:
    table = RouteTable()
    assert not table.has_hosts and not table.has_default
    assert table.match("x.example.com", "/anything", "GET") is None


def test_longest_prefix_wins() -> None:
    table = RouteTable([route("root", "/"), route("a", "/a"), route("ab", "/a/b")])
    assert fn_of(table, "/") == "root"
    assert fn_of(table, "/zzz") == "root"
    assert fn_of(table, "/a") == "a"
    assert fn_of(table, "/a/") == "a"
    assert fn_of(table, "/a/c") == "a"
    assert fn_of(table, "/a/b") == "ab"
    assert fn_of(table, "/a/b/c/d") == "ab"
    # Registration order plays no part.
    reversed_table = RouteTable([route("ab", "/a/b"), route("a", "/a"), route("root", "/")])
    assert fn_of(reversed_table, "/a/b/c") == "ab"


def test_prefix_matches_only_at_segment_boundaries() -> None:
    table = RouteTable([route("search", "/search")])
    assert fn_of(table, "/search") == "search"
    assert fn_of(table, "/search/x") == "search"
    assert fn_of(table, "/searching") is None
    assert fn_of(table, "/sea") is None
    assert fn_of(table, "/") is None
    assert within("/search/x", "/search") and not within("/searchx", "/search")
    assert within("/anything", "/")


def test_long_request_path_is_bounded_by_the_longest_route() -> None:
    table = RouteTable([route("deep", "/a/b")])
    assert fn_of(table, "/a/b" + "/x" * 5000) == "deep"
    assert fn_of(table, "/" * 10000) is None


def test_strip_prefix_hands_the_rest_of_the_path() -> None:
    table = RouteTable(
        [
            route("s", "/svc", strip=True),
            route("keep", "/keep"),
            route("rootstrip", "/", host="r.example", strip=True),
        ]
    )
    assert table.match("", "/svc/items/7", "GET").path == "/items/7"
    assert table.match("", "/svc", "GET").path == "/"
    assert table.match("", "/svc/", "GET").path == "/"
    assert table.match("", "/keep/x", "GET").path == "/keep/x"
    assert table.match("r.example", "/a/b", "GET").path == "/a/b"


def test_host_routes_come_before_path_routes() -> None:
    table = RouteTable(
        [
            route("by-path", "/search"),
            route("by-host", "/", host="geo.localhost"),
            route("by-host-deep", "/search/deep", host="geo.localhost"),
        ]
    )
    assert table.has_hosts and table.has_default
    # On geo.localhost even a shorter host-route prefix beats the longer host-less one.
    assert fn_of(table, "/search", host="geo.localhost") == "by-host"
    assert fn_of(table, "/search/deep/x", host="geo.localhost") == "by-host-deep"
    assert fn_of(table, "/search", host="other.localhost") == "by-path"
    assert fn_of(table, "/search") == "by-path"


def test_host_routes_own_even_reserved_paths() -> None:
    table = RouteTable([route("geo", "/", host="geo.localhost"), route("catchall", "/")])
    assert fn_of(table, "/api/v1/functions", host="geo.localhost") == "geo"
    assert fn_of(table, "/healthz", host="geo.localhost") == "geo"
    # Without the host, the catch-all leaves wasmlet's own paths alone.
    assert fn_of(table, "/api/v1/functions", host="x.localhost") is None
    assert fn_of(table, "/healthz") is None
    assert fn_of(table, "/fn/hello/") is None
    assert fn_of(table, "/openapi.json") is None
    assert fn_of(table, "/docs/oauth2-redirect") is None
    assert fn_of(table, "/apix") == "catchall"
    assert fn_of(table, "/functional") == "catchall"


def test_host_without_a_matching_path_falls_back_to_host_less_routes() -> None:
    table = RouteTable([route("geo", "/geo", host="geo.localhost"), route("any", "/other")])
    assert fn_of(table, "/geo/x", host="geo.localhost") == "geo"
    assert fn_of(table, "/other", host="geo.localhost") == "any"
    assert fn_of(table, "/nothing", host="geo.localhost") is None


def test_wildcard_host_matches_sub_domains_not_the_domain() -> None:
    table = RouteTable(
        [
            route("wild", "/", host="*.example.com"),
            route("deeper", "/", host="*.b.example.com"),
            route("exact", "/", host="a.b.example.com"),
        ]
    )
    assert fn_of(table, "/", host="x.example.com") == "wild"
    assert fn_of(table, "/", host="x.y.example.com") == "wild"
    assert fn_of(table, "/", host="x.b.example.com") == "deeper"
    assert fn_of(table, "/", host="a.b.example.com") == "exact"
    assert fn_of(table, "/", host="example.com") is None
    assert fn_of(table, "/", host="badexample.com") is None
    assert fn_of(table, "/", host="") is None


def test_exact_host_falls_back_to_wildcard_for_other_paths() -> None:
    table = RouteTable(
        [route("exact", "/only", host="a.example.com"), route("wild", "/", host="*.example.com")]
    )
    assert fn_of(table, "/only/x", host="a.example.com") == "exact"
    assert fn_of(table, "/else", host="a.example.com") == "wild"


def test_a_route_listing_the_method_beats_one_for_any_method() -> None:
    table = RouteTable(
        [
            route("any", "/items"),
            route("reader", "/items", methods=("GET", "HEAD")),
            route("writer", "/items", methods=("POST",)),
        ]
    )
    assert fn_of(table, "/items", "GET") == "reader"
    assert fn_of(table, "/items", "HEAD") == "reader"
    assert fn_of(table, "/items/3", "POST") == "writer"
    assert fn_of(table, "/items", "DELETE") == "any"


def test_method_filter_falls_back_to_a_shorter_prefix() -> None:
    table = RouteTable([route("root", "/"), route("get-only", "/search", methods=("GET",))])
    assert fn_of(table, "/search", "GET") == "get-only"
    assert fn_of(table, "/search", "POST") == "root"


def test_prefix_matched_but_no_method_is_405_with_allow() -> None:
    table = RouteTable(
        [
            route("g", "/search", methods=("GET",)),
            route("p", "/search/deep", methods=("PUT", "DELETE")),
        ]
    )
    with pytest.raises(InvalidRequest) as info:
        table.match("", "/search/deep/1", "POST")
    assert info.value.status == 405
    # Every route whose prefix matched contributes, in the usual order of methods.
    assert info.value.headers == {"Allow": "GET, PUT, DELETE"}
    assert "POST" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        table.match("", "/search", "PATCH")
    assert info.value.headers == {"Allow": "GET"}
    assert fn_of(table, "/elsewhere", "POST") is None  # no prefix matched: not a 405


def test_405_on_a_host_does_not_fall_through_to_host_less_routes() -> None:
    table = RouteTable(
        [route("g", "/search", host="geo.localhost", methods=("GET",)), route("any", "/")]
    )
    with pytest.raises(InvalidRequest) as info:
        table.match("geo.localhost", "/search", "POST")
    assert info.value.status == 405
    assert fn_of(table, "/other", "POST", host="geo.localhost") == "any"


def test_overlapping_routes_the_older_one_wins() -> None:
    # The registry refuses these; the table must still be deterministic if two nodes race.
    table = RouteTable([route("newer", "/x", id=20), route("older", "/x", id=10)])
    assert fn_of(table, "/x") == "older"


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("Geo.LocalHost:8080", "geo.localhost"),
        ("geo.localhost", "geo.localhost"),
        ("geo.localhost.", "geo.localhost"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("[0:0:0:0:0:0:0:1]:80", "::1"),
        ("LOCALHOST.:8080", "localhost"),
        ("localhost..", "localhost"),
        ("127.1", "127.0.0.1"),
        ("2130706433:8080", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("  Shop.Test  ", "shop.test"),
        ("", ""),
    ],
)
def test_request_host(raw: str, host: str) -> None:
    assert request_host(raw) == host


def test_reserved_prefixes() -> None:
    for path in ("/api", "/api/v1/routes", "/fn/x", "/function/invoke", "/healthz", "/metrics"):
        assert is_reserved(path), path
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert is_reserved(path), path
    for path in ("/", "/apis", "/geo", "/fnord", "/metricsx"):
        assert not is_reserved(path), path


def test_every_path_the_platform_serves_is_reserved(tmp_path: Path) -> None:
    """RESERVED is the one list of the platform's paths: the app serves nothing outside it."""
    app = create_app(Settings(data_dir=tmp_path))
    docs = [r.path for r in app.app.routes if hasattr(r, "path")]  # /docs, /openapi.json...
    paths = [*docs, *app.app.openapi()["paths"], *HOT_PATHS]
    app.state.close()
    assert len(paths) > 20 and "/healthz" in paths
    for path in paths:
        assert is_reserved(path.split("{")[0].rstrip("/") or "/"), path


PLATFORM = HostSet(["localhost", "127.0.0.1", "::1", "*.api.test"])


def test_platform_paths_skip_host_routes_on_the_api_hosts() -> None:
    table = RouteTable(
        [
            route("local", "/", host="localhost"),
            route("ip", "/api/v1/keys", host="127.0.0.1"),
            route("sub", "/", host="*.api.test"),
            route("any", "/"),
        ],
        platform=PLATFORM,
    )
    for host in ("localhost", "127.0.0.1", "x.api.test"):
        for path in ("/api/v1/keys", "/fn/x", "/function/invoke", "/healthz", "/docs/x"):
            assert fn_of(table, path, host=host) is None, (host, path)
    assert fn_of(table, "/shop", host="localhost") == "local"
    assert fn_of(table, "/", host="x.api.test") == "sub"
    # Elsewhere a host's routes own every path; host-less routes never take the platform's.
    other = RouteTable([route("shop", "/", host="shop.test")], platform=PLATFORM)
    assert fn_of(other, "/api/v1/keys", host="shop.test") == "shop"
    assert fn_of(table, "/api/v1/keys", host="elsewhere.test") is None


def test_routes_a_namespace_may_not_have_are_left_out() -> None:
    owners = HostOwners([("a", "shop.test"), ("a", "*.a.test"), ("b", "b.test")])
    table = RouteTable(
        [
            route("a~shop", "/", host="shop.test"),
            route("a~sub", "/", host="x.a.test"),
            route("b~steal", "/checkout", host="shop.test"),
            route("b~any", "/"),
            route("b~wild", "/", host="*.test"),
            route("op-on-tenant", "/x", host="b.test"),
            route("op-wild", "/", host="*.test"),
            route("op", "/", host="op.example"),
            route("op-any", "/any"),
        ],
        owners=owners,
    )
    assert table.size == 4
    assert fn_of(table, "/checkout", host="shop.test") == "a~shop"
    assert fn_of(table, "/", host="x.a.test") == "a~sub"
    assert fn_of(table, "/x", host="b.test") is None
    assert fn_of(table, "/", host="zzz.test") is None
    assert fn_of(table, "/", host="op.example") == "op"
    assert fn_of(table, "/any") == "op-any"


def test_router_reloads_when_the_generation_moves(tmp_path: Path) -> None:
    routes = [route("first", "/a")]
    loads: list[int] = []

    def load() -> list[RouteView]:
        loads.append(1)
        return list(routes)

    async def scenario() -> None:
        writer = ChangeSignal(tmp_path)
        router = Router(load, ChangeSignal(tmp_path))
        await router.refresh()
        assert fn_of(router.table, "/a") == "first"
        assert router.pending() is None  # nothing changed: no reload, no waiting
        assert len(loads) == 1
        routes.append(route("second", "/b"))
        writer.bump()
        await router.sync()
        assert fn_of(router.table, "/b") == "second"
        assert len(loads) == 2
        await router.sync()
        assert len(loads) == 2

    asyncio.run(scenario())


def test_router_keeps_its_table_when_a_reload_fails(tmp_path: Path) -> None:
    routes = [route("kept", "/k")]
    state = {"fail": False}

    def load() -> list[RouteView]:
        if state["fail"]:
            raise RuntimeError("database went away")
        return list(routes)

    async def scenario() -> None:
        writer = ChangeSignal(tmp_path)
        router = Router(load, ChangeSignal(tmp_path))
        await router.refresh()
        routes.append(route("added", "/n"))
        state["fail"] = True
        writer.bump()
        await router.sync()
        assert fn_of(router.table, "/k") == "kept"
        assert fn_of(router.table, "/n") is None
        # No further change is signalled, yet the next request retries the failed reload.
        state["fail"] = False
        await router.sync()
        assert fn_of(router.table, "/n") == "added"
        assert router.pending() is None

    asyncio.run(scenario())
