"""Otoroshi plugins through a real server: the bundled geo example, the gateway and host
routes, deploy-time grants, failure statuses and answers on the wire.

Expected behaviour comes from EXTISM-ABI.md §6 and examples/README.md (geo).
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.api.support import (
    EXAMPLES,
    FIXTURES,
    assert_error,
    deploy,
    deployed,
    loopback_server,
    unique,
)
from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's guests call upstreams the tests start on loopback: allowed here."""
    with loopback_server(tmp_path_factory.mktemp("api")) as server:
        yield server


pytestmark = pytest.mark.integration

GEO = EXAMPLES / "geo" / "geo.wasm"
PROBE = FIXTURES / "otoroshi_probe.wat"


class _AddressApi(http.server.BaseHTTPRequestHandler):
    """A stand-in for an address search API that counts the requests it gets."""

    def do_GET(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        query = self.path.partition("?")[2]
        body = json.dumps(
            {"type": "FeatureCollection", "query": query, "served": len(self.server.seen)}  # type: ignore[attr-defined]
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def address_api() -> Iterator[tuple[str, list[str]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AddressApi)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def deploy_geo(client: httpx.Client, upstream: str) -> str:
    name = unique("geo")
    deployed(
        client,
        name,
        GEO,
        abi="otoroshi",
        capability=["http", "kv"],
        config=[f"upstream_url={upstream}"],
    )
    return name


def records(client: httpx.Client, name: str) -> list[dict]:
    resp = client.get(f"/api/v1/functions/{name}/invocations")
    assert resp.status_code == 200, resp.text
    return resp.json()["invocations"]  # newest first


def assert_cached_pair(first: httpx.Response, second: httpx.Response, query: str) -> None:
    for resp in (first, second):
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["content-length"] == str(len(resp.content))
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert first.content == second.content
    assert first.json() == {"type": "FeatureCollection", "query": query, "served": 1}


# -- the geo example ----------------------------------------------------------------------------


def test_bundled_geo_is_deployed_as_documented(client: httpx.Client) -> None:
    resp = client.get("/api/v1/functions/geo")
    assert resp.status_code == 200, resp.text
    version = resp.json()["active_version"]
    assert version["abi"] == "otoroshi"
    spec = version["spec"]
    assert spec["export"] == "call_backend"
    assert spec["capabilities"] == ["http", "kv"]
    assert spec["config"] == {"upstream_url": "http://127.0.0.1:8099"}
    assert spec["error_status"] == 400  # the otoroshi default


def test_geo_serves_the_second_search_from_its_cache(client: httpx.Client) -> None:
    with address_api() as (url, seen):
        name = deploy_geo(client, url)
        first = client.get(f"/fn/{name}/search", params={"q": "10 rue de Paris"})
        second = client.get(f"/fn/{name}/search", params={"q": "10 rue de Paris"})
        assert_cached_pair(first, second, "q=10+rue+de+Paris")
        assert seen == ["/search?q=10+rue+de+Paris"]
        # another address is another cache entry
        other = client.get(f"/fn/{name}/search", params={"q": "Lyon"})
        assert other.headers["x-cache"] == "MISS" and other.json()["served"] == 2
        assert len(seen) == 2
    hit, miss = records(client, name)[1:3]  # newest first: Lyon, the hit, the miss
    assert "cache miss, fetching " + url + "/search?q=10+rue+de+Paris" in miss["logs"]
    assert [c["status"] for c in miss["http_calls"]] == [200]
    assert not hit["http_calls"]


def test_geo_behind_a_host_route(client: httpx.Client) -> None:
    with address_api() as (url, seen):
        name = deploy_geo(client, url)
        host = f"{name}.localhost"
        resp = client.post(
            "/api/v1/routes", json={"host": host, "path": "/search", "function": name}
        )
        assert resp.status_code == 201, resp.text
        first = client.get("/search", params={"q": "Berlin"}, headers={"Host": host})
        second = client.get("/search", params={"q": "Berlin"}, headers={"Host": host})
        assert_cached_pair(first, second, "q=Berlin")
        assert seen == ["/search?q=Berlin"]
        # the same function through /fn shares the plugin map: already cached
        third = client.get(f"/fn/{name}/search", params={"q": "Berlin"})
        assert third.headers["x-cache"] == "HIT" and third.content == first.content
        assert len(seen) == 1
        client.delete(f"/api/v1/routes/{resp.json()['id']}")


def test_geo_refusals_and_upstream_down(client: httpx.Client) -> None:
    with address_api() as (url, seen):
        name = deploy_geo(client, url)
        missing_q = client.get(f"/fn/{name}/search")
        assert missing_q.status_code == 400
        assert missing_q.json() == {"error": "missing query parameter q"}
        elsewhere = client.get(f"/fn/{name}/elsewhere", params={"q": "x"})
        assert elsewhere.status_code == 404
        assert seen == []
    # the upstream is gone: the host's proxy_http_call fails the call (400 guest_error)
    resp = client.get(f"/fn/{name}/search", params={"q": "Rome"})
    assert_error(resp, 400, "guest_error", "failed")


def test_geo_needs_its_capabilities(client: httpx.Client) -> None:
    name = unique("geo-bare")
    resp = deploy(client, name, GEO, abi="otoroshi")
    message = assert_error(
        resp, 422, "invalid_request", "env.proxy_http_call", "env.proxy_plugin_map_get"
    )
    assert "env.proxy_plugin_map_set" in message
    resp = deploy(client, name, GEO, abi="otoroshi", capability=["kv"])
    message = assert_error(resp, 422, "invalid_request", "env.proxy_http_call")
    assert "proxy_plugin_map" not in message
    assert client.get(f"/api/v1/functions/{name}").status_code == 404


# -- the contract on the wire ---------------------------------------------------------------


@pytest.fixture(scope="module")
def probe(api_server) -> str:
    name = unique("oto-probe")
    with api_server.client() as c:
        deployed(c, name, PROBE, abi="otoroshi", capability=["http", "kv", "kv:global"])
    return name


def test_answers_reach_the_client(client: httpx.Client, probe: str) -> None:
    answer = {
        "status": 201,
        "headers": {
            "Content-Type": "text/plain; charset=utf-8",
            "X-Geo": "ok",
            "Content-Length": "1",
            "Connection": "close",
        },
        "body_base64": base64.b64encode("créé".encode()).decode().rstrip("="),
    }
    resp = client.post(f"/fn/{probe}/?export=reply", content=json.dumps(answer))
    assert resp.status_code == 201
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    assert resp.headers["x-geo"] == "ok"
    assert resp.headers["content-length"] == str(len("créé".encode()))
    assert resp.text == "créé"
    # bodyless statuses leave the connection usable for the next response
    for status in (204, 304):
        resp = client.post(
            f"/fn/{probe}/?export=reply", content=json.dumps({"status": status, "body": "xyz"})
        )
        assert (resp.status_code, resp.content) == (status, b"")
    resp = client.post(f"/fn/{probe}/?export=reply", content=b"<html>not json</html>")
    assert (resp.status_code, resp.content) == (200, b"")
    assert resp.headers["content-type"] == "application/json"
    # the invoke API runs the same contract
    resp = client.post(
        f"/api/v1/functions/{probe}/invoke/reply", content=json.dumps({"body_json": [1]})
    )
    assert (resp.status_code, resp.json()) == (200, [1])


def test_context_seen_through_the_gateway(client: httpx.Client, probe: str, api_server) -> None:
    resp = client.post(
        f"/fn/{probe}/some/where?x=1&x=2",
        content=b"\xff",
        headers={"X-Tag": "t1", "Cookie": "a=b"},
    )
    assert resp.status_code == 200, resp.text
    ctx = resp.json()  # the probe answers the context it received as its body
    assert ctx["request"]["url"] == f"http://127.0.0.1:{api_server.port}/some/where?x=1&x=2"
    assert ctx["raw_request"]["uri"] == "/some/where?x=1&x=2"
    assert ctx["raw_request"]["query"] == {"x": ["1", "2"]}
    assert ctx["raw_request"]["headers"]["x-tag"] == "t1"
    assert ctx["raw_request"]["cookies"][0]["name"] == "a"
    assert ctx["raw_request"]["remote"] == "127.0.0.1"
    assert ctx["request_body_bytes"] == [-1]
    assert ctx["route"]["name"] == probe


def test_failures_answer_400_guest_error(client: httpx.Client, probe: str) -> None:
    for export, mention in (
        ("trap", "unreachable"),
        ("fail_error", "probe failed"),
        ("fail_rc", "exit code: 3"),
    ):
        resp = client.post(f"/fn/{probe}/?export={export}")
        assert_error(resp, 400, "guest_error", mention)
    resp = client.post(f"/fn/{probe}/?export=reply", content=json.dumps({"status": 42}))
    assert_error(resp, 400, "guest_error", "status 42")
    # still serving after the failures
    assert client.post(f"/fn/{probe}/?export=reply", content=b"{}").status_code == 200


def test_error_status_can_be_chosen(client: httpx.Client) -> None:
    name = unique("oto-502")
    deployed(client, name, PROBE, abi="otoroshi", capability=["http", "kv", "kv:global"],
             error_status=502)  # fmt: skip
    assert_error(client.post(f"/fn/{name}/?export=trap"), 502, "guest_error", "unreachable")


def test_maps_and_datastores_outlive_calls(client: httpx.Client, probe: str) -> None:
    def run(export: str, arg: Any) -> httpx.Response:
        body = arg if isinstance(arg, str) else json.dumps(arg)
        resp = client.post(f"/fn/{probe}/?export={export}", content=body)
        assert resp.status_code == 200, resp.text
        return resp

    run("plugin_map_set", {"key": "city", "value": "Paris"})
    assert run("plugin_map_get", "city").content == b"Paris"
    assert (
        run("plugin_datastore_set", {"key": "hits", "value": "1", "ttl": 60_000}).headers[
            "x-result"
        ]
        == "1"
    )
    incr = run("plugin_datastore_incrby", {"key": "hits", "incr": 4})
    assert incr.headers["x-result"] == "5"
    pttl = int(run("plugin_datastore_pttl", "hits").headers["x-result"])
    assert 50_000 < pttl <= 60_000
    assert run("plugin_datastore_get", "hits").content == b"5"
