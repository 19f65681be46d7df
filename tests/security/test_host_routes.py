"""Break 2 of issue 10: host routes were global, so a tenant could route the API's own host.

Two tenants with admin keys of their own on one real server. Tenant a has `shop.test`
(assigned by the operator) and routes it to a guest that dumps what it receives (CGI
environment and body: tests/fixtures/src/cgi_dump.c). Tenant b, with a dump guest of its
own, tries to route the API's host, the API's paths on its address, a wildcard over a's
host and a longer path under a's host. Every attempt is refused without naming a or its
route, and the admin's own request for its keys still reaches the API, not a guest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.api.support import FIXTURES, deployed
from tests.helpers import ServerProcess
from tests.security.support import client_with, mint_key
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.db import make_engine, make_sessionmaker
from wasmlet.registry.routes import RouteStore

pytestmark = pytest.mark.integration

DUMP = FIXTURES / "cgi_dump.wasm"
ROUTES = "/api/v1/routes"


@dataclass
class World:
    server: ServerProcess
    operator: httpx.Client
    a: httpx.Client
    b: httpx.Client
    a_route: int


def _hosts(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/hosts"


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    with server.client() as operator:
        keys = {ns: mint_key(operator, ns) for ns in ("shopa", "shopb")}
        resp = operator.post(_hosts("shopa"), json={"patterns": ["shop.test"]})
        assert resp.status_code == 200, resp.text
        resp = operator.post(_hosts("shopb"), json={"patterns": ["b.test", "*.b.test"]})
        assert resp.status_code == 200, resp.text
        with client_with(server, keys["shopa"]) as a, client_with(server, keys["shopb"]) as b:
            for tenant, client in (("a", a), ("b", b)):
                spec = {"visibility": "public", "env": {"DUMP_OWNER": tenant}}
                deployed(client, "dump", DUMP, spec=spec)
            resp = a.post(ROUTES, json={"host": "shop.test", "path": "/", "function": "dump"})
            assert resp.status_code == 201, resp.text
            yield World(server, operator, a, b, resp.json()["id"])


def _refused(resp: httpx.Response, *secrets: str) -> str:
    """A refusal (403 or 422) in the platform's error form, naming none of `secrets`."""
    assert resp.status_code in (403, 409, 422), (resp.status_code, resp.text)
    error = resp.json()["error"]
    assert error["code"] in ("forbidden", "conflict", "invalid_request"), error
    for secret in secrets:
        assert secret not in resp.text, resp.text
    return error["message"]


def _reaches_the_api(world: World, host: str) -> None:
    """The operator's request for its keys, sent with `host`, is answered by the API."""
    resp = world.operator.get("/api/v1/keys", headers={"Host": host})
    assert resp.status_code == 200, resp.text
    assert "keys" in resp.json(), resp.text
    assert "--stdin--" not in resp.text and "DUMP_OWNER" not in resp.text


def _dumped_by(resp: httpx.Response) -> str | None:
    """Which tenant's dump guest answered, or None if no guest did."""
    for line in resp.text.splitlines():
        if line.startswith("DUMP_OWNER="):
            return line.split("=", 1)[1]
    return None


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("localhost", "/"),  # the API's own host, every path on it
        ("127.0.0.1", "/api/v1/keys"),  # the API's paths on its address
        ("LocalHost.", "/api/v1"),  # another spelling of the same host
        ("127.1", "/"),  # and of the address
        ("", "/"),  # any host at all
        ("", "/admin-console"),  # any host, a path of no one's
        ("*.test", "/"),  # a wildcard over another tenant's host
        ("*.0.0.1", "/"),  # a wildcard over the API's address
    ],
)
def test_a_tenant_cannot_route_hosts_it_was_not_given(world: World, host: str, path: str) -> None:
    resp = world.b.post(ROUTES, json={"host": host, "path": path, "function": "dump"})
    message = _refused(resp, "shopa", f"route {world.a_route}", "shop.test")
    assert "namespace" in message or "API" in message, message
    for api_host in ("localhost", "127.0.0.1", f"127.0.0.1:{world.server.port}"):
        _reaches_the_api(world, api_host)
    # The requests b wanted still go where they went: a's host to a, others to no guest.
    assert _dumped_by(httpx.get(f"{world.server.url}/", headers={"Host": "shop.test"})) == "a"
    assert _dumped_by(world.operator.get("/admin-console")) is None
    assert [r for r in world.b.get(ROUTES).json()["routes"] if r["host"] == host] == []


def test_a_longer_path_under_another_tenants_host_is_refused(world: World) -> None:
    # a owns shop.test and routes / there; b wants its checkout forms and cookies.
    resp = world.b.post(ROUTES, json={"host": "shop.test", "path": "/checkout", "function": "dump"})
    message = _refused(resp, "shopa", f"route {world.a_route}")
    assert message == "host shop.test is not assigned to namespace shopb"
    with httpx.Client(base_url=world.server.url) as shopper:
        sent = shopper.post(
            "/checkout",
            headers={"Host": "shop.test", "Cookie": "session=a-user"},
            content=b"card=4111",
        )
    assert sent.status_code == 200, sent.text
    assert _dumped_by(sent) == "a"
    assert "HTTP_COOKIE=session=a-user" in sent.text and "--stdin--\ncard=4111" in sent.text
    _reaches_the_api(world, "localhost")


def test_the_owner_routes_its_host_and_sub_domains_it_was_given(world: World) -> None:
    added = world.b.post(ROUTES, json={"host": "*.b.test", "path": "/", "function": "dump"})
    assert added.status_code == 201, added.text
    try:
        got = httpx.get(f"{world.server.url}/hello", headers={"Host": "X.B.Test.:8080"})
        assert _dumped_by(got) == "b"
        # Even a's own host: not the API's, so a route there owns every path on it.
        assert (
            _dumped_by(httpx.get(f"{world.server.url}/api/v1/keys", headers={"Host": "shop.test"}))
            == "a"
        )
    finally:
        world.b.delete(f"{ROUTES}/{added.json()['id']}")


def test_assignments_are_the_operators_and_never_overlap(world: World) -> None:
    # A tenant may read its own hosts, not another's, and assign none.
    mine = world.b.get(_hosts("shopb"))
    assert mine.status_code == 200
    assert {h["pattern"] for h in mine.json()["hosts"]} == {"b.test", "*.b.test"}
    assert world.b.get(_hosts("shopa")).status_code == 403
    assert {h["namespace"] for h in world.b.get("/api/v1/namespaces/hosts").json()["hosts"]} == {
        "shopb"
    }
    resp = world.b.post(_hosts("shopb"), json={"patterns": ["localhost"]})
    assert resp.status_code == 403
    resp = world.b.delete(_hosts("shopa"), params={"pattern": "shop.test"})
    assert resp.status_code == 403
    with client_with(world.server, mint_key(world.operator, "shopb", ("read",))) as reader:
        assert reader.get(_hosts("shopb")).status_code == 403  # scope admin
    # The operator: no API host, nothing that shares a host (or a parent domain) with a's.
    for pattern in ("localhost", "LOCALHOST.", "127.1", "*.0.0.1"):
        resp = world.operator.post(_hosts("shopb"), json={"patterns": [pattern]})
        assert resp.status_code == 422, resp.text
    for pattern in ("shop.test", "*.shop.test", "a.shop.test", "*.test", "test"):
        resp = world.operator.post(_hosts("shopb"), json={"patterns": [pattern]})
        assert resp.status_code == 409, resp.text
    listed = world.operator.get("/api/v1/namespaces/hosts").json()["hosts"]
    assert {(h["namespace"], h["pattern"]) for h in listed} == {
        ("shopa", "shop.test"),
        ("shopb", "b.test"),
        ("shopb", "*.b.test"),
    }


def test_a_route_row_that_got_in_anyway_captures_nothing(world: World) -> None:
    """Defense in depth: rows written past the API (an old version, a hand-edited database)
    are checked again when the route table is built and at match time."""
    engine = make_engine(f"sqlite:///{(world.server.data_dir / 'wasmlet.db').resolve()}")
    store = RouteStore(make_sessionmaker(engine))
    rows = [
        store.add(
            host="localhost", path="/", methods=[], function="shopb~dump", strip_prefix=False
        ),
        store.add(host="", path="/api", methods=[], function="shopb~dump", strip_prefix=False),
        store.add(host="*.test", path="/", methods=[], function="shopb~dump", strip_prefix=False),
        # The operator's own rows: for any host, and on the API's address, the API's paths.
        store.add(host="", path="/api/v1", methods=[], function="dump", strip_prefix=False),
        store.add(host="127.0.0.1", path="/api", methods=[], function="dump", strip_prefix=False),
        store.add(
            host="shop.test", path="/checkout", methods=[], function="dump", strip_prefix=False
        ),
    ]
    ChangeSignal(world.server.data_dir).bump()
    try:
        for host in ("localhost", "127.0.0.1", f"[::1]:{world.server.port}"):
            _reaches_the_api(world, host)
        assert _dumped_by(world.operator.get("/other", headers={"Host": "localhost"})) is None
        assert _dumped_by(httpx.get(f"{world.server.url}/", headers={"Host": "zz.test"})) is None
        got = httpx.get(f"{world.server.url}/checkout", headers={"Host": "shop.test"})
        assert _dumped_by(got) == "a"
    finally:
        for row in rows:
            store.delete(row.id)
        ChangeSignal(world.server.data_dir).bump()
        engine.dispose()


def test_taking_a_host_away_deletes_its_routes(world: World) -> None:
    operator = world.operator
    resp = operator.post(_hosts("shopb"), json={"patterns": ["gone.b2.test"]})
    assert resp.status_code == 200, resp.text
    route = world.b.post(ROUTES, json={"host": "gone.b2.test", "function": "dump"}).json()
    assert _dumped_by(httpx.get(f"{world.server.url}/", headers={"Host": "gone.b2.test"})) == "b"
    removed = operator.delete(_hosts("shopb"), params={"pattern": "Gone.B2.Test"})
    assert removed.status_code == 200, removed.text
    assert removed.json() == {
        "namespace": "shopb",
        "removed": ["gone.b2.test"],
        "routes_deleted": [route["id"]],
    }
    assert world.b.get(f"{ROUTES}/{route['id']}").status_code == 404
    assert _dumped_by(httpx.get(f"{world.server.url}/", headers={"Host": "gone.b2.test"})) is None
    # Free again: the operator may route it now, and b may not.
    resp = world.b.post(ROUTES, json={"host": "gone.b2.test", "function": "dump"})
    _refused(resp)


def test_the_operator_routes_only_hosts_no_tenant_has(world: World) -> None:
    deployed(world.operator, "opdump", DUMP, spec={"visibility": "public"})
    for host in ("shop.test", "x.b.test", "*.test", "*.b.test"):
        resp = world.operator.post(ROUTES, json={"host": host, "function": "opdump"})
        assert _refused(resp) == (
            f"host {host} (or a host it covers) is assigned to a tenant namespace; "
            "see wasmlet namespace hosts ls"
        )
    free = world.operator.post(ROUTES, json={"host": "free.test", "function": "opdump"})
    assert free.status_code == 201, free.text
    # The operator may route a tenant's host for the tenant's own function.
    for_a = world.operator.post(
        ROUTES, json={"host": "shop.test", "path": "/op", "function": "shopa~dump"}
    )
    assert for_a.status_code == 201, for_a.text
    try:
        got = httpx.get(f"{world.server.url}/", headers={"Host": "free.test"})
        assert got.status_code == 200 and _dumped_by(got) is None  # the operator's guest
        assert "PATH_INFO=/" in got.text.splitlines()
    finally:
        world.operator.delete(f"{ROUTES}/{free.json()['id']}")
        world.operator.delete(f"{ROUTES}/{for_a.json()['id']}")


def test_the_operator_clears_a_route_that_keeps_a_host_from_its_owner(world: World) -> None:
    """A tenant route from before host assignments: the operator finds it named in the
    refusal, deletes it, and assigns the host."""
    engine = make_engine(f"sqlite:///{(world.server.data_dir / 'wasmlet.db').resolve()}")
    store = RouteStore(make_sessionmaker(engine))
    old = store.add(
        host="legacy.test", path="/", methods=[], function="shopb~dump", strip_prefix=False
    )
    engine.dispose()
    ChangeSignal(world.server.data_dir).bump()
    resp = world.operator.post(_hosts("shopa"), json={"patterns": ["legacy.test"]})
    assert resp.status_code == 409 and f"({old.id})" in resp.text, resp.text
    assert world.operator.get(f"{ROUTES}/{old.id}").json()["function"] == "shopb~dump"
    assert world.a.get(f"{ROUTES}/{old.id}").status_code == 404  # tenants: only their own
    assert world.operator.delete(f"{ROUTES}/{old.id}").status_code == 200
    resp = world.operator.post(_hosts("shopa"), json={"patterns": ["legacy.test"]})
    assert resp.status_code == 200, resp.text
    removed = world.operator.delete(_hosts("shopa"), params={"pattern": "legacy.test"})
    assert removed.status_code == 200, removed.text
