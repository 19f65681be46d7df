"""The KV and secrets management routes of another namespace, by qualified name.

A tenant names functions bare (qualified with its own namespace) or as `ns~name`; a
qualified name of another namespace must be answered as a missing one, on every KV and
secrets route, and must change nothing. The KV `global` scope is the caller's own.
"""

from __future__ import annotations

import uuid

import pytest

from tests.api.support import EXAMPLES, deployed
from tests.helpers import ServerProcess
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration

GCD = EXAMPLES / "gcd" / "gcd.wat"


def test_a_tenant_cannot_reach_another_namespaces_kv_or_secrets(server: ServerProcess) -> None:
    a, b = "va" + uuid.uuid4().hex[:8], "vb" + uuid.uuid4().hex[:8]
    with server.client() as op:
        key_a, key_b = mint_key(op, a), mint_key(op, b)
        deployed(op, "opfn", GCD)
        assert op.put("/api/v1/kv/opfn/k", content=b"operator-value").status_code == 200
        assert op.put("/api/v1/kv/global/k", content=b"operator-global").status_code == 200
        put = op.put("/api/v1/functions/opfn/secrets/S", json={"value": "operator-secret"})
        assert put.status_code == 200, put.text
    with client_with(server, key_a) as victim:
        deployed(victim, "fn", GCD)
        assert victim.put("/api/v1/kv/fn/k", content=b"a-value").status_code == 200
        assert victim.put("/api/v1/kv/global/k", content=b"a-global").status_code == 200
        put = victim.put("/api/v1/functions/fn/secrets/S", json={"value": "a-secret"})
        assert put.status_code == 200, put.text

    with client_with(server, key_b) as attacker:
        kv_targets = [f"{a}~fn", f"fn:{a}~fn", f"global:{a}", "default~opfn", f"{a}~nosuch"]
        for target in kv_targets:
            answers = [
                attacker.get(f"/api/v1/kv/{target}/k"),
                attacker.get(f"/api/v1/kv/{target}/keys"),
                attacker.put(f"/api/v1/kv/{target}/k", content=b"b-was-here"),
                attacker.post(f"/api/v1/kv/{target}/k/incr", json={"by": 1}),
                attacker.delete(f"/api/v1/kv/{target}/k"),
            ]
            for resp in answers:
                assert resp.status_code in (404, 422), f"{target}: {resp.status_code} {resp.text}"
                assert "value" not in resp.text.replace("b-was-here", "")
        for target in (f"{a}~fn", "default~opfn", f"{a}~nosuch"):
            answers = [
                attacker.get(f"/api/v1/functions/{target}/secrets"),
                attacker.put(f"/api/v1/functions/{target}/secrets/S", json={"value": "b"}),
                attacker.delete(f"/api/v1/functions/{target}/secrets/S"),
            ]
            for resp in answers:
                assert resp.status_code in (404, 422), f"{target}: {resp.status_code} {resp.text}"
        # Its own `global` and bare names are its own, not the operator's or a's.
        assert attacker.get("/api/v1/kv/global/k").status_code == 404
        assert attacker.get("/api/v1/kv/opfn/k").status_code == 404
        assert attacker.get("/api/v1/kv/fn/k").status_code == 404

    with client_with(server, key_a) as victim:  # a's data is untouched
        assert victim.get("/api/v1/kv/fn/k").content == b"a-value"
        assert victim.get("/api/v1/kv/global/k").content == b"a-global"
        assert [s["key"] for s in victim.get("/api/v1/functions/fn/secrets").json()["secrets"]] == [
            "S"
        ]
    with server.client() as op:
        assert op.get("/api/v1/kv/opfn/k").content == b"operator-value"
        assert op.get("/api/v1/kv/global/k").content == b"operator-global"
        assert op.get(f"/api/v1/kv/{a}~fn/keys").json()["keys"] == ["k"]
