"""/metrics names every tenant's functions in its labels and /healthz described the node:
neither may tell a tenant, or anyone without a key, about the others.

- /metrics: only a key of the `default` namespace with the `metrics` scope (an operator
  admin key has it); a tenant can neither use nor mint such a key.
- `metrics_port`: a listener of its own serving /metrics (and the health probe) without a
  key, and nothing else: no invocation, route or management request.
- /healthz without an operator key: that the node is up, and nothing more.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.api.support import EXAMPLES, assert_error, deployed
from tests.helpers import ServerProcess, free_port
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration

GCD = EXAMPLES / "gcd" / "gcd.wat"


def _tenant_with_function(server: ServerProcess) -> tuple[str, str, str]:
    """(namespace, admin key, the name of a function it ran once) of a new tenant."""
    ns = "m" + uuid.uuid4().hex[:8]
    with server.client() as op:
        key = mint_key(op, ns)
    name = "tenantfn" + uuid.uuid4().hex[:6]
    with client_with(server, key) as t:
        deployed(t, name, GCD)
        assert t.post(f"/fn/{name}?args=12,18").json() == {"result": 6}
    return ns, key, name


def test_metrics_need_an_operator_metrics_key(server: ServerProcess) -> None:
    ns, tenant_key, name = _tenant_with_function(server)
    with server.client() as op:
        scraped = op.get("/metrics")  # the operator's admin key implies `metrics`
        assert scraped.status_code == 200 and name in scraped.text
        scraper = mint_key(op, "default", ("metrics",))
        reader = mint_key(op, "default", ("read",))
        tenant_reader = mint_key(op, ns, ("read", "invoke", "deploy"))
    with client_with(server, None) as anon:
        assert_error(anon.get("/metrics"), 401, "unauthorized")
    for key in (tenant_key, tenant_reader, reader):
        with client_with(server, key) as c:
            resp = c.get("/metrics")
            assert_error(resp, 403, "forbidden")
            assert name not in resp.text
    with client_with(server, scraper) as c:
        assert name in c.get("/metrics").text
    with httpx.Client(base_url=server.url, headers={"X-API-Key": scraper}) as c:
        assert c.get("/metrics").status_code == 200


def test_no_tenant_key_can_hold_the_metrics_scope(server: ServerProcess) -> None:
    ns, tenant_key, _ = _tenant_with_function(server)
    with client_with(server, tenant_key) as t:
        for body in ({"scopes": ["metrics"]}, {"scopes": ["read", "metrics"], "namespace": ns}):
            resp = t.post("/api/v1/keys", json=body)
            assert_error(resp, 422, "invalid_request", "only for keys of the 'default'")
    with server.client() as op:  # not even the operator mints one for a tenant
        resp = op.post("/api/v1/keys", json={"scopes": ["metrics"], "namespace": ns})
        assert_error(resp, 422, "invalid_request", "only for keys of the 'default'")
        assert op.get("/api/v1/keys", params={"namespace": ns}).json()["keys"][0]["scopes"] == [
            "admin"
        ]  # nothing was made


def test_a_tenant_metrics_key_from_the_database_is_still_refused(server: ServerProcess) -> None:
    """A tenant key holding `metrics` (written before the scope was refused to tenants, or
    by hand) still cannot scrape: the check at use does not trust the check at creation."""
    from wasmlet.auth import tokens
    from wasmlet.registry.db import make_engine, make_sessionmaker
    from wasmlet.registry.models import ApiKey, utcnow

    ns, _, name = _tenant_with_function(server)
    token = tokens.new_token()
    engine = make_engine(f"sqlite:///{(server.data_dir / 'wasmlet.db').resolve()}")
    try:
        with make_sessionmaker(engine).begin() as s:
            s.add(
                ApiKey(
                    key_id=token.key_id,
                    namespace=ns,
                    name="planted",
                    scopes="metrics",
                    secret_hash=tokens.hash_secret(token.secret),
                    created_at=utcnow(),
                )
            )
    finally:
        engine.dispose()
    with client_with(server, str(token)) as c:
        resp = c.get("/metrics")
        assert_error(resp, 403, "forbidden")
        assert name not in resp.text


def test_health_without_an_operator_key_says_only_up(server: ServerProcess) -> None:
    _, tenant_key, _ = _tenant_with_function(server)
    for key in (None, tenant_key, "wl_000000000000_not-a-live-key"):
        with client_with(server, key) as c:
            resp = c.get("/healthz")
            assert resp.status_code == 200
            assert resp.json() == {"status": "ok"}, f"{key}: {resp.text}"
    with server.client() as op:  # the operator still gets the details
        health = op.get("/healthz").json()
    assert health["status"] == "ok" and health["functions"] >= 1 and health["version"]


# -- the metrics listener --------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    env = {"WASMLET_METRICS_PORT": str(port)}
    with ServerProcess(tmp_path_factory.mktemp("metrics") / "data", env=env) as server:
        yield server


def test_the_metrics_port_serves_metrics_and_nothing_else(metrics_server: ServerProcess) -> None:
    server = metrics_server
    ns, tenant_key, name = _tenant_with_function(server)
    with server.client() as op:
        deployed(op, "opfn", GCD, visibility="public")
        route = {"path": "/shop", "function": "opfn"}
        assert op.post("/api/v1/routes", json=route).status_code == 201
        assert op.post("/fn/opfn?args=12,18").json() == {"result": 6}  # loaded, key verified
    metrics_url = f"http://127.0.0.1:{server.extra_env['WASMLET_METRICS_PORT']}"
    with httpx.Client(base_url=metrics_url, timeout=30) as m:
        scraped = m.get("/metrics")  # no key on this listener
        assert scraped.status_code == 200 and name in scraped.text
        assert m.get("/healthz").json() == {"status": "ok"}
        # Not a second API: invocations, routes and management are all absent here, with
        # or without a key.
        auth = {"Authorization": f"Bearer {server.admin_key()}"}
        tenant = {"Authorization": f"Bearer {tenant_key}"}
        refused = [
            m.post("/fn/opfn?args=12,18"),
            m.post("/fn/opfn?args=12,18", headers=auth),
            m.post(f"/fn/{ns}~{name}?args=12,18", headers=tenant),
            m.post("/api/v1/functions/opfn/invoke", json={"args": [1, 2]}, headers=auth),
            m.post("/function/invoke", json={"function_name": "opfn"}, headers=auth),
            m.get("/shop"),
            m.get("/api/v1/functions", headers=auth),
            m.get("/api/v1/keys", headers=auth),
        ]
        for resp in refused:
            assert_error(resp, 404, "not_found")
        for _ in range(3):  # warm now: the HTTP fast lane would take these if it could
            assert_error(m.post("/fn/opfn?args=12,18"), 404, "not_found")
            assert_error(m.post("/fn/opfn?args=12,18", headers=auth), 404, "not_found")
    # The main port is as before: /metrics still needs the key there.
    with client_with(server, None) as anon:
        assert_error(anon.get("/metrics"), 401, "unauthorized")
        assert anon.post("/fn/opfn?args=12,18").json() == {"result": 6}


def test_serve_has_a_metrics_port_flag() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wasmlet", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": ""},
    ).stdout
    assert "--metrics-port" in out


def test_the_metrics_port_with_several_workers(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    env = {"WASMLET_METRICS_PORT": str(port)}
    data = tmp_path_factory.mktemp("metrics-workers") / "data"
    with ServerProcess(data, workers=2, env=env) as server:
        with server.client() as op:
            deployed(op, "opfn", GCD, visibility="public")
            for _ in range(4):
                assert op.post("/fn/opfn?args=12,18").json() == {"result": 6}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as m:
            # Both workers' metrics; records are counted in batches, so allow a moment.
            deadline = time.monotonic() + 20
            while 'function="opfn"' not in (text := m.get("/metrics").text):
                assert time.monotonic() < deadline, text[-2000:]
                time.sleep(0.2)
            for _ in range(4):  # whichever worker accepts the connection
                assert_error(m.post("/fn/opfn?args=12,18"), 404, "not_found")
        with client_with(server, None) as anon:
            assert_error(anon.get("/metrics"), 401, "unauthorized")
