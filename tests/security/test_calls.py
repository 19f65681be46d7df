"""Break 4: `call:NAME` resolved NAME in the operator's namespace, so a tenant granted
`call:opsecret` read the operator's private function, and could not call its own `helper`.

NAME is now resolved in the caller's namespace; a qualified `ns~name` is neither grantable
nor callable, and a callee of another namespace fails exactly as a missing one does.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.support import assert_error, deploy, deployed
from tests.helpers import ServerProcess
from tests.security.guests import guest_bytes
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration

SECRET = "opsecret-value-5d2b7e91"


@pytest.fixture(scope="module")
def probe() -> bytes:
    return guest_bytes("tenant_probe.c", plugin=True)


@pytest.fixture(scope="module")
def tenant(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as operator:
        token = mint_key(operator, "calls-a")
    with client_with(server, token) as client:
        yield client


def call(client: httpx.Client, caller: str, target: str, payload: str = "") -> httpx.Response:
    body = f"{target}\n{payload}".encode()
    return client.post(f"/api/v1/functions/{caller}/invoke/call", content=body)


def deploy_caller(client: httpx.Client, probe: bytes, name: str, *callees: str) -> None:
    grants = ["kv", "kv:global", *(f"call:{c}" for c in callees)]
    deployed(client, name, probe, abi="extism", export="call", capability=grants)


def test_a_tenant_cannot_call_the_operators_private_function(
    server: ServerProcess, tenant: httpx.Client, probe: bytes
) -> None:
    with server.client() as operator:
        deployed(
            operator,
            "opsecret",
            probe,
            abi="extism",
            export="secret",
            capability=["kv", "call:none"],
            config=[f"secret={SECRET}"],
        )
        # The operator's own caller reaches it: the function works.
        deploy_caller(operator, probe, "opcaller", "opsecret")
        resp = call(operator, "opcaller", "opsecret")
        assert resp.status_code == 200 and resp.content == SECRET.encode(), resp.text

    deploy_caller(tenant, probe, "caller", "opsecret", "nosuch", "helper")
    stolen = call(tenant, "caller", "opsecret")
    assert SECRET not in stolen.text, stolen.text
    message = assert_error(stolen, 500, "guest_error", "not found")
    # No existence oracle: another namespace's function fails as a missing one does.
    missing = assert_error(call(tenant, "caller", "nosuch"), 500, "guest_error")
    assert message.replace("opsecret", "X") == missing.replace("nosuch", "X")

    # Its own `helper` is what `call:helper` reaches.
    deployed(tenant, "helper", probe, abi="extism", export="echo", capability=["kv", "call:x"])
    resp = call(tenant, "caller", "helper", "hi")
    assert resp.status_code == 200 and resp.content == b"helper:hi", resp.text


def test_qualified_names_are_neither_grantable_nor_callable(
    server: ServerProcess, tenant: httpx.Client, probe: bytes
) -> None:
    # Not grantable: a tenant naming the operator's or another tenant's function.
    for grant in ("call:default~opsecret", "call:calls-a~helper", "call:other~x"):
        resp = deploy(tenant, "qcaller", probe, abi="extism", export="call", capability=[grant])
        assert_error(resp, 422, "invalid_request", "unknown capability")
    # Not callable from input either, whatever the grants: tenant -> operator, and the
    # operator -> tenant (its bare `call:helper` is its own helper, not calls-a's).
    deployed(tenant, "helper", probe, abi="extism", export="echo", capability=["kv", "call:x"])
    deploy_caller(tenant, probe, "qcaller", "opsecret", "helper")
    for target in ("default~opsecret", "calls-a~helper", "~opsecret"):
        resp = call(tenant, "qcaller", target)
        assert SECRET not in resp.text
        assert_error(resp, 500, "guest_error")
    with server.client() as operator:
        deploy_caller(operator, probe, "opcaller2", "helper")
        resp = call(operator, "opcaller2", "calls-a~helper", "x")
        assert b"helper:" not in resp.content
        assert_error(resp, 500, "guest_error")
        resp = call(operator, "opcaller2", "helper", "x")
        assert_error(resp, 500, "guest_error", "not found")
