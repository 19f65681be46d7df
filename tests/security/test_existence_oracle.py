"""No existence oracle: a caller that may not invoke a private function learns nothing
from trying, not even that it exists. Without a key, with another tenant's key, or with a
key of that tenant's neighbour lacking `invoke`, the answer for tenant a's private
function is, byte for byte bar the name, the answer for a name a never deployed: on the
invoke API, /fn/NAME, /fn/ns~name and the WasmEngine /function/invoke, through the HTTP
fast lane and through ASGI.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.api.support import EXAMPLES, deployed
from tests.helpers import ServerProcess
from tests.security.support import client_with, mint_key

pytestmark = pytest.mark.integration

GCD = EXAMPLES / "gcd" / "gcd.wat"


@dataclass
class Tenants:
    server: ServerProcess
    a: str  # the victim's namespace: `secret` (private) and `open` (public) live there
    callers: dict[str, str | None]  # who tries -> their key


@pytest.fixture(scope="module", params=["fast", "asgi"])
def tenants(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tenants]:
    env = {} if request.param == "fast" else {"WASMLET_FAST_LANE": "false"}
    with ServerProcess(tmp_path_factory.mktemp("oracle") / "data", env=env) as server:
        a, b = "a" + uuid.uuid4().hex[:8], "b" + uuid.uuid4().hex[:8]
        with server.client() as op:
            key_a = mint_key(op, a)
            callers: dict[str, str | None] = {
                "no key": None,
                "other tenant's admin key": mint_key(op, b),
                "other tenant's invoke key": mint_key(op, b, ("invoke",)),
                "operator's read key": mint_key(op, "default", ("read", "deploy")),
            }
            deployed(op, "opsecret", GCD)  # the operator's own private function
        with client_with(server, key_a) as c:
            deployed(c, "secret", GCD)
            assert c.post("/fn/secret?args=12,18").json() == {"result": 6}
        for key in callers.values():  # each key verified once, so the fast lane takes it
            with client_with(server, key) as c:
                c.get("/api/v1/functions")
        yield Tenants(server, a, callers)


def _answers(c: httpx.Client, name: str) -> list[tuple[int, str, object]]:
    """What each invocation entry answers for `name` (a JSON error, the name masked)."""
    responses = [
        c.post(f"/fn/{name}?args=12,18"),
        c.post(f"/fn/{name}/deeper/path", content=b"x"),
        c.post(f"/api/v1/functions/{name}/invoke", json={"args": [12, 18]}),
        c.post("/function/invoke", json={"function_name": name, "args": [12, 18]}),
    ]
    masked = []
    for resp in responses:
        text = resp.text.replace(name, "NAME")
        masked.append((resp.status_code, resp.headers["content-type"], json.loads(text)))
    return masked


@pytest.mark.parametrize(
    "caller",
    ["no key", "other tenant's admin key", "other tenant's invoke key", "operator's read key"],
)
def test_a_private_function_looks_missing_to_those_who_may_not_call_it(
    tenants: Tenants, caller: str
) -> None:
    with client_with(tenants.server, tenants.callers[caller]) as c:
        private = _answers(c, f"{tenants.a}~secret")
        missing = _answers(c, f"{tenants.a}~nosuch")
    assert private == missing, f"{caller} can tell a's private function from a missing one"
    for status, _, body in private:
        assert status == 404 and body["error"]["code"] == "not_found", body  # type: ignore[index]


def test_the_operators_private_functions_look_missing_without_a_key(tenants: Tenants) -> None:
    with client_with(tenants.server, None) as anon:
        assert _answers(anon, "opsecret") == _answers(anon, "opnosuch")
        message = anon.post("/fn/opsecret").json()["error"]["message"]
    assert "private" in message and "'invoke' scope" in message  # says what it would take


def test_the_owner_still_gets_its_function(tenants: Tenants) -> None:
    with tenants.server.client() as op:  # the operator may call any namespace's function
        assert op.post(f"/fn/{tenants.a}~secret?args=12,18").json() == {"result": 6}
