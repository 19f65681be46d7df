"""The operator KV API against a real server: SQLite by default, Redis when configured.

One module-scoped server (small key and value caps) serves the tests that share it; every
test works in namespaces of its own. Persistence, Redis and Redis-down start their own.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
import sqlalchemy.exc

from tests.api.support import assert_error, unique
from tests.helpers import ServerProcess, free_port
from wasmlet.api.kv import _store_errors
from wasmlet.errors import Overloaded

pytestmark = pytest.mark.integration

KV = "/api/v1/kv"
MAX_KEY = 64
MAX_VALUE = 4096
CAPS = {"WASMLET_KV_MAX_KEY_BYTES": str(MAX_KEY), "WASMLET_KV_MAX_VALUE_BYTES": str(MAX_VALUE)}
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("kv") / "data", env=CAPS) as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def ns() -> str:
    """A function namespace no other test uses."""
    return unique("kvfn")


def put(client: httpx.Client, ns: str, key: str, value: bytes, **params: object) -> httpx.Response:
    return client.put(f"{KV}/{ns}/{key}", content=value, params=params)


def listed(client: httpx.Client, ns: str, **params: object) -> list[str]:
    resp = client.get(f"{KV}/{ns}/keys", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["namespace"] == ns
    return body["keys"]


# -- round trip ------------------------------------------------------------------------------


def test_round_trip(client: httpx.Client, ns: str) -> None:
    resp = put(client, ns, "greeting", b"hello")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"namespace": ns, "key": "greeting", "size": 5, "ttl_ms": None}

    resp = client.get(f"{KV}/{ns}/greeting")
    assert resp.status_code == 200
    assert resp.content == b"hello"
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["x-wasmlet-ttl-ms"] == "-1"
    assert listed(client, ns) == ["greeting"]

    assert put(client, ns, "greeting", b"again").status_code == 200
    assert client.get(f"{KV}/{ns}/greeting").content == b"again"

    assert client.delete(f"{KV}/{ns}/greeting").json() == {"deleted": True}
    assert client.delete(f"{KV}/{ns}/greeting").json() == {"deleted": False}
    assert_error(client.get(f"{KV}/{ns}/greeting"), 404, "not_found", "greeting")
    assert listed(client, ns) == []


def test_binary_values_and_empty_values(client: httpx.Client, ns: str) -> None:
    blob = bytes(range(256)) * 4
    assert put(client, ns, "blob", blob).json()["size"] == len(blob)
    assert client.get(f"{KV}/{ns}/blob").content == blob
    assert put(client, ns, "empty", b"").json()["size"] == 0
    resp = client.get(f"{KV}/{ns}/empty")
    assert resp.status_code == 200
    assert resp.content == b""


def test_scopes_global_and_function(client: httpx.Client, ns: str) -> None:
    other = unique("kvfn")
    key = f"k-{uuid.uuid4().hex[:8]}"
    put(client, "global", key, b"g")
    put(client, ns, key, b"mine")
    put(client, other, key, b"theirs")
    assert client.get(f"{KV}/global/{key}").content == b"g"
    assert client.get(f"{KV}/{ns}/{key}").content == b"mine"
    assert client.get(f"{KV}/fn:{ns}/{key}").content == b"mine"  # the same scope, spelled out
    assert client.get(f"{KV}/{other}/{key}").content == b"theirs"
    assert key in listed(client, "global")
    # A function called "global" still has a scope of its own: fn:global.
    put(client, "fn:global", key, b"the function")
    assert client.get(f"{KV}/global/{key}").content == b"g"
    assert client.get(f"{KV}/fn:global/{key}").content == b"the function"
    client.delete(f"{KV}/global/{key}")
    client.delete(f"{KV}/fn:global/{key}")


# -- routing of keys with slashes ------------------------------------------------------------


def test_keys_may_contain_slashes(client: httpx.Client, ns: str) -> None:
    for key in ["a/b", "a/b/c", "a/keys", "x/incr", "keys", "incr"]:
        assert put(client, ns, key, key.encode()).json()["key"] == key
    assert listed(client, ns) == sorted(["a/b", "a/b/c", "a/keys", "x/incr", "keys", "incr"])
    assert client.get(f"{KV}/{ns}/a/b/c").content == b"a/b/c"
    assert client.get(f"{KV}/{ns}/a/keys").content == b"a/keys"
    assert client.get(f"{KV}/{ns}/x/incr").content == b"x/incr"  # GET never increments
    assert client.get(f"{KV}/{ns}/incr").content == b"incr"
    assert client.get(f"{KV}/{ns}/a%2Fb").content == b"a/b"  # an encoded slash is a slash
    # GET .../keys is the listing, whatever keys exist.
    assert client.get(f"{KV}/{ns}/keys").json()["namespace"] == ns
    assert client.delete(f"{KV}/{ns}/keys").json() == {"deleted": True}
    assert client.delete(f"{KV}/{ns}/x/incr").json() == {"deleted": True}
    assert listed(client, ns, pattern="a/*") == ["a/b", "a/b/c", "a/keys"]


def test_incr_route_takes_the_last_segment(client: httpx.Client, ns: str) -> None:
    assert client.post(f"{KV}/{ns}/a/incr/incr", json={"by": 2}).json() == {"value": 2}
    assert client.get(f"{KV}/{ns}/a/incr").content == b"2"
    assert client.post(f"{KV}/{ns}/incr/incr").json() == {"value": 1}
    assert client.get(f"{KV}/{ns}/incr").content == b"1"
    assert listed(client, ns) == ["a/incr", "incr"]
    # POST only increments: a POST that does not end in /incr is not a route.
    assert_error(client.post(f"{KV}/{ns}/a"), 405, "invalid_request")


def test_dot_segment_keys(client: httpx.Client, ns: str) -> None:
    """`..` inside a key is text, not a path step, when the key's slashes are encoded."""
    assert put(client, ns, "a%2F..%2Fb", b"dots").json()["key"] == "a/../b"
    assert client.get(f"{KV}/{ns}/a%2F..%2Fb").content == b"dots"
    # A key that is only dots is sent with its dots encoded, or clients resolve it away.
    assert put(client, ns, "%2E%2E", b"up").json()["key"] == ".."
    assert client.get(f"{KV}/{ns}/%2E%2E").content == b"up"
    assert listed(client, ns) == ["..", "a/../b"]


# -- TTLs ------------------------------------------------------------------------------------


def test_ttl(client: httpx.Client, ns: str) -> None:
    resp = put(client, ns, "short", b"x", ttl_ms=300)
    assert resp.json()["ttl_ms"] == 300
    left = int(client.get(f"{KV}/{ns}/short").headers["x-wasmlet-ttl-ms"])
    assert 0 < left <= 300
    put(client, ns, "long", b"x", ttl_ms=3_600_000)
    assert int(client.get(f"{KV}/{ns}/long").headers["x-wasmlet-ttl-ms"]) > 3_500_000
    deadline = time.monotonic() + 5
    while client.get(f"{KV}/{ns}/short").status_code == 200:
        assert time.monotonic() < deadline, "the key never expired"
        time.sleep(0.05)
    assert_error(client.get(f"{KV}/{ns}/short"), 404, "not_found")
    assert listed(client, ns) == ["long"]


def test_bad_ttl_is_refused(client: httpx.Client, ns: str) -> None:
    assert_error(put(client, ns, "k", b"x", ttl_ms=0), 422, "invalid_request", "ttl_ms")
    assert_error(put(client, ns, "k", b"x", ttl_ms="soon"), 422, "invalid_request", "ttl_ms")
    assert_error(client.get(f"{KV}/{ns}/k"), 404, "not_found")


def test_if_absent(client: httpx.Client, ns: str) -> None:
    assert put(client, ns, "lock", b"a", if_absent="true").status_code == 200
    assert_error(put(client, ns, "lock", b"b", if_absent="true"), 409, "conflict", "exists")
    assert client.get(f"{KV}/{ns}/lock").content == b"a"


# -- caps and validation ---------------------------------------------------------------------


def test_key_cap(client: httpx.Client, ns: str) -> None:
    assert put(client, ns, "k" * MAX_KEY, b"x").status_code == 200
    assert_error(put(client, ns, "k" * (MAX_KEY + 1), b"x"), 422, "invalid_request", "64-byte")
    # The cap counts UTF-8 bytes: 32 two-byte characters fit, 33 do not.
    assert put(client, ns, "é" * (MAX_KEY // 2), b"x").status_code == 200
    assert_error(put(client, ns, "é" * (MAX_KEY // 2 + 1), b"x"), 422, "invalid_request")
    assert_error(client.get(f"{KV}/{ns}/{'k' * (MAX_KEY + 1)}"), 422, "invalid_request")
    assert_error(client.post(f"{KV}/{ns}//incr"), 422, "invalid_request", "empty")
    assert_error(put(client, ns, "nul%00key", b"x"), 422, "invalid_request", "NUL")


def test_value_cap(client: httpx.Client, ns: str) -> None:
    assert put(client, ns, "full", b"v" * MAX_VALUE).json()["size"] == MAX_VALUE
    msg = assert_error(put(client, ns, "over", b"v" * (MAX_VALUE + 1)), 413, "payload_too_large")
    assert str(MAX_VALUE) in msg

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while reading
        for _ in range(10):
            yield b"v" * 1000

    resp = client.put(f"{KV}/{ns}/chunked", content=chunks())
    assert_error(resp, 413, "payload_too_large")
    assert listed(client, ns) == ["full"]


@pytest.mark.parametrize("bad", ["Upper", "-dash", "sp%20ace", "fn:", "fn:Bad", "a..b", "x" * 64])
def test_namespace_validation(client: httpx.Client, bad: str) -> None:
    for resp in (
        client.get(f"{KV}/{bad}/keys"),
        client.get(f"{KV}/{bad}/k"),
        client.put(f"{KV}/{bad}/k", content=b"x"),
        client.delete(f"{KV}/{bad}/k"),
        client.post(f"{KV}/{bad}/k/incr"),
    ):
        assert_error(resp, 422, "invalid_request", "namespace")


# -- listing and incr ------------------------------------------------------------------------


def test_list_pattern_and_limit(client: httpx.Client, ns: str) -> None:
    for key in ["user:1", "user:2", "user:10", "session:1", "100%", "a_b", "axb"]:
        put(client, ns, key, b"1")
    assert listed(client, ns, pattern="user:*") == ["user:1", "user:10", "user:2"]
    assert listed(client, ns, pattern="user:?") == ["user:1", "user:2"]
    assert listed(client, ns, pattern="a_b") == ["a_b"]
    assert listed(client, ns, pattern="100%") == ["100%"]
    assert listed(client, ns, limit=2) == ["100%", "a_b"]
    assert_error(client.get(f"{KV}/{ns}/keys", params={"limit": 0}), 422, "invalid_request")


def test_incr(client: httpx.Client, ns: str) -> None:
    assert client.post(f"{KV}/{ns}/n/incr", json={"by": 5}).json() == {"value": 5}
    assert client.post(f"{KV}/{ns}/n/incr").json() == {"value": 6}  # no body: by 1
    assert client.post(f"{KV}/{ns}/n/incr", json={"by": -10}).json() == {"value": -4}
    assert client.get(f"{KV}/{ns}/n").content == b"-4"
    put(client, ns, "text", b"abc")
    assert_error(client.post(f"{KV}/{ns}/text/incr", json={"by": 1}), 409, "conflict", "integer")
    put(client, ns, "max", str(2**63 - 1).encode())
    assert_error(client.post(f"{KV}/{ns}/max/incr"), 409, "conflict")
    for bad in ({"by": 1.5}, {"by": "5"}, {"by": True}, {"by": 2**63}, [1]):
        assert_error(client.post(f"{KV}/{ns}/n/incr", json=bad), 422, "invalid_request")
    assert client.get(f"{KV}/{ns}/n").content == b"-4"


def test_openapi_describes_the_kv_routes(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    listing = paths[f"{KV}/{{namespace}}/keys"]["get"]
    assert listing["tags"] == ["kv"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KeyList"
    }
    value = paths[f"{KV}/{{namespace}}/{{key}}"]
    assert "application/octet-stream" in value["get"]["responses"]["200"]["content"]
    assert "X-Wasmlet-TTL-Ms" in value["get"]["responses"]["200"]["headers"]
    assert "application/octet-stream" in value["put"]["requestBody"]["content"]
    assert value["put"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Stored"
    }
    assert paths[f"{KV}/{{namespace}}/{{key}}/incr"]["post"]["tags"] == ["kv"]
    assert set(schema["components"]["schemas"]["Stored"]["properties"]) == {
        "namespace",
        "key",
        "size",
        "ttl_ms",
    }


# -- persistence and backends ----------------------------------------------------------------


def test_values_survive_a_restart(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory(env=CAPS)
    ns = unique("kvfn")
    with srv.client() as c:
        put(c, ns, "kept", b"durable")
        put(c, "global", "kept-ttl", b"x", ttl_ms=3_600_000)
        c.post(f"{KV}/{ns}/count/incr", json={"by": 41})
    srv.restart()
    with srv.client() as c:
        assert c.get(f"{KV}/{ns}/kept").content == b"durable"
        assert int(c.get(f"{KV}/global/kept-ttl").headers["x-wasmlet-ttl-ms"]) > 3_500_000
        assert c.post(f"{KV}/{ns}/count/incr").json() == {"value": 42}
        assert listed(c, ns) == ["count", "kept"]


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis not reachable at {REDIS_URL} (CI requires Redis): {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    yield client
    client.close()


def test_redis_backend(
    server_factory: Callable[..., ServerProcess], redis_client: redis.Redis
) -> None:
    srv = server_factory(env={**CAPS, "WASMLET_REDIS_URL": REDIS_URL})
    ns = unique("kvfn")
    scope = f"fn:{ns}"  # stored at <prefix><scope length>:<scope>:<key>
    names = [f"wasmlet:kv:{len(scope)}:{scope}:{k}".encode() for k in ("a/b", "n", "t")]
    try:
        with srv.client() as c:
            assert put(c, ns, "a/b", b"in redis").status_code == 200
            assert redis_client.get(names[0]) == b"in redis"
            redis_client.set(names[1], b"10")  # written behind the server's back
            assert c.post(f"{KV}/{ns}/n/incr", json={"by": 5}).json() == {"value": 15}
            assert redis_client.get(names[1]) == b"15"
            put(c, ns, "t", b"x", ttl_ms=60_000)
            assert 50_000 < redis_client.pttl(names[2]) <= 60_000
            assert listed(c, ns) == ["a/b", "n", "t"]
            put(c, ns, "text", b"abc")
            assert_error(c.post(f"{KV}/{ns}/text/incr"), 409, "conflict")
            assert c.delete(f"{KV}/{ns}/a/b").json() == {"deleted": True}
            assert redis_client.exists(names[0]) == 0
            assert_error(put(c, ns, "big", b"v" * (MAX_VALUE + 1)), 413, "payload_too_large")
        with sqlite3.connect(srv.data_dir / "wasmlet.db") as db:  # the SQL store is unused
            assert db.execute("SELECT count(*) FROM kv_entries").fetchone() == (0,)
        srv.restart()
        with srv.client() as c:
            assert c.get(f"{KV}/{ns}/n").content == b"15"
    finally:
        leftovers = list(redis_client.scan_iter(match=f"wasmlet:kv:{len(scope)}:{scope}:*"))
        if leftovers:
            redis_client.delete(*leftovers)


def test_redis_down_is_503(server_factory: Callable[..., ServerProcess]) -> None:
    srv = server_factory(env={"WASMLET_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    ns = unique("kvfn")
    with srv.client() as c:
        for resp in (
            c.get(f"{KV}/{ns}/k"),
            put(c, ns, "k", b"x"),
            c.delete(f"{KV}/{ns}/k"),
            c.get(f"{KV}/{ns}/keys"),
            c.post(f"{KV}/{ns}/k/incr"),
        ):
            assert_error(resp, 503, "overloaded", "key-value store is unavailable")
            assert resp.headers["retry-after"] == "5"
        assert c.get("/healthz").status_code == 200
    assert "Traceback" not in srv.log()


def test_database_errors_do_not_echo_values() -> None:
    """An unavailable SQL store answers 503 naming the driver's error, without SQLAlchemy's
    statement and parameters (which would hold the value being written)."""
    failure = sqlalchemy.exc.OperationalError(
        "INSERT INTO kv_entries VALUES (?)", ("top-secret",), sqlite3.OperationalError("locked")
    )
    with pytest.raises(Overloaded) as caught, _store_errors():
        raise failure
    assert caught.value.status == 503
    assert "OperationalError: locked" in caught.value.message
    assert "top-secret" not in caught.value.message
    assert "INSERT" not in caught.value.message
