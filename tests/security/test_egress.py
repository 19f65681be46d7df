"""Attack: a guest aims its outbound HTTP at the host's loopback, the platform itself or a
private address (the issue's egress limit).

Real servers, real guests: examples/http-plugin fetch.wasm (Extism `http_request`, built
from fetch.c) and the Otoroshi geo example (`proxy_http_call`), against loopback servers
the tests start. By default every spelling of a loopback address is refused before any
byte reaches it; the operator allows loopback for the whole node (WASMLET_EGRESS_ALLOW)
or for one namespace (its quota), and even then a redirect hop or the platform's own
listener is checked again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.support import EXAMPLES, deploy, unique
from tests.helpers import ServerProcess
from tests.security.support import client_with, mint_key
from tests.security.upstreams import Upstream, upstream

pytestmark = pytest.mark.integration

FETCH = EXAMPLES / "http-plugin" / "fetch.wasm"
GEO = EXAMPLES / "geo" / "geo.wasm"
# A name no DNS knows, resolved to loopback by the operator's table: a public-looking name
# that lands on 127.0.0.1 (as a rebinding DNS server would make it).
PUBLIC_NAME = "api.public-looking.test"
# A name with two addresses, the second one refused where only 127.0.0.1 is allowed.
SPLIT_NAME = "split.test"
HOSTS = {"WASMLET_EGRESS_HOSTS": f"{PUBLIC_NAME}=127.0.0.1,{SPLIT_NAME}=127.0.0.1|127.0.0.2"}

# Every way of writing the IPv4 loopback upstream's address in a URL.
V4_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "localhost",
    "localhost.",
    "LOCALHOST",
    "LocalHost.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The node's default policy: nothing but public addresses."""
    with ServerProcess(tmp_path_factory.mktemp("egress") / "data", env=HOSTS) as proc:
        yield proc


@pytest.fixture(scope="module")
def proxy() -> Iterator[Upstream]:
    """A proxy named in the open server's environment: no guest request may go through it
    (it would stand between the checked address and the connection)."""
    with upstream("127.0.0.1") as found:
        yield found


@pytest.fixture(scope="module")
def open_server(
    tmp_path_factory: pytest.TempPathFactory, proxy: Upstream
) -> Iterator[ServerProcess]:
    """A node whose operator allows loopback."""
    env = {**HOSTS, "WASMLET_EGRESS_ALLOW": "127.0.0.0/8,::1"}
    env.update({"HTTP_PROXY": proxy.url("/"), "http_proxy": proxy.url("/")})
    with ServerProcess(tmp_path_factory.mktemp("egress-open") / "data", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def v4() -> Iterator[Upstream]:
    with upstream("127.0.0.1") as found:
        yield found


@pytest.fixture(scope="module")
def v6() -> Iterator[Upstream]:
    with upstream("::1") as found:
        yield found


def fetcher(client: httpx.Client) -> str:
    """fetch.wasm allowed to reach any host by its own allowed_hosts: only the egress
    policy stands in the way."""
    name = unique("fetch")
    resp = deploy(client, name, FETCH, abi="extism", export="fetch", allowed_host=["*"])
    assert resp.status_code == 201, resp.text
    return name


def fetch(client: httpx.Client, name: str, url: str) -> httpx.Response:
    return client.post(f"/api/v1/functions/{name}/invoke", content=url.encode())


def records(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/functions/{name}/invocations")
    assert resp.status_code == 200, resp.text
    return resp.json()["invocations"]  # newest first


def assert_denied(client: httpx.Client, name: str, url: str, why: str = "") -> str:
    """The guest's request is refused by the egress policy, visibly and on record."""
    resp = fetch(client, name, url)
    assert resp.status_code == 500, resp.text
    error = resp.json()["error"]
    assert error["code"] == "guest_error", error
    assert "denied by the egress policy" in error["message"], error
    assert why in error["message"], error
    calls = records(client, name)[0]["http_calls"]
    assert calls and calls[-1]["status"] == 0, calls
    assert "denied by the egress policy" in calls[-1]["error"], calls
    return error["message"]


def reached(client: httpx.Client, name: str, url: str) -> None:
    resp = fetch(client, name, url)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": 200, "length": 23, "body": "hello from the upstream"}


@pytest.fixture(scope="module")
def default_fetch(server: ServerProcess) -> str:
    with server.client() as client:
        return fetcher(client)


@pytest.fixture(scope="module")
def open_fetch(open_server: ServerProcess) -> str:
    with open_server.client() as client:
        return fetcher(client)


@pytest.mark.parametrize("spelling", V4_SPELLINGS)
def test_every_spelling_of_loopback_is_refused_by_default(
    server: ServerProcess, default_fetch: str, v4: Upstream, spelling: str
) -> None:
    before = len(v4.seen)
    with server.client() as client:
        assert_denied(client, default_fetch, v4.url(host=spelling), "loopback")
    assert len(v4.seen) == before  # not one byte reached it


def test_ipv6_loopback_and_unspecified_are_refused_by_default(
    server: ServerProcess, default_fetch: str, v4: Upstream, v6: Upstream
) -> None:
    with server.client() as client:
        assert_denied(client, default_fetch, v6.url(), "loopback")
        assert_denied(client, default_fetch, v6.url(host="[::]"), "unspecified")
        # 0.0.0.0 reaches this machine's listeners on Linux
        assert_denied(client, default_fetch, v4.url(host="0.0.0.0"), "unspecified")
    assert v4.seen == [] and v6.seen == []


def test_a_public_looking_name_that_resolves_to_loopback_is_refused(
    server: ServerProcess, default_fetch: str, v4: Upstream
) -> None:
    before = len(v4.seen)
    with server.client() as client:
        message = assert_denied(client, default_fetch, v4.url(host=PUBLIC_NAME), "127.0.0.1")
    assert "loopback" in message
    assert len(v4.seen) == before


@pytest.mark.parametrize("spelling", V4_SPELLINGS)
def test_the_operator_allows_loopback_for_the_node(
    open_server: ServerProcess, open_fetch: str, v4: Upstream, proxy: Upstream, spelling: str
) -> None:
    before = len(v4.seen)
    with open_server.client() as client:
        reached(client, open_fetch, v4.url(host=spelling))
    assert len(v4.seen) == before + 1
    assert proxy.seen == []  # straight to the checked address


def test_allowed_loopback_still_excludes_unspecified(
    open_server: ServerProcess, open_fetch: str, v4: Upstream, v6: Upstream
) -> None:
    with open_server.client() as client:
        reached(client, open_fetch, v6.url())
        assert_denied(client, open_fetch, v4.url(host="0.0.0.0"), "unspecified")


def test_the_connection_goes_to_the_checked_address_under_the_name(
    open_server: ServerProcess, open_fetch: str, v4: Upstream, proxy: Upstream
) -> None:
    """No DNS resolves PUBLIC_NAME: reaching the upstream proves the request connected to
    the address the policy checked, and the upstream still sees the name as Host."""
    with open_server.client() as client:
        reached(client, open_fetch, v4.url(host=PUBLIC_NAME))
    assert v4.seen[-1] == (f"{PUBLIC_NAME}:{v4.port}", "/hello")
    assert proxy.seen == []


def test_the_platforms_own_listener_is_refused_even_with_loopback_allowed(
    open_server: ServerProcess, open_fetch: str, v4: Upstream
) -> None:
    own = f"http://127.0.0.1:{open_server.port}/healthz"
    with open_server.client() as client:
        assert_denied(client, open_fetch, own, "own listener")
        assert_denied(client, open_fetch, own.replace("127.0.0.1", "localhost"), "own listener")
        # nor through a redirect from an allowed upstream
        assert_denied(client, open_fetch, v4.url(f"/to?{own}"), "own listener")


def test_a_namespace_override_allows_loopback_for_that_tenant_only(
    server: ServerProcess, v4: Upstream
) -> None:
    with server.client() as operator:
        resp = operator.put(
            "/api/v1/namespaces/egress-a/quota", json={"egress_allow": ["127.0.0.0/8"]}
        )
        assert resp.status_code == 200, resp.text
        a_key, b_key = mint_key(operator, "egress-a"), mint_key(operator, "egress-b")
        theirs = fetcher(operator)
        assert_denied(operator, theirs, v4.url(), "loopback")  # the node's default
    with client_with(server, a_key) as a, client_with(server, b_key) as b:
        a_fetch, b_fetch = fetcher(a), fetcher(b)
        reached(a, a_fetch, v4.url())
        assert_denied(b, b_fetch, v4.url(), "loopback")


def test_a_namespace_may_be_allowed_a_name_rather_than_an_address(
    server: ServerProcess, v4: Upstream
) -> None:
    with server.client() as operator:
        resp = operator.put(
            "/api/v1/namespaces/egress-n/quota", json={"egress_allow": ["localhost"]}
        )
        assert resp.status_code == 200, resp.text
        key = mint_key(operator, "egress-n")
    with client_with(server, key) as tenant:
        name = fetcher(tenant)
        reached(tenant, name, v4.url(host="localhost"))
        assert_denied(tenant, name, v4.url(), "loopback")  # the address itself is not


def test_every_address_of_a_name_must_pass(server: ServerProcess, v4: Upstream) -> None:
    """SPLIT_NAME stands for 127.0.0.1 (allowed to this tenant) and 127.0.0.2 (not)."""
    with server.client() as operator:
        resp = operator.put(
            "/api/v1/namespaces/egress-s/quota", json={"egress_allow": ["127.0.0.1/32"]}
        )
        assert resp.status_code == 200, resp.text
        key = mint_key(operator, "egress-s")
    before = len(v4.seen)
    with client_with(server, key) as tenant:
        name = fetcher(tenant)
        assert_denied(tenant, name, v4.url(host=SPLIT_NAME), "127.0.0.2")
    assert len(v4.seen) == before


def test_a_redirect_to_a_denied_address_is_refused_at_the_hop(
    server: ServerProcess, v4: Upstream
) -> None:
    """The tenant may reach 127.0.0.1 alone; its upstream redirects to 127.0.0.2, where
    another server listens: the hop is checked and refused."""
    with upstream("127.0.0.2") as other:
        with server.client() as operator:
            resp = operator.put(
                "/api/v1/namespaces/egress-r/quota", json={"egress_allow": ["127.0.0.1/32"]}
            )
            assert resp.status_code == 200, resp.text
            key = mint_key(operator, "egress-r")
        with client_with(server, key) as tenant:
            name = fetcher(tenant)
            reached(tenant, name, v4.url())
            before = len(v4.seen)
            message = assert_denied(tenant, name, v4.url(f"/to?{other.url()}"), "127.0.0.2")
            assert "loopback" in message
            assert len(v4.seen) == before + 1  # the first hop was made, the second not
            calls = records(tenant, name)[0]["http_calls"]
            assert calls[-1]["host"] == "127.0.0.1"  # the request the guest made
        assert other.seen == []


def test_otoroshi_proxy_http_call_is_held_to_the_policy(
    server: ServerProcess, open_server: ServerProcess, v4: Upstream
) -> None:
    """The geo example asks its address API (its config `upstream_url`) on loopback."""

    def geo(client: httpx.Client) -> str:
        name = unique("geo")
        resp = deploy(
            client, name, GEO, abi="otoroshi", capability=["http", "kv"],
            config=[f"upstream_url={v4.url('')}"],
        )  # fmt: skip
        assert resp.status_code == 201, resp.text
        return name

    before = len(v4.seen)
    with server.client() as client:
        name = geo(client)
        resp = client.get(f"/fn/{name}/search", params={"q": "Paris"})
        assert resp.status_code == 403, resp.text  # the guest sees the refusal as a 403
        assert "denied by the egress policy" in resp.text
        calls = records(client, name)[0]["http_calls"]
        assert "denied by the egress policy" in calls[-1]["error"], calls
    assert len(v4.seen) == before
    with open_server.client() as client:
        resp = client.get(f"/fn/{geo(client)}/search", params={"q": "Paris"})
        assert resp.status_code == 200, resp.text
    assert v4.seen[-1][1] == "/search?q=Paris"
