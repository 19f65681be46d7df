"""100 concurrent callers with distinct inputs each get their own correct answer."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.api.support import GCD_WAT, deployed, unique
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

CALLERS = 100


async def _gather(server: ServerProcess, make_call) -> list:
    limits = httpx.Limits(max_connections=CALLERS + 10, max_keepalive_connections=CALLERS + 10)
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, limits=limits, headers=server.auth_headers()
    ) as client:
        return await asyncio.gather(*(make_call(client, k) for k in range(1, CALLERS + 1)))


def _gcd_answers(server: ServerProcess, name: str) -> None:
    # gcd(1071k, 462k) = 21k: every caller has its own expected answer.
    async def call(client: httpx.AsyncClient, k: int) -> tuple[int, int, object]:
        resp = await client.post(
            f"/api/v1/functions/{name}/invoke", json={"args": [1071 * k, 462 * k]}
        )
        return k, resp.status_code, resp.json()

    results = asyncio.run(_gather(server, call))
    wrong = [(k, status, body) for k, status, body in results if body != {"result": 21 * k}]
    assert not wrong, f"{len(wrong)} callers got a wrong answer, e.g. {wrong[:5]}"


def test_pooled_core_function(api_server: ServerProcess) -> None:
    _gcd_answers(api_server, "gcd")


def test_fresh_instance_core_function(api_server: ServerProcess) -> None:
    name = unique("gcd-fresh")
    with api_server.client() as client:
        view = deployed(client, name, GCD_WAT, reuse=False)
        assert view["active_version"]["spec"]["reuse"] is False
        # One call first: the burst right after a deploy is test_first_burst_after_deploy's job.
        assert client.post(f"/api/v1/functions/{name}/invoke", json={"args": [4, 6]}).json() == {
            "result": 2
        }
    _gcd_answers(api_server, name)
    with api_server.client() as client:
        records = client.get(f"/api/v1/functions/{name}/invocations?limit=1000").json()
    calls = records["invocations"]
    assert len(calls) == CALLERS + 1
    # reuse=false: every one of the calls got an instance of its own.
    assert all(r["instantiated"] for r in calls)


def test_wasi_cgi_echo_distinct_bodies(api_server: ServerProcess) -> None:
    async def call(client: httpx.AsyncClient, k: int) -> tuple[int, httpx.Response]:
        body = f"caller {k}: ".encode() + bytes([k]) * (k * 37)
        resp = await client.post(f"/fn/echo/caller/{k}?k={k}", content=body)
        return k, resp

    wrong = []
    for k, resp in asyncio.run(_gather(api_server, call)):
        expected = f"caller {k}: ".encode() + bytes([k]) * (k * 37)
        if (
            resp.status_code != 200
            or resp.content != expected
            or resp.headers.get("x-echo-path") != f"/caller/{k}"
            or resp.headers.get("x-echo-query") != f"k={k}"
        ):
            wrong.append((k, resp.status_code, resp.content[:40], dict(resp.headers)))
    assert not wrong, f"{len(wrong)} callers got a wrong answer, e.g. {wrong[:3]}"


def test_mixed_functions_at_once(api_server: ServerProcess) -> None:
    """Callers of different functions, interleaved, still get only their own answers."""

    async def call(client: httpx.AsyncClient, k: int) -> tuple[int, bool, str]:
        if k % 3 == 0:
            resp = await client.get(f"/fn/hello/?name=caller{k}")
            return k, resp.text == f"Hello, caller{k}!\n", resp.text
        if k % 3 == 1:
            resp = await client.post("/api/v1/functions/fibonacci/invoke", json={"args": [k]})
            a, b = 0, 1
            for _ in range(k):
                a, b = b, a + b
            expected = (a + 2**63) % 2**64 - 2**63  # i64 wraps past fib(92)
            return k, resp.json() == {"result": expected}, resp.text
        resp = await client.post(
            "/function/invoke", json={"function_name": "gcd", "args": {"a": 7 * k, "b": 11 * k}}
        )
        return k, resp.json() == {"result": k}, resp.text

    results = asyncio.run(_gather(api_server, call))
    wrong = [(k, text) for k, ok, text in results if not ok]
    assert not wrong, f"{len(wrong)} callers got a wrong answer, e.g. {wrong[:5]}"


def test_first_burst_after_deploy(api_server: ServerProcess) -> None:
    """Callers arriving together right after a deploy all see the new function."""
    name = unique("gcd-burst")
    with api_server.client() as client:
        deployed(client, name, GCD_WAT)
    _gcd_answers(api_server, name)


def test_first_burst_after_delete(api_server: ServerProcess) -> None:
    """Callers arriving together right after a delete are all refused: none is still served."""
    name = unique("gcd-gone")
    with api_server.client() as client:
        deployed(client, name, GCD_WAT)
        assert client.post(f"/api/v1/functions/{name}/invoke", json={"args": [4, 6]}).json() == {
            "result": 2
        }
        assert client.delete(f"/api/v1/functions/{name}").status_code == 200

    async def call(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        resp = await client.post(f"/api/v1/functions/{name}/invoke", json={"args": [k, 2 * k]})
        return k, resp.status_code

    served = [k for k, status in asyncio.run(_gather(api_server, call)) if status != 404]
    assert not served, f"{len(served)} of {CALLERS} calls after the delete were not 404"
