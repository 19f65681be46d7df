"""The secrets API against a real server: values go in and never come out, not even in errors
or the server's log; they are encrypted with the node's key and survive restarts."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.helpers import ServerProcess
from wasmlet.config import Settings
from wasmlet.host.secrets import KEY_FILE, MAX_VALUE_BYTES, SecretStore, SecretUnreadable
from wasmlet.registry.db import make_engine

pytestmark = pytest.mark.integration

API = "/api/v1/functions"


def unique(prefix: str = "sec") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def secret() -> str:
    """A value that cannot occur in any response or log by chance."""
    return f"hunter2-{uuid.uuid4().hex}"


def full_log(server: ServerProcess) -> str:
    return server.log_path.read_text(errors="replace")


def assert_not_logged(server: ServerProcess, *values: str) -> None:
    log = full_log(server)
    assert "wasmlet ready" in log  # the log being read is the server's
    for value in values:
        assert value not in log
        assert value not in server.log()


@contextmanager
def store_on(data_dir: Path, key: str | None = None) -> Iterator[SecretStore]:
    """A SecretStore of the test process on a server's data dir, as another worker has."""
    settings = Settings(data_dir=data_dir, database_url=None, secret_key=key)
    engine = make_engine(settings.db_url)
    try:
        yield SecretStore(engine, settings)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("secrets") / "data") as server:
        yield server


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def put(client: httpx.Client, name: str, key: str, value: str) -> httpx.Response:
    return client.put(f"{API}/{name}/secrets/{key}", json={"value": value})


# -- round trip ----------------------------------------------------------------------------


def test_set_list_delete_never_return_the_value(
    server: ServerProcess, client: httpx.Client
) -> None:
    name, value = unique(), secret()  # never deployed: secrets may come first

    r = put(client, name, "API_TOKEN", value)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"function", "key", "updated_at"}
    assert (body["function"], body["key"]) == (name, "API_TOKEN")
    assert value not in r.text

    put(client, name, "other.key-2", secret()).raise_for_status()
    r = client.get(f"{API}/{name}/secrets")
    assert r.status_code == 200
    listed = r.json()
    assert listed["function"] == name
    assert [s["key"] for s in listed["secrets"]] == ["API_TOKEN", "other.key-2"]
    assert all(set(s) == {"key", "updated_at"} for s in listed["secrets"])
    assert listed["secrets"][0]["updated_at"] == body["updated_at"]
    assert value not in r.text

    r = client.delete(f"{API}/{name}/secrets/API_TOKEN")
    assert r.status_code == 200 and r.json() == {"deleted": True}
    assert value not in r.text
    r = client.delete(f"{API}/{name}/secrets/API_TOKEN")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    keys = [s["key"] for s in client.get(f"{API}/{name}/secrets").json()["secrets"]]
    assert keys == ["other.key-2"]
    assert_not_logged(server, value)


def test_replacing_a_secret_keeps_one_entry(server: ServerProcess, client: httpx.Client) -> None:
    name, old, new = unique(), secret(), secret()
    first = put(client, name, "TOKEN", old).json()
    second = put(client, name, "TOKEN", new).json()
    assert second["updated_at"] >= first["updated_at"]
    listed = client.get(f"{API}/{name}/secrets").json()["secrets"]
    assert listed == [{"key": "TOKEN", "updated_at": second["updated_at"]}]
    with store_on(server.data_dir) as store:
        assert store.get(name, "TOKEN") == new
    assert_not_logged(server, old, new)


def test_empty_list_for_a_function_without_secrets(client: httpx.Client) -> None:
    name = unique()
    r = client.get(f"{API}/{name}/secrets")
    assert r.status_code == 200
    assert r.json() == {"function": name, "secrets": []}


def test_value_of_exactly_64_kib_is_accepted(server: ServerProcess, client: httpx.Client) -> None:
    name = unique()
    value = "é" * (MAX_VALUE_BYTES // 2 - 2) + "abcd"  # 65536 bytes of UTF-8
    assert len(value.encode()) == MAX_VALUE_BYTES
    r = put(client, name, "BIG", value)
    assert r.status_code == 200, r.text
    with store_on(server.data_dir) as store:
        assert store.get(name, "BIG") == value


# -- bad input: rejected, and the value is never echoed ------------------------------------

VALUE = secret()
BadRequest = Callable[[httpx.Client, str], httpx.Response]
JSON = {"content-type": "application/json"}


def _path(name: str, key: str = "TOKEN") -> str:
    return f"{API}/{name}/secrets/{key}"


BAD: dict[str, tuple[BadRequest, int]] = {
    "over-long value": (
        lambda c, n: c.put(_path(n), json={"value": VALUE + "x" * MAX_VALUE_BYTES}),
        422,
    ),
    "over-long in bytes, not characters": (
        lambda c, n: c.put(_path(n), json={"value": "é" * (MAX_VALUE_BYTES // 2) + VALUE}),
        422,
    ),
    "value not a string": (lambda c, n: c.put(_path(n), json={"value": [VALUE]}), 422),
    "value missing": (lambda c, n: c.put(_path(n), json={"valu": VALUE}), 422),
    "body not an object": (lambda c, n: c.put(_path(n), json=VALUE), 422),
    "raw text body": (
        lambda c, n: c.put(_path(n), content=VALUE, headers={"content-type": "text/plain"}),
        422,
    ),
    "truncated JSON": (
        lambda c, n: c.put(_path(n), content='{"value": "' + VALUE, headers=JSON),
        400,
    ),
    "lone surrogate": (
        lambda c, n: c.put(_path(n), content='{"value": "\\ud800' + VALUE + '"}', headers=JSON),
        422,
    ),
    "value pasted into the key": (
        lambda c, n: c.put(_path(n, f"TOKEN={VALUE}"), json={"value": VALUE}),
        422,
    ),
    "invalid function name": (
        lambda c, n: c.put(f"{API}/Not_Valid!/secrets/TOKEN", json={"value": VALUE}),
        422,
    ),
    "invalid key on delete": (lambda c, n: c.delete(_path(n, f"{VALUE}=x")), 422),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_rejected_without_echoing_the_value(
    server: ServerProcess, client: httpx.Client, case: str
) -> None:
    send, status = BAD[case]
    name = unique()
    r = send(client, name)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"]
    assert VALUE not in r.text
    assert client.get(f"{API}/{name}/secrets").json()["secrets"] == []
    assert_not_logged(server, VALUE)


def test_size_error_says_what_the_limit_is(client: httpx.Client) -> None:
    r = put(client, unique(), "TOKEN", "x" * (MAX_VALUE_BYTES + 1))
    assert r.status_code == 422
    assert str(MAX_VALUE_BYTES) in r.json()["error"]["message"]


# -- storage and the cache of other processes ----------------------------------------------


def test_set_via_api_is_seen_by_another_process_store(
    server: ServerProcess, client: httpx.Client
) -> None:
    name, first, second = unique(), secret(), secret()
    with store_on(server.data_dir) as store:
        assert store.get(name, "TOKEN") is None  # now cached as absent
        put(client, name, "TOKEN", first).raise_for_status()
        assert store.get(name, "TOKEN") == first
        put(client, name, "TOKEN", second).raise_for_status()
        assert store.get(name, "TOKEN") == second
        assert store.values(name) == [second]
        client.delete(f"{API}/{name}/secrets/TOKEN").raise_for_status()
        assert store.get(name, "TOKEN") is None
    assert_not_logged(server, first, second)


def test_the_database_holds_no_plaintext(server: ServerProcess, client: httpx.Client) -> None:
    name, value = unique(), secret()
    put(client, name, "TOKEN", value).raise_for_status()
    files = list(server.data_dir.glob("wasmlet.db*"))
    assert files
    for path in files:
        assert value.encode() not in path.read_bytes(), path.name
    assert stat.S_IMODE((server.data_dir / KEY_FILE).stat().st_mode) == 0o600


def test_secrets_survive_a_restart(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    name, value = unique(), secret()
    with server.client() as c:
        set_at = put(c, name, "TOKEN", value).json()["updated_at"]
    key = (server.data_dir / KEY_FILE).read_bytes()

    server.restart()
    with server.client() as c:
        listed = c.get(f"{API}/{name}/secrets").json()["secrets"]
    assert listed == [{"key": "TOKEN", "updated_at": set_at}]
    assert (server.data_dir / KEY_FILE).read_bytes() == key  # reused, not regenerated
    with store_on(server.data_dir) as store:
        assert store.get(name, "TOKEN") == value
    assert_not_logged(server, value)


def test_configured_key_and_a_wrong_key_later(
    server_factory: Callable[..., ServerProcess],
) -> None:
    key, wrong = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    server = server_factory(env={"WASMLET_SECRET_KEY": key})
    name, value = unique(), secret()
    with server.client() as c:
        put(c, name, "TOKEN", value).raise_for_status()
    assert not (server.data_dir / KEY_FILE).exists()
    with store_on(server.data_dir, key) as store:
        assert store.get(name, "TOKEN") == value

    # Started again with another key, the server still runs and manages secrets; only
    # reading the old value fails, with a clear error.
    server.extra_env = {"WASMLET_SECRET_KEY": wrong}
    server.restart()
    with server.client() as c:
        keys = [s["key"] for s in c.get(f"{API}/{name}/secrets").json()["secrets"]]
        assert keys == ["TOKEN"]
        put(c, name, "NEW", "new-value").raise_for_status()
    with store_on(server.data_dir, wrong) as store:
        with pytest.raises(SecretUnreadable, match="cannot be decrypted"):
            store.get(name, "TOKEN")
        assert store.get(name, "NEW") == "new-value"
    assert_not_logged(server, value, key, wrong)


def test_an_invalid_configured_key_stops_startup_without_showing_it(tmp_path: Path) -> None:
    bad = "hunter2-" + uuid.uuid4().hex
    server = ServerProcess(tmp_path / "data", env={"WASMLET_SECRET_KEY": bad})
    try:
        with pytest.raises(RuntimeError, match="exited early"):
            server.start(timeout=30)
    finally:
        server.stop()
    log = full_log(server)
    assert "secret_key" in log and "WASMLET_SECRET_KEY" in log
    assert "not a valid Fernet key" in log
    assert bad not in log


def test_openapi_documents_the_routes_without_values(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    ops = {
        (path, method): op
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if "/secrets" in path
    }
    assert set(ops) == {
        (f"{API}/{{name}}/secrets/{{key}}", "put"),
        (f"{API}/{{name}}/secrets", "get"),
        (f"{API}/{{name}}/secrets/{{key}}", "delete"),
    }
    assert all(op["tags"] == ["secrets"] for op in ops.values())
    components = schema["components"]["schemas"]
    for model in ("SecretSet", "SecretEntry", "SecretList", "SecretDeleted"):
        assert "value" not in components[model]["properties"]
    assert components["SecretValue"]["required"] == ["value"]
