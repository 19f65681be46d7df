"""Cross-namespace key management: a tenant's admin key manages its own namespace's keys
and nothing else. It cannot mint a key of `default` (the operator's: that would be the
whole platform) or of another tenant, cannot see or revoke another namespace's keys (a
foreign key id is answered as a missing one), and cannot read other namespaces' quotas or
set any quota, its own included.
"""

from __future__ import annotations

import uuid

import pytest

from tests.api.support import assert_error
from tests.helpers import ServerProcess
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration


def _key_id(token: str) -> str:
    return token.split("_")[1]


def _tenants(server: ServerProcess) -> tuple[str, str, str, str]:
    """Two fresh tenants: (namespace a, a's admin key, namespace b, b's admin key)."""
    a, b = "ka" + uuid.uuid4().hex[:8], "kb" + uuid.uuid4().hex[:8]
    with server.client() as op:
        return a, mint_key(op, a), b, mint_key(op, b)


def test_a_tenant_cannot_mint_keys_outside_its_namespace(server: ServerProcess) -> None:
    a, key_a, b, _ = _tenants(server)
    planted = "planted-" + uuid.uuid4().hex[:8]
    with client_with(server, key_a) as attacker:
        for namespace in ("default", b, "unborn" + uuid.uuid4().hex[:6]):
            for scopes in (["admin"], ["read"], ["invoke"]):
                body = {"namespace": namespace, "scopes": scopes, "name": planted}
                resp = attacker.post("/api/v1/keys", json=body)
                assert_error(resp, 403, "forbidden")
                assert "wl_" not in resp.text
        # Its own namespace, named or implied, works.
        for body in ({"scopes": ["read"]}, {"scopes": ["read"], "namespace": a}):
            made = attacker.post("/api/v1/keys", json=body)
            assert made.status_code == 201 and made.json()["namespace"] == a, made.text
    with server.client() as op:  # nothing was made by the refused requests
        listed = op.get("/api/v1/keys").json()["keys"]
    assert not [k for k in listed if k["name"] == planted]


def test_a_tenant_sees_only_its_own_keys(server: ServerProcess) -> None:
    a, key_a, b, key_b = _tenants(server)
    with client_with(server, key_a) as attacker:
        own = attacker.get("/api/v1/keys")
        assert own.status_code == 200
        assert {k["namespace"] for k in own.json()["keys"]} == {a}
        assert _key_id(key_b) not in own.text and _key_id(server.admin_key()) not in own.text
        for namespace in (b, "default"):
            resp = attacker.get("/api/v1/keys", params={"namespace": namespace})
            assert_error(resp, 403, "forbidden")
            assert _key_id(key_b) not in resp.text
            assert _key_id(server.admin_key()) not in resp.text


def test_a_tenant_cannot_revoke_another_namespaces_key(server: ServerProcess) -> None:
    _, key_a, _, key_b = _tenants(server)
    operator_key = server.admin_key()
    with client_with(server, key_a) as attacker:
        missing = attacker.delete("/api/v1/keys/0123456789ab")
        assert_error(missing, 404, "not_found")
        for victim in (key_b, operator_key):
            resp = attacker.delete(f"/api/v1/keys/{_key_id(victim)}")
            assert_error(resp, 404, "not_found")  # as a key that does not exist
            assert resp.json()["error"]["message"].replace(_key_id(victim), "ID") == (
                missing.json()["error"]["message"].replace("0123456789ab", "ID")
            )
    for victim in (key_b, operator_key):  # both still work
        with client_with(server, victim) as c:
            assert c.get("/api/v1/functions").status_code == 200
    with client_with(server, key_a) as owner:  # its own keys it may revoke
        spare = owner.post("/api/v1/keys", json={"scopes": ["read"]}).json()
        assert owner.delete(f"/api/v1/keys/{spare['key_id']}").json() == {"revoked": True}


def test_a_tenant_cannot_touch_quotas(server: ServerProcess) -> None:
    a, key_a, b, _ = _tenants(server)
    generous = {"requests_per_second": 0, "max_functions": 0, "max_memory_mb": 65536}
    with client_with(server, key_a) as attacker:
        for namespace in (a, b, "default"):
            resp = attacker.put(f"/api/v1/namespaces/{namespace}/quota", json=generous)
            assert_error(resp, 403, "forbidden")
        assert attacker.get(f"/api/v1/namespaces/{a}/quota").status_code == 200  # its own
        for namespace in (b, "default"):
            resp = attacker.get(f"/api/v1/namespaces/{namespace}/quota")
            assert_error(resp, 403, "forbidden")
    with server.client() as op:
        assert op.get(f"/api/v1/namespaces/{a}/quota").json()["max_memory_mb"] != 65536
