"""Admission control: a full pool queues callers, then refuses them with 503 overloaded."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx

from tests.api.support import (
    FIXTURES,
    GCD_WAT,
    assert_error,
    deploy,
    deployed,
    metric_value,
    unique,
)
from tests.helpers import ServerProcess


def test_full_pool_answers_503_with_retry_after_then_recovers(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"WASMLET_QUEUE_TIMEOUT_MS": "300"})
    server.start()
    try:
        with server.client() as c:
            slow, fast = unique("slow"), unique("fast")
            r = deploy(c, slow, FIXTURES / "loop.wat", export="spin", timeout_ms=2000, pool_size=1)
            assert r.status_code == 201, r.text
            assert deploy(c, fast, GCD_WAT, export="gcd").status_code == 201

        async def scenario() -> tuple[httpx.Response, httpx.Response, float, bool, httpx.Response]:
            async with httpx.AsyncClient(
                base_url=server.url, timeout=30, headers=server.auth_headers()
            ) as ac:
                hog = asyncio.create_task(ac.post(f"/api/v1/functions/{slow}/invoke", json={}))
                # Once it is offloaded, the hog holds the only slot (the 30 s: a stall guard).
                deadline = time.monotonic() + 30
                with server.client() as c:
                    while not metric_value(c, "wasmlet_offloaded_calls_total", function=slow):
                        assert time.monotonic() < deadline and not hog.done()
                        await asyncio.sleep(0.02)
                started = time.monotonic()
                refused = await ac.post(f"/api/v1/functions/{slow}/invoke", json={})
                waited = time.monotonic() - started
                hog_running = not hog.done()
                # Another function is not affected by the full pool.
                other = await ac.post(f"/api/v1/functions/{fast}/invoke", json={"args": [6, 4]})
                return await hog, refused, waited, hog_running, other

        hog, refused, waited, hog_running, other = asyncio.run(scenario())
        assert hog.status_code == 504 and hog.json()["error"]["code"] == "timeout"
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        # Queued for the queue timeout (at least), and refused while the hog still ran: it
        # did not wait for the hog's 2 s.
        assert waited >= 0.25, waited
        assert hog_running
        assert other.status_code == 200 and other.json() == {"result": 2}

        with server.client() as c:  # the slot is free again once the hog has ended
            r = c.post(f"/api/v1/functions/{slow}/invoke", json={})
            assert r.status_code == 504
            metrics = c.get("/metrics").text
            assert f'wasmlet_overloaded_total{{function="{slow}"}} 1.0' in metrics
    finally:
        server.stop()


def test_compute_slots_queue_long_calls_and_refuse_past_the_queue_timeout(
    server_factory: Any,
) -> None:
    """With one compute slot, a second long pure-compute call waits for the first; past the
    queue timeout it is refused as overloaded, while calls on the event loop go on."""
    server = server_factory(
        env={"WASMLET_COMPUTE_SLOTS": "1", "WASMLET_QUEUE_TIMEOUT_MS": "200"}, examples=True
    )
    with server.client() as client:
        name = unique("spin")
        deployed(client, name, FIXTURES / "loop.wat", timeout_ms=1500)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            calls = [
                pool.submit(client.post, f"/api/v1/functions/{name}/invoke", json={"args": []})
                for _ in range(2)
            ]
            assert client.post("/fn/gcd?args=12,18").json() == {"result": 6}
            answers = sorted(f.result().status_code for f in calls)
        assert answers == [503, 504], answers
        refused = next(f.result() for f in calls if f.result().status_code == 503)
        assert "compute slot" in assert_error(refused, 503, "overloaded")
