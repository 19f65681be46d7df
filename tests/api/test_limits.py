"""Limits and faults: timeouts, the memory cap and traps end one invocation, not the server."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.api.support import FIXTURES, assert_error, deployed, invoke, result_of, unique
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration


def _records(client: httpx.Client, name: str) -> list[dict]:
    resp = client.get(f"/api/v1/functions/{name}/invocations")
    assert resp.status_code == 200, resp.text
    return resp.json()["invocations"]  # newest first


def _still_serving(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert result_of(invoke(client, "gcd", [1071, 462])) == 21
    assert client.get("/fn/hello/?name=Ada").text == "Hello, Ada!\n"


def test_infinite_loop_times_out_while_others_answer(api_server: ServerProcess) -> None:
    loop_name = unique("loop")
    with api_server.client() as client:
        deployed(client, loop_name, FIXTURES / "loop.wat", export="spin", timeout_ms=500)
        assert result_of(invoke(client, "gcd", [2, 4])) == 2  # warm

    async def scenario() -> tuple[httpx.Response, float, list[tuple[float, httpx.Response]], bool]:
        async with httpx.AsyncClient(
            base_url=api_server.url, timeout=30, headers=api_server.auth_headers()
        ) as client:
            started = time.monotonic()
            loop_call = asyncio.create_task(client.post(f"/api/v1/functions/{loop_name}/invoke"))

            async def gcd(k: int) -> tuple[float, httpx.Response]:
                t0 = time.monotonic()
                resp = await client.post(
                    "/api/v1/functions/gcd/invoke", json={"args": [1071 * k, 462 * k]}
                )
                return time.monotonic() - t0, resp

            answered: list[tuple[float, httpx.Response]] = []
            for wave in range(4):  # 4 waves of 5 concurrent callers, one after the other
                answered += await asyncio.gather(*(gcd(5 * wave + i + 1) for i in range(5)))
            loop_pending = not loop_call.done()
            resp = await loop_call
            return resp, time.monotonic() - started, answered, loop_pending

    resp, elapsed, answered, loop_pending = asyncio.run(scenario())
    assert_error(resp, 504, "timeout")
    assert 0.45 <= elapsed < 3.0, f"the loop answered after {elapsed:.2f} s"
    for k, (latency, gcd_resp) in enumerate(answered, start=1):
        assert result_of(gcd_resp) == 21 * k
        assert latency < 0.4, f"gcd call {k} took {latency:.3f} s while the loop ran"
    assert loop_pending, "every gcd call should have been answered while the loop still ran"

    with api_server.client() as client:
        # The timed-out function fails the same way again, and nothing else is hurt.
        t0 = time.monotonic()
        assert_error(client.post(f"/api/v1/functions/{loop_name}/invoke"), 504, "timeout")
        assert time.monotonic() - t0 < 3.0
        _still_serving(client)
        records = _records(client, loop_name)
        assert [r["error_code"] for r in records] == ["timeout", "timeout"]
        assert all(r["status"] == 504 for r in records)


def test_timeout_message_names_the_configured_limit(api_server: ServerProcess) -> None:
    name = unique("loop-msg")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "loop.wat", export="spin", timeout_ms=300)
        assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 504, "timeout", "300 ms")


def test_two_loops_at_once_both_time_out(api_server: ServerProcess) -> None:
    name = unique("loop-pair")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "loop.wat", export="spin", timeout_ms=400)
        # One call first so the concurrent pair does not race the deploy (see test_concurrency).
        assert result_of(invoke(client, "gcd", [2, 4])) == 2

    async def both() -> tuple[float, list[httpx.Response]]:
        async with httpx.AsyncClient(
            base_url=api_server.url, timeout=30, headers=api_server.auth_headers()
        ) as client:
            t0 = time.monotonic()
            calls = [client.post(f"/api/v1/functions/{name}/invoke") for _ in range(2)]
            responses = await asyncio.gather(*calls)
            return time.monotonic() - t0, responses

    elapsed, responses = asyncio.run(both())
    for resp in responses:
        assert_error(resp, 504, "timeout")
    # They ran side by side, not one after the other.
    assert elapsed < 1.5, f"two 400 ms loops took {elapsed:.2f} s"


def test_wasi_cgi_spin_times_out(api_server: ServerProcess) -> None:
    name = unique("cgi-spin")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "cgi_spin.wat", abi="wasi-cgi", timeout_ms=500)
        for path in (f"/api/v1/functions/{name}/invoke", f"/fn/{name}/anything"):
            t0 = time.monotonic()
            resp = client.post(path, content=b"ignored")
            elapsed = time.monotonic() - t0
            assert_error(resp, 504, "timeout")
            assert 0.45 <= elapsed < 3.0, f"{path} answered after {elapsed:.2f} s"
        _still_serving(client)


def test_memory_bomb_hits_the_cap(api_server: ServerProcess) -> None:
    name = unique("membomb")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "membomb.wat", export="grow", memory_mb=16)
        assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 500, "memory_limit")
        _still_serving(client)
        # Again: the instance that hit the cap was discarded, a new one hits it the same way.
        assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 500, "memory_limit")
        records = _records(client, name)
        assert [r["error_code"] for r in records] == ["memory_limit", "memory_limit"]
        for record in records:
            # Memory grew to the cap and not past it.
            assert 15 * 2**20 <= record["peak_memory"] <= 16 * 2**20, record


def test_memory_cap_follows_the_spec(api_server: ServerProcess) -> None:
    name = unique("membomb-big")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "membomb.wat", export="grow", memory_mb=40)
        assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 500, "memory_limit")
        [record] = _records(client, name)
        assert 39 * 2**20 <= record["peak_memory"] <= 40 * 2**20, record
        _still_serving(client)


def test_trap_then_correct_answer(api_server: ServerProcess) -> None:
    name = unique("trap")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "trap.wat", export="divide")
        assert result_of(invoke(client, name, [84, 2])) == 42
        assert result_of(invoke(client, name, [85, 5])) == 17  # reuses the first instance
        assert_error(invoke(client, name, [1, 0]), 500, "guest_trap", "divide by zero")
        assert result_of(invoke(client, name, [-9, 3])) == -3
        assert_error(invoke(client, name, [-(2**31), -1]), 500, "guest_trap", "overflow")
        assert result_of(invoke(client, name, [100, 7])) == 14
        resp = client.post(f"/api/v1/functions/{name}/invoke/boom")
        assert_error(resp, 500, "guest_trap", "unreachable")
        assert result_of(invoke(client, name, [9, 3])) == 3
        records = list(reversed(_records(client, name)))  # oldest first
        assert [r["error_code"] for r in records] == [
            None, None, "guest_trap", None, "guest_trap", None, "guest_trap", None
        ]  # fmt: skip
        # A trapped instance is discarded: the call after each trap instantiates afresh,
        # while calls after a success reuse the pooled instance.
        assert [r["instantiated"] for r in records] == [
            True, False, False, True, False, True, False, True
        ]  # fmt: skip
        _still_serving(client)
