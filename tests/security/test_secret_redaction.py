"""Attack (break 6): a guest gets its secret written into what a `read` key can see.

A tenant's functions hold secrets; each guest leaks its secret by another path: a URL to a
host it may not reach (the record's `http_calls[].url/host/error`), the secret as a host
name, the URL-encoded secret, its logs, its error message, a nested call's error passed
to the caller, CGI stderr and Otoroshi's `proxy_log`. Whoever reads with the tenant's
`read` key (records, logs, function views) or the operator (metrics, server log) must
find the secret in no form: raw or URL-encoded.

Guests: tests/fixtures/src/leaky_plugin.c (Extism) and leaky_cgi.c (WASI CGI), built
here with zig; tests/fixtures/capability_probe.wat (the caller of a nested call) and
otoroshi_probe.wat (`proxy_log`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest

from tests.api.support import FIXTURES, deploy, unique
from tests.helpers import ServerProcess
from tests.security.guests import guest
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3r s3cret/&=+?value"  # characters a URL must encode
HOST_SECRET = "h0st-secret-7q9z"  # fit for a host name
NAMESPACE = "leaky"


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


@pytest.fixture(scope="module")
def guests() -> dict[str, Path]:
    return {
        "plugin": guest("leaky_plugin.c", plugin=True),
        "cgi": guest("leaky_cgi.c"),
    }


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """The tenant's admin client and its read-only client."""
    with server.client() as operator:
        admin, read = mint_key(operator, NAMESPACE), mint_key(operator, NAMESPACE, ("read",))
    with client_with(server, admin) as a, client_with(server, read) as r:
        yield a, r


def deployed(client: httpx.Client, prefix: str, module: Path, **fields: object) -> str:
    name = unique(prefix)
    resp = deploy(client, name, module, **fields)
    assert resp.status_code == 201, resp.text
    return name


def set_secret(client: httpx.Client, name: str, key: str, value: str) -> None:
    resp = client.put(f"/api/v1/functions/{name}/secrets/{key}", json={"value": value})
    assert resp.status_code == 200, resp.text


def everything_readable(
    server: ServerProcess, reader: httpx.Client, names: list[str]
) -> dict[str, str]:
    """What a `read` key sees of these functions, and what the operator sees of the node."""
    seen: dict[str, str] = {}
    for name in names:
        for path in ("", "/invocations", "/versions", "/secrets"):
            resp = reader.get(f"/api/v1/functions/{name}{path}")
            assert resp.status_code == 200, (path, resp.text)
            seen[f"{name}{path}"] = resp.text
    seen["list"] = reader.get("/api/v1/functions").text
    with server.client() as operator:
        seen["metrics"] = operator.get("/metrics").text
    seen["server log"] = server.log()
    return seen


def assert_nowhere(seen: dict[str, str], *secrets: str) -> None:
    for where, text in seen.items():
        for secret in secrets:
            for form in forms(secret):
                assert form not in text, f"{form!r} in {where}"


def test_a_secret_in_a_denied_url_stays_out_of_the_record(
    server: ServerProcess, guests: dict[str, Path], keys: tuple[httpx.Client, httpx.Client]
) -> None:
    admin, reader = keys
    name = deployed(
        admin, "leaky", guests["plugin"], abi="extism", export="leak",
        allowed_host=["allowed.test"],
    )  # fmt: skip
    set_secret(admin, name, "token", SECRET)
    set_secret(admin, name, "hosttoken", HOST_SECRET)
    answers = []
    for mode in ("denied", "encoded", "host", "error"):
        resp = admin.post(f"/api/v1/functions/{name}/invoke", content=mode.encode())
        assert resp.status_code == 500, resp.text
        assert resp.json()["error"]["code"] == "guest_error"
        answers.append(resp.text)
    resp = admin.post(f"/api/v1/functions/{name}/invoke", content=b"log")
    assert resp.status_code == 200, resp.text
    seen = everything_readable(server, reader, [name])
    seen.update({f"answer {i}": text for i, text in enumerate(answers)})
    records = json.loads(seen[f"{name}/invocations"])["invocations"]
    calls = [call for record in records for call in record["http_calls"] or []]
    assert len(calls) == 3 and all("[redacted]" in c["error"] for c in calls), calls
    assert any(c["host"] == "[redacted].denied.test" for c in calls), calls
    assert_nowhere(seen, SECRET, HOST_SECRET)


def test_a_callee_secret_reaches_neither_the_record_nor_the_caller(
    server: ServerProcess, guests: dict[str, Path]
) -> None:
    """In the operator's namespace (how `call:NAME` resolves a tenant's names is another
    break's business): the callee fails with its secret URL-encoded in its message."""
    with server.client() as admin:
        read = mint_key(admin, "default", ("read",))
        callee = deployed(admin, "leaky-callee", guests["plugin"], abi="extism", export="leak")
        set_secret(admin, callee, "token", SECRET)
        caller = deployed(
            admin, "caller", FIXTURES / "capability_probe.wat", abi="extism", export="call",
            capability=["kv", "kv:global", "http", f"call:{callee}"],
            config=[f"callee={callee}"],
        )  # fmt: skip
        resp = admin.post(f"/api/v1/functions/{caller}/invoke/call", content=b"error")
    assert resp.status_code == 500, resp.text
    assert "bad token [redacted]" in resp.json()["error"]["message"]
    with client_with(server, read) as reader:
        seen = everything_readable(server, reader, [caller, callee])
    seen["answer"] = resp.text
    assert_nowhere(seen, SECRET)


def test_cgi_stderr_is_redacted(
    server: ServerProcess, guests: dict[str, Path], keys: tuple[httpx.Client, httpx.Client]
) -> None:
    admin, reader = keys
    name = deployed(admin, "leaky-cgi", guests["cgi"], abi="wasi-cgi")
    set_secret(admin, name, "token", SECRET)
    resp = admin.post(f"/fn/{name}", content=SECRET.encode())
    assert resp.status_code == 200 and resp.text == "ok", resp.text
    seen = everything_readable(server, reader, [name])
    logs = json.loads(seen[f"{name}/invocations"])["invocations"][0]["logs"]
    assert "raw [redacted]" in logs and "encoded [redacted]" in logs, logs
    assert_nowhere(seen, SECRET)


def test_otoroshi_proxy_log_is_redacted(
    server: ServerProcess, keys: tuple[httpx.Client, httpx.Client]
) -> None:
    admin, reader = keys
    name = deployed(
        admin, "leaky-oto", FIXTURES / "otoroshi_probe.wat", abi="otoroshi",
        capability=["http", "kv", "kv:global"],
    )  # fmt: skip
    set_secret(admin, name, "token", SECRET)
    for message in (SECRET, quote(SECRET, safe=""), quote_plus(SECRET)):
        resp = admin.post(f"/fn/{name}/?export=log", content=("2" + message).encode())
        assert resp.status_code == 200, resp.text
    seen = everything_readable(server, reader, [name])
    records = json.loads(seen[f"{name}/invocations"])["invocations"]
    assert all("[redacted]" in r["logs"] for r in records), records
    assert_nowhere(seen, SECRET)
