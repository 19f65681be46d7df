"""Break 3: platform credentials never reach a guest.

Two guests built from C show everything they receive: a wasi-cgi command printing its
whole environment (HTTP_AUTHORIZATION, HTTP_X_API_KEY, ...) and stdin, and an Otoroshi
plugin answering with its whole JSON context (`request.headers`, `raw_request.headers`).
Every entry (the invoke API, /fn/NAME, /fn/ns~name, a host route, a host-less route, the
WasmEngine /function/invoke) is called with wasmlet keys spelled every way a client may
spell them, on a server with the HTTP fast lane and on one without it; the key's text
must appear nowhere in what the guest got back to us, while a function's own
Authorization values still arrive.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.api.support import FIXTURES, deployed, metric_value
from tests.helpers import ServerProcess
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration

CGI = FIXTURES / "cgi_dump.wasm"  # tests/fixtures/src/cgi_dump.c
OTOROSHI = FIXTURES / "otoroshi_dump.wasm"  # tests/fixtures/src/otoroshi_dump.c
OWN = "Bearer own-token-abc"  # a function's own credentials: not ours to strip
OWN_BASIC = "Basic b3duOnB3"
OWN_API_KEY = "own-api-key-xyz"
Headers = list[tuple[str, str]]


def spellings(key: str) -> list[Headers]:
    """Ways to send `key`, some next to the function's own credentials (OWN...)."""
    return [
        [("Authorization", f"Bearer {key}"), ("Authorization", OWN)],
        [("authorization", f"bearer   {key}"), ("AUTHORIZATION", OWN_BASIC)],
        [("X-API-Key", f"   {key}   "), ("x-api-key", OWN_API_KEY)],
        [("X-Api-Key", key), ("Authorization", OWN)],
        [("Authorization", f"Bearer\t{key}")],
        [("Authorization", f"{OWN}, Bearer {key}")],
        [("Authorization", key), ("x-api-key", f"Bearer {key}")],
    ]


def own_values(headers: Headers, abi: str) -> list[str]:
    """The function's own values among `headers` that its guest must still get. A CGI
    guest never gets Authorization at all (RFC 3875 withholds it; abi/wasi_cgi.py)."""
    own = (OWN, OWN_BASIC, OWN_API_KEY)
    return [
        value
        for name, value in headers
        if value in own and not (abi == "wasi-cgi" and name.lower() == "authorization")
    ]


# The spellings the platform itself accepts as a key (the rest must still be stripped).
AUTHENTICATING = (0, 1, 2, 3)


def raw_request(
    server: ServerProcess, method: str, path: str, headers: Headers, body: bytes, host: str
) -> tuple[int, str]:
    """One request as bytes on a socket: header names and values exactly as given."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers]
    head += [f"Content-Length: {len(body)}", "X-Probe: dump-marker", "", ""]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall("\r\n".join(head).encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks).decode("latin-1")
    return int(reply.split(" ", 2)[1]), reply


@dataclass
class World:
    server: ServerProcess
    lane: str  # which lane serves invocations: "fast" (the default) or "asgi"
    operator: str  # the operator's admin key
    tenant: str  # the tenant's namespace
    tenant_key: str  # its admin key
    routes: dict[tuple[str, str], tuple[str, str]]  # (abi, visibility) -> (host, path)


@pytest.fixture(scope="module", params=["fast", "asgi"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    lane: str = request.param
    env = {} if lane == "fast" else {"WASMLET_FAST_LANE": "false"}
    with ServerProcess(tmp_path_factory.mktemp(f"strip-{lane}") / "data", env=env) as server:
        tenant = "t" + uuid.uuid4().hex[:8]
        with server.client() as op:
            tenant_key = mint_key(op, tenant)
            routes = {}
            for abi, module in (("wasi-cgi", CGI), ("otoroshi", OTOROSHI)):
                for visibility in ("private", "public"):
                    name = f"dump-{abi}-{visibility}"
                    deployed(op, name, module, abi=abi, visibility=visibility)
                    host, path = f"{name}.test", f"/{name}"
                    for route in ({"host": host, "path": "/"}, {"path": path}):
                        resp = op.post("/api/v1/routes", json={**route, "function": name})
                        assert resp.status_code == 201, resp.text
                    routes[abi, visibility] = (host, path)
        with client_with(server, tenant_key) as t:
            for abi, module in (("wasi-cgi", CGI), ("otoroshi", OTOROSHI)):
                for visibility in ("private", "public"):
                    deployed(t, f"dump-{abi}-{visibility}", module, abi=abi, visibility=visibility)
        yield World(server, lane, server.admin_key(), tenant, tenant_key, routes)


# An entry: (world, abi, visibility, key) -> (method, path, host, body, the key to send).
Call = tuple[str, str, str, bytes, str]
Entry = Callable[[World, str, str], Call]


def _tenant_name(w: World, abi: str, visibility: str) -> str:
    # A key the platform does not recognise resolves bare names in `default`: name the
    # tenant's function in full then, so that the request reaches the guest either way.
    return f"{w.tenant}~dump-{abi}-{visibility}"


def api_invoke(w: World, abi: str, visibility: str) -> Call:
    name = _tenant_name(w, abi, visibility)
    return "POST", f"/api/v1/functions/{name}/invoke", "localhost", b"body", w.tenant_key


def fn_bare(w: World, abi: str, visibility: str) -> Call:
    # The operator's own function by its bare name, with the operator's admin key.
    return "POST", f"/fn/dump-{abi}-{visibility}/x", "localhost", b"body", w.operator


def fn_qualified(w: World, abi: str, visibility: str) -> Call:
    name = _tenant_name(w, abi, visibility)
    return "POST", f"/fn/{name}/x", "localhost", b"body", w.tenant_key


def host_route(w: World, abi: str, visibility: str) -> Call:
    host, _ = w.routes[abi, visibility]
    return "POST", "/anything", host, b"body", w.operator


def path_route(w: World, abi: str, visibility: str) -> Call:
    _, path = w.routes[abi, visibility]
    return "POST", f"{path}/x", "localhost", b"body", w.operator


def compat(w: World, abi: str, visibility: str) -> Call:
    body = json.dumps({"function_name": _tenant_name(w, abi, visibility), "args": []})
    return "POST", "/function/invoke", "localhost", body.encode(), w.tenant_key


ENTRIES: dict[str, Entry] = {
    "api": api_invoke,
    "fn": fn_bare,
    "fn-ns": fn_qualified,
    "host-route": host_route,
    "path-route": path_route,
    "compat": compat,
}


def _lane_count(client: httpx.Client, lane: str) -> float:
    return metric_value(client, "wasmlet_http_invocations_total", lane=lane)


@pytest.mark.parametrize("abi", ["wasi-cgi", "otoroshi"])
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_no_key_reaches_the_guest(world: World, entry: str, abi: str) -> None:
    server = world.server
    lane = "asgi" if entry == "compat" else world.lane  # compat always takes ASGI
    # A call of each first: what admission has to load once (a registry reload after the
    # deploys, a namespace's quota) is waited for on the ASGI path.
    for visibility in ("private", "public"):
        method, path, host, body, key = ENTRIES[entry](world, abi, visibility)
        raw_request(server, method, path, spellings(key)[0], body, host)
    with server.client() as op:
        before = _lane_count(op, lane)
    requests = 0
    for visibility in ("private", "public"):
        method, path, host, body, key = ENTRIES[entry](world, abi, visibility)
        secret = key.split("_", 2)[2]
        for index, headers in enumerate(spellings(key)):
            if visibility == "private" and index not in AUTHENTICATING:
                continue  # not a key to the platform: a private function stays closed
            status, reply = raw_request(server, method, path, headers, body, host)
            requests += 1
            case = f"{entry} {abi} {visibility} spelling #{index}"
            assert status == 200, f"{case}: {reply}"
            assert "dump-marker" in reply, f"{case}: the guest did not show its headers"
            assert key not in reply and secret not in reply, f"{case} leaked the key: {reply}"
            for value in own_values(headers, abi):
                assert value in reply, f"{case}: the function's own {value!r} was stripped"
    with server.client() as op:
        assert _lane_count(op, lane) >= before + requests  # the lane under test served them


def test_the_query_string_is_no_place_for_a_key(world: World) -> None:
    """Keys are read from headers only, so a key a client puts in the query string (which
    guests do see) opens nothing: there is no query-string credential to strip."""
    with client_with(world.server, None) as anon:
        for param in ("api_key", "apikey", "key", "token", "access_token"):
            query = {param: world.operator}
            assert anon.get("/api/v1/functions", params=query).status_code == 401
            private = f"/fn/{world.tenant}~dump-wasi-cgi-private"
            assert anon.post(private, params={param: world.tenant_key}).status_code == 404
