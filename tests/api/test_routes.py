"""Gateway routes end to end: the management API, and requests routed by a real server.

The module shares one `wasmlet serve --examples` process (hello, echo, gcd, ...). Routes are
global to a server, so every test uses paths and hosts of its own (see `tag`) and deletes
what it added; no test adds a catch-all that could capture another test's requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from tests.api.support import assert_error
from wasmlet.errors import Conflict, NotFound
from wasmlet.registry.db import make_sessionmaker, upgrade
from wasmlet.registry.routes import RouteStore

pytestmark = pytest.mark.integration

API = "/api/v1/routes"
AddRoute = Callable[..., dict[str, Any]]


def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def add_route(client: httpx.Client) -> Iterator[AddRoute]:
    """POST a route, insist on 201, and delete it again after the test."""
    added: list[int] = []

    def add(**body: Any) -> dict[str, Any]:
        resp = client.post(API, json=body)
        assert resp.status_code == 201, resp.text
        route = resp.json()
        added.append(route["id"])
        return route

    yield add
    for route_id in added:
        client.delete(f"{API}/{route_id}")


# -- management API ------------------------------------------------------------------------


def test_add_get_list_delete(client: httpx.Client) -> None:
    t = tag()
    resp = client.post(
        API,
        json={
            "host": f"Shop-{t}.Example.COM",
            "path": f"/shop-{t}/",
            "methods": ["post", "GET", "get"],
            "function": "hello",
            "strip_prefix": True,
        },
    )
    assert resp.status_code == 201, resp.text
    route = resp.json()
    assert set(route) == {"id", "host", "path", "methods", "function", "strip_prefix", "created_at"}
    # Normalised: host lower-case, no trailing slash, methods upper-case, sorted, distinct.
    assert route["host"] == f"shop-{t}.example.com"
    assert route["path"] == f"/shop-{t}"
    assert route["methods"] == ["GET", "POST"]
    assert route["function"] == "hello"
    assert route["strip_prefix"] is True
    assert route["created_at"].endswith(("Z", "+00:00"))

    assert client.get(f"{API}/{route['id']}").json() == route
    listed = client.get(API).json()
    assert set(listed) == {"routes"}
    assert route in listed["routes"]

    deleted = client.delete(f"{API}/{route['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": route["id"]}
    assert route not in client.get(API).json()["routes"]
    assert_error(client.get(f"{API}/{route['id']}"), 404, "not_found", str(route["id"]))
    assert_error(client.delete(f"{API}/{route['id']}"), 404, "not_found")


def test_defaults_any_host_root_path_any_method(add_route: AddRoute) -> None:
    t = tag()
    # The root path without a host is a catch-all: give it a host so other tests keep theirs.
    route = add_route(host=f"d-{t}.localhost", function="hello")
    assert route["path"] == "/"
    assert route["methods"] == []
    assert route["strip_prefix"] is False
    plain = add_route(path=f"/d-{t}", function="hello")
    assert plain["host"] == ""


@pytest.mark.parametrize("route_id", ["0", "-1", "99999999", str(2**40)])
def test_unknown_ids_are_not_found(client: httpx.Client, route_id: str) -> None:
    assert_error(client.get(f"{API}/{route_id}"), 404, "not_found")
    assert_error(client.delete(f"{API}/{route_id}"), 404, "not_found")


def test_non_numeric_id_is_rejected(client: httpx.Client) -> None:
    assert_error(client.get(f"{API}/abc"), 422, "invalid_request", "route_id")


@pytest.mark.parametrize(
    ("body", "mention"),
    [
        ({"host": "geo.localhost:8080"}, "port"),
        ({"host": "http://geo.localhost"}, "scheme"),
        ({"host": "geo_x.localhost"}, "DNS"),
        ({"host": "-geo.localhost"}, "DNS"),
        ({"host": "geo..localhost"}, "DNS"),
        ({"host": "*.*.localhost"}, "DNS"),
        ({"host": "a" * 64 + ".localhost"}, "DNS"),
        ({"path": "no-slash"}, "start with /"),
        ({"path": "/a/../b"}, ".."),
        ({"path": "/a/%2e%2e/b"}, ".."),
        ({"path": "/a%00b"}, "control"),
        ({"path": "/a\tb"}, "control"),
        ({"path": "/a?x=1"}, "?"),
        ({"path": "/a//b"}, "empty"),
        ({"path": "/" + "x" * 1024}, "1024"),
        ({"methods": ["FETCH"]}, "FETCH"),
        ({"function": "Bad Name"}, "function"),
        ({"function": "../etc"}, "function"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_routes_are_rejected(
    client: httpx.Client, body: dict[str, Any], mention: str
) -> None:
    payload = {"host": "v.localhost", "path": "/v", "function": "hello", **body}
    assert_error(client.post(API, json=payload), 422, "invalid_request", mention)


def test_function_is_required_and_body_must_be_json(client: httpx.Client) -> None:
    assert_error(client.post(API, json={"path": "/x"}), 422, "invalid_request", "function")
    resp = client.post(API, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(resp, 400, "invalid_request")


@pytest.mark.parametrize(
    "path",
    ["/api", "/api/v2/mine", "/fn/hello", "/function", "/healthz", "/metrics", "/docs", "/redoc"],
)
def test_host_less_routes_may_not_claim_reserved_paths(client: httpx.Client, path: str) -> None:
    resp = client.post(API, json={"path": path, "function": "hello"})
    assert_error(resp, 422, "invalid_request", "host")


@pytest.mark.parametrize(
    "host", ["localhost", "LocalHost.", "127.0.0.1", "127.1", "2130706433", "*.0.0.1"]
)
def test_no_route_claims_reserved_paths_on_an_api_host(client: httpx.Client, host: str) -> None:
    # The API answers on these hosts (api_hosts): not even the operator may take its paths,
    # however the host is spelled, nor with a wildcard that covers one.
    for path in ("/api/v1", "/api/v1/keys", "/fn/hello", "/function/invoke", "/healthz"):
        resp = client.post(API, json={"host": host, "path": path, "function": "hello"})
        assert_error(resp, 422, "invalid_request", "API answers on")


def test_an_api_host_keeps_its_paths_from_a_host_route(
    client: httpx.Client, add_route: AddRoute
) -> None:
    t = tag()
    # The operator may route the rest of an API host; the API's own paths stay the API's.
    route = add_route(host="LOCALHOST", path=f"/mine-{t}", function="echo")
    assert route["host"] == "localhost"
    routed = client.get(f"/mine-{t}/x", headers={"Host": "localhost."})
    assert routed.headers["x-echo-path"] == f"/mine-{t}/x"
    assert "routes" in client.get(API, headers={"Host": "localhost"}).json()


def test_a_host_route_may_claim_reserved_paths_on_other_hosts(add_route: AddRoute) -> None:
    route = add_route(host=f"own-{tag()}.localhost", path="/api/v1", function="hello")
    assert route["path"] == "/api/v1"


def test_duplicates_and_overlapping_methods_conflict(
    client: httpx.Client, add_route: AddRoute
) -> None:
    t = tag()
    path = f"/dup-{t}"
    add_route(path=path, function="hello")
    assert_error(client.post(API, json={"path": path, "function": "echo"}), 409, "conflict", path)
    add_route(path=path, methods=["GET", "POST"], function="echo")
    # Overlaps GET,POST on POST; the same set written differently is the same set.
    for methods in (["POST", "PUT"], ["post", "get"]):
        resp = client.post(API, json={"path": path, "methods": methods, "function": "gcd"})
        assert_error(resp, 409, "conflict")
    add_route(path=path, methods=["PUT"], function="gcd")  # disjoint: fine
    # The same path with a trailing slash is the same prefix.
    assert_error(client.post(API, json={"path": path + "/", "function": "x"}), 409, "conflict")
    # The same prefix for a host is a different route.
    add_route(host=f"dup-{t}.localhost", path=path, function="hello")


def test_routes_are_documented_in_openapi(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths[API]) == {"get", "post"}
    assert set(paths[API + "/{route_id}"]) == {"get", "delete"}
    assert paths[API]["post"]["tags"] == ["routes"]


# -- routing requests ----------------------------------------------------------------------


def test_route_by_path(client: httpx.Client, add_route: AddRoute) -> None:
    t = tag()
    prefix = f"/greet-{t}"
    # Visible to the very next request: the change bumped the registry generation.
    add_route(path=prefix, function="hello")
    assert client.get(f"{prefix}?name=Route").text == "Hello, Route!\n"
    assert client.get(f"{prefix}/deeper/still?name=Deep").text == "Hello, Deep!\n"
    assert client.post(f"{prefix}/", content=b"Body").text == "Hello, Body!\n"
    # Segment boundary: a longer name is a different path, and nothing else matches it.
    assert_error(client.get(f"{prefix}ing"), 404, "not_found")


def test_longest_prefix_wins_on_the_server(client: httpx.Client, add_route: AddRoute) -> None:
    t = tag()
    add_route(path=f"/lp-{t}", function="hello")
    add_route(path=f"/lp-{t}/echo", function="echo")
    assert client.get(f"/lp-{t}/other?name=x").text == "Hello, x!\n"
    resp = client.get(f"/lp-{t}/echo/more")
    assert resp.headers["x-echo-path"] == f"/lp-{t}/echo/more"


def test_route_by_host(client: httpx.Client, add_route: AddRoute) -> None:
    host = f"geo-{tag()}.localhost"
    add_route(host=host, function="hello")
    resp = client.get("/anything/at/all?name=Geo", headers={"Host": host})
    assert resp.status_code == 200
    assert resp.text == "Hello, Geo!\n"
    # Case and port do not matter; another host gets the normal app.
    upper = client.get("/x?name=Up", headers={"Host": f"{host.upper()}:8080"})
    assert upper.text == "Hello, Up!\n"
    assert_error(
        client.get("/anything/at/all", headers={"Host": "elsewhere.localhost"}), 404, "not_found"
    )


def test_a_routed_host_owns_every_path_on_it(client: httpx.Client, add_route: AddRoute) -> None:
    host = f"own-{tag()}.localhost"
    add_route(host=host, function="echo")
    routed = client.get(f"{API}?x=1", headers={"Host": host})
    assert routed.headers["x-echo-path"] == API
    assert routed.headers["x-echo-query"] == "x=1"
    # The management API is still there on any other host.
    assert "routes" in client.get(API).json()
    assert client.get("/healthz").status_code == 200


def test_wildcard_host(client: httpx.Client, add_route: AddRoute) -> None:
    domain = f"w-{tag()}.localhost"
    add_route(host=f"*.{domain}", function="hello")
    assert client.get("/?name=Sub", headers={"Host": f"a.b.{domain}"}).text == "Hello, Sub!\n"
    assert_error(client.get("/zz-none", headers={"Host": domain}), 404, "not_found")


def test_host_before_path(client: httpx.Client, add_route: AddRoute) -> None:
    t = tag()
    host = f"hb-{t}.localhost"
    path = f"/hb-{t}"
    add_route(path=path + "/longer", function="echo")
    add_route(host=host, path="/", function="hello")
    assert client.get(f"{path}/longer?name=H", headers={"Host": host}).text == "Hello, H!\n"
    assert "x-echo-path" in client.get(f"{path}/longer").headers
    # A host whose routes miss the path falls back to the host-less routes.
    add_route(host=f"other-{t}.localhost", path="/only", function="hello")
    resp = client.get(f"{path}/longer", headers={"Host": f"other-{t}.localhost"})
    assert resp.headers["x-echo-path"] == f"{path}/longer"


def test_strip_prefix_is_visible_to_the_guest(client: httpx.Client, add_route: AddRoute) -> None:
    t = tag()
    add_route(path=f"/strip-{t}", function="echo", strip_prefix=True)
    add_route(path=f"/keep-{t}", function="echo")
    resp = client.put(f"/strip-{t}/items/7?x=1&y=2", content=b"payload")
    assert resp.status_code == 200
    assert resp.headers["x-echo-path"] == "/items/7"
    assert resp.headers["x-echo-query"] == "x=1&y=2"
    assert resp.headers["x-echo-method"] == "PUT"
    assert resp.content == b"payload"
    assert client.get(f"/strip-{t}").headers["x-echo-path"] == "/"
    assert client.get(f"/keep-{t}/items/7").headers["x-echo-path"] == f"/keep-{t}/items/7"


def test_percent_encoded_route_paths_match_decoded_requests(
    client: httpx.Client, add_route: AddRoute
) -> None:
    t = tag()
    route = add_route(path=f"/caf%C3%A9-{t}", function="echo", strip_prefix=True)
    assert route["path"] == f"/café-{t}"
    resp = client.get(f"/caf%C3%A9-{t}/a%20b")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-echo-path"] == "/a b"


def test_method_selection_and_405(client: httpx.Client, add_route: AddRoute) -> None:
    t = tag()
    path = f"/m-{t}"
    add_route(path=path, methods=["GET"], function="hello")
    add_route(path=path, methods=["PUT", "DELETE"], function="echo")
    assert client.get(f"{path}?name=G").text == "Hello, G!\n"
    assert client.delete(path).headers["x-echo-method"] == "DELETE"
    resp = client.post(path, content=b"x")
    assert_error(resp, 405, "invalid_request", "POST")
    assert resp.headers["allow"] == "GET, PUT, DELETE"
    # A route for any method at the same prefix takes what the others do not.
    add_route(path=path, function="echo")
    assert client.post(path, content=b"any").content == b"any"
    assert client.get(f"{path}?name=Still").text == "Hello, Still!\n"


def test_route_to_a_missing_function(client: httpx.Client, add_route: AddRoute) -> None:
    t = tag()
    missing = f"later-{t}"
    add_route(path=f"/later-{t}", function=missing)
    assert_error(client.get(f"/later-{t}/x"), 404, "not_found", missing)


def test_deleting_a_route_takes_effect_at_once(client: httpx.Client) -> None:
    t = tag()
    route = client.post(API, json={"path": f"/gone-{t}", "function": "hello"}).json()
    assert client.get(f"/gone-{t}?name=A").text == "Hello, A!\n"
    assert client.delete(f"{API}/{route['id']}").status_code == 200
    assert_error(client.get(f"/gone-{t}?name=A"), 404, "not_found")


def test_routed_invocations_are_recorded_as_route(
    client: httpx.Client, add_route: AddRoute
) -> None:
    t = tag()
    add_route(path=f"/rec-{t}", function="gcd")
    resp = client.post(f"/rec-{t}", json={"args": [1071, 462]})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"result": 21}
    records = client.get("/api/v1/functions/gcd/invocations", params={"limit": 5}).json()
    assert records["invocations"][0]["via"] == "route"


def test_invocation_paths_are_unchanged_with_routes(
    client: httpx.Client, add_route: AddRoute
) -> None:
    add_route(path=f"/x-{tag()}", function="echo")
    add_route(host=f"h-{tag()}.localhost", function="echo")
    assert client.post("/api/v1/functions/gcd/invoke", json={"args": [12, 18]}).json() == {
        "result": 6
    }
    assert client.get("/fn/hello/?name=Fn").text == "Hello, Fn!\n"


# -- across processes and restarts ---------------------------------------------------------


def test_routes_reach_every_worker_and_survive_a_restart(server_factory: Callable) -> None:
    server = server_factory(workers=2, examples=True)
    with server.client() as c:
        route = c.post(API, json={"host": "geo.localhost", "function": "hello"}).json()
        c.post(API, json={"path": "/geo", "function": "echo", "strip_prefix": True})
    # A fresh connection per request spreads them over both workers; each must see every
    # change at once, additions and deletions alike.
    for i in range(12):
        resp = httpx.get(f"{server.url}/?name=W{i}", headers={"Host": "geo.localhost"})
        assert resp.text == f"Hello, W{i}!\n"
    assert (
        httpx.delete(f"{server.url}{API}/{route['id']}", headers=server.auth_headers()).status_code
        == 200
    )
    for _ in range(12):
        resp = httpx.get(f"{server.url}/", headers={"Host": "geo.localhost"})
        assert_error(resp, 404, "not_found")
    server.workers = 1  # persistence needs no second worker; it would only slow the restart
    server.restart()
    with server.client() as c:
        listed = c.get(API).json()["routes"]
        assert [(r["host"], r["path"], r["function"], r["strip_prefix"]) for r in listed] == [
            ("", "/geo", "echo", True)
        ]
        assert c.get("/geo/x").headers["x-echo-path"] == "/x"


# -- the store on each database ------------------------------------------------------------


def test_route_store(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        upgrade(engine)
        store = RouteStore(make_sessionmaker(engine))
        p = f"/store-{tag()}"
        a = store.add(host="", path=p, methods=["post", "GET"], function="f", strip_prefix=False)
        assert a.methods == ["GET", "POST"]
        b = store.add(host="", path=p, methods=[], function="g", strip_prefix=True)
        c = store.add(host="h.example", path=p, methods=["GET"], function="h", strip_prefix=False)
        with pytest.raises(Conflict):
            store.add(host="", path=p, methods=["GET"], function="x", strip_prefix=False)
        with pytest.raises(Conflict):
            store.add(host="", path=p, methods=[], function="x", strip_prefix=False)
        mine = [r for r in store.list_routes() if r.path == p]
        assert mine == [a, b, c]
        assert store.get(b.id) == b
        store.delete(a.id)
        with pytest.raises(NotFound):
            store.get(a.id)
        with pytest.raises(NotFound):
            store.delete(a.id)
        # With the GET,POST route gone, GET at the prefix is free again.
        store.add(host="", path=p, methods=["GET"], function="x", strip_prefix=False)
    finally:
        engine.dispose()


def test_concurrent_overlapping_adds_admit_exactly_one(db_url: str) -> None:
    """The overlap check reads before it writes: racing writers must queue, not both pass."""
    engine = create_engine(db_url)
    try:
        upgrade(engine)
        store = RouteStore(make_sessionmaker(engine))
        p = f"/race-{tag()}"
        # Distinct method sets that all share GET: the unique constraint alone would let
        # every one of them in.
        sets = [["GET"], ["GET", "POST"], ["GET", "PUT"], ["DELETE", "GET"], ["GET", "PATCH"]]

        def attempt(methods: list[str]) -> str:
            try:
                store.add(host="", path=p, methods=methods, function="f", strip_prefix=False)
            except Conflict:
                return "conflict"
            return "added"

        with ThreadPoolExecutor(len(sets)) as pool:
            outcomes = list(pool.map(attempt, sets))
        assert sorted(outcomes) == ["added"] + ["conflict"] * (len(sets) - 1)
        assert len([r for r in store.list_routes() if r.path == p]) == 1
    finally:
        engine.dispose()
