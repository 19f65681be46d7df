"""`--workers 2`: worker processes share the registry; a change in one is seen by all."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.support import GCD_WAT, deployed, unique
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

CALLS = 200


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("workers") / "data", workers=2, examples=True
    ) as proc:
        yield proc


def _worker_pids(server: ServerProcess) -> set[int]:
    """Workers log one ready line each; wait (polling) until both have."""
    pids: set[int] = set()
    for _ in range(300):
        pids = {int(p) for p in re.findall(r"wasmlet ready on \S+ \(pid (\d+)", server.log())}
        if len(pids) >= 2:
            break
        time.sleep(0.05)
    assert len(pids) == 2, server.log()
    return pids


def _pids_that_counted(metrics_dir: Path) -> set[int]:
    """prometheus-client's multiprocess mode keeps one file per process that counted."""
    return {int(m) for f in metrics_dir.glob("counter_*.db") for m in re.findall(r"\d+", f.name)}


async def _many(server: ServerProcess, name: str) -> list[tuple]:
    """CALLS invocations, 20 at a time, each on a fresh connection so both workers take some."""
    headers = {"connection": "close"}
    sem = asyncio.Semaphore(20)
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers=server.auth_headers()
    ) as client:

        async def call(k: int) -> tuple[int, int, str]:
            async with sem:
                resp = await client.post(
                    f"/api/v1/functions/{name}/invoke",
                    json={"args": [1071 * k, 462 * k]},
                    headers=headers,
                )
                return k, resp.status_code, resp.text

        return await asyncio.gather(*(call(k) for k in range(1, CALLS + 1)))


def test_deploy_once_invoke_everywhere_delete_everywhere(server: ServerProcess) -> None:
    workers = _worker_pids(server)
    name = unique("gcd-workers")
    with server.client() as client:
        deployed(client, name, GCD_WAT)

    results = asyncio.run(_many(server, name))
    wrong = [(k, status, text) for k, status, text in results if text != f'{{"result": {21 * k}}}']
    assert not wrong, f"{len(wrong)} of {CALLS} calls failed, e.g. {wrong[:3]}"
    with server.client() as client:
        # Metrics are aggregated across the workers, and every call left a record. Each
        # worker flushes its own queue (within ~1 s), so poll until both have.
        pattern = rf'wasmlet_invocations_total\{{[^}}]*function="{name}"[^}}]*\}} (\S+)'
        counted = records = 0.0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            counted = sum(float(v) for v in re.findall(pattern, text))
            resp = client.get(f"/api/v1/functions/{name}/invocations?limit=1000")
            records = len(resp.json()["invocations"])
            if counted >= CALLS and records >= CALLS:
                break
            time.sleep(0.1)
        assert (counted, records) == (CALLS, CALLS)
        # Both worker processes served some of the calls (each counted invocations).
        assert workers <= _pids_that_counted(server.data_dir / "metrics"), server.log()
        resp = client.delete(f"/api/v1/functions/{name}")
        assert resp.status_code == 200, resp.text

    results = asyncio.run(_many(server, name))
    served = [(k, status) for k, status, _ in results if status != 404]
    assert not served, f"{len(served)} calls were still served after the delete: {served[:5]}"
