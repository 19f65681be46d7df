"""Limits and faults: timeouts, the memory cap and traps end one invocation, not the server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.api.support import (
    FIXTURES,
    assert_error,
    deployed,
    invocation_records,
    invoke,
    logged_start,
    result_of,
    started_during,
    unique,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration


STAMPED_LOOP = FIXTURES / "stamped_loop.wat"


def _still_serving(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert result_of(invoke(client, "gcd", [1071, 462])) == 21
    assert client.get("/fn/hello/?name=Ada").text == "Hello, Ada!\n"


def test_infinite_loop_times_out_while_others_answer(api_server: ServerProcess) -> None:
    loop_name = unique("loop")
    with api_server.client() as client:
        deployed(client, loop_name, FIXTURES / "loop.wat", export="spin", timeout_ms=1000)
        assert result_of(invoke(client, "gcd", [2, 4])) == 2  # warm
        gcd_before = {r["id"] for r in invocation_records(client, "gcd")}

    async def scenario() -> tuple[httpx.Response, list[httpx.Response]]:
        async with httpx.AsyncClient(
            base_url=api_server.url, timeout=30, headers=api_server.auth_headers()
        ) as client:
            loop_call = asyncio.create_task(client.post(f"/api/v1/functions/{loop_name}/invoke"))
            answered: list[httpx.Response] = []
            k = 0
            while not loop_call.done() and k < 100:  # waves of 5 callers while the loop runs
                calls = [
                    client.post("/api/v1/functions/gcd/invoke", json={"args": [1071 * i, 462 * i]})
                    for i in range(k + 1, k + 6)
                ]
                answered += await asyncio.gather(*calls)
                k += 5
            return await loop_call, answered

    resp, answered = asyncio.run(scenario())
    assert_error(resp, 504, "timeout")
    for k, gcd_resp in enumerate(answered, start=1):
        assert result_of(gcd_resp) == 21 * k

    with api_server.client() as client:
        [loop_record] = invocation_records(client, loop_name)
        assert loop_record["error_code"] == "timeout"
        # It ran until its deadline (less any inline attempt before it was moved off the
        # event loop), not less ...
        assert loop_record["duration_ms"] >= 0.8 * 1000, loop_record
        # ... and meanwhile the event loop went on admitting and answering other calls.
        gcd_records = [r for r in invocation_records(client, "gcd") if r["id"] not in gcd_before]
        assert len(gcd_records) == len(answered)
        meanwhile = started_during(gcd_records, loop_record)
        assert len(meanwhile) >= 5, (loop_record, gcd_records)
        assert all(r["error_code"] is None for r in gcd_records)

        # The timed-out function fails the same way again, and nothing else is hurt.
        assert_error(client.post(f"/api/v1/functions/{loop_name}/invoke"), 504, "timeout")
        _still_serving(client)
        records = invocation_records(client, loop_name)
        assert [r["error_code"] for r in records] == ["timeout", "timeout"]
        assert all(r["status"] == 504 for r in records)
        assert all(r["duration_ms"] >= 0.8 * 1000 for r in records), records


def test_timeout_message_names_the_configured_limit(api_server: ServerProcess) -> None:
    name = unique("loop-msg")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "loop.wat", export="spin", timeout_ms=300)
        assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 504, "timeout", "300 ms")


def _two_loops_at_once(server: ServerProcess) -> list[dict]:
    """Two concurrent calls of a stamped loop with a 1 s timeout; both end with `timeout`.
    Their records, the one whose run began first first (`logged_start`)."""
    name = unique("loop-pair")
    with server.client() as client:
        deployed(client, name, STAMPED_LOOP, export="spin", timeout_ms=1000)
        # One call first so the concurrent pair does not race the deploy (see test_concurrency).
        assert result_of(invoke(client, "gcd", [2, 4])) == 2

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, headers=server.auth_headers()
        ) as client:
            calls = [client.post(f"/api/v1/functions/{name}/invoke") for _ in range(2)]
            return await asyncio.gather(*calls)

    for resp in asyncio.run(both()):
        assert_error(resp, 504, "timeout")
    with server.client() as client:
        records = invocation_records(client, name)
    assert [r["error_code"] for r in records] == ["timeout", "timeout"], records
    # Each ran until its deadline (less an inline attempt before it moved off the loop).
    assert all(r["duration_ms"] >= 0.8 * 1000 for r in records), records
    return sorted(records, key=logged_start)


def test_two_loops_at_once_both_time_out_side_by_side(tmp_path: Path) -> None:
    # Two compute slots: both loops run at once. The later one began before the earlier
    # one's run ended (the clock each guest read when it started, against the earlier
    # one's start + its duration).
    env = {"WASMLET_COMPUTE_SLOTS": "2"}
    with ServerProcess(tmp_path / "data", examples=True, env=env) as server:
        first, second = _two_loops_at_once(server)
    first_ends = logged_start(first) + first["duration_ms"] / 1000
    assert logged_start(second) < first_ends, (first, second)


def test_two_loops_with_one_compute_slot_run_one_after_the_other(tmp_path: Path) -> None:
    # The counterpart, so the test above can fail: with one compute slot (the default on a
    # 2-CPU machine) the later loop starts only once the earlier one has ended, and still
    # gets its whole timeout. (The starts are the guests' own clock readings, a little
    # after each run began; the margin covers that, not the machine's speed: a slower
    # machine only starts the second run later.)
    env = {"WASMLET_COMPUTE_SLOTS": "1"}
    with ServerProcess(tmp_path / "data", examples=True, env=env) as server:
        first, second = _two_loops_at_once(server)
    gap = logged_start(second) - logged_start(first)
    assert gap >= 0.9 * first["duration_ms"] / 1000, (first, second)


def test_wasi_cgi_spin_times_out(api_server: ServerProcess) -> None:
    name = unique("cgi-spin")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "cgi_spin.wat", abi="wasi-cgi", timeout_ms=500)
        for path in (f"/api/v1/functions/{name}/invoke", f"/fn/{name}/anything"):
            assert_error(client.post(path, content=b"ignored"), 504, "timeout")
        records = invocation_records(client, name)
        assert [r["error_code"] for r in records] == ["timeout", "timeout"], records
        # Each ran until its deadline, not less.
        assert all(r["duration_ms"] >= 0.9 * 500 for r in records), records
        _still_serving(client)


def test_memory_bomb_hits_the_cap(api_server: ServerProcess) -> None:
    name = unique("membomb")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "membomb.wat", export="grow", memory_mb=16)
        assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 500, "memory_limit")
        _still_serving(client)
        # Again: the instance that hit the cap was discarded, a new one hits it the same way.
        assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 500, "memory_limit")
        records = invocation_records(client, name)
        assert [r["error_code"] for r in records] == ["memory_limit", "memory_limit"]
        for record in records:
            # Memory grew to the cap and not past it.
            assert 15 * 2**20 <= record["peak_memory"] <= 16 * 2**20, record


def test_memory_cap_follows_the_spec(api_server: ServerProcess) -> None:
    name = unique("membomb-big")
    with api_server.client() as client:
        deployed(client, name, FIXTURES / "membomb.wat", export="grow", memory_mb=40)
        assert_error(client.post(f"/api/v1/functions/{name}/invoke"), 500, "memory_limit")
        [record] = invocation_records(client, name)
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
        records = list(reversed(invocation_records(client, name)))  # oldest first
        assert [r["error_code"] for r in records] == [
            None, None, "guest_trap", None, "guest_trap", None, "guest_trap", None
        ]  # fmt: skip
        # A trapped instance is discarded: the call after each trap instantiates afresh,
        # while calls after a success reuse the pooled instance.
        assert [r["instantiated"] for r in records] == [
            True, False, False, True, False, True, False, True
        ]  # fmt: skip
        _still_serving(client)
