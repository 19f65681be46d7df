"""Repeating a fault does not make the server grow: 20 more faults of each kind, 4 at a time,
leave the server's resident memory (VmRSS) within 100 MiB of where it was."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.support import unique
from tests.faults.support import (
    FAULT_LIST,
    SERVER_ENV,
    Fault,
    assert_good,
    good_call,
    records,
    server_rss,
    still_serving,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
REPEATS = 20
AT_ONCE = 4
# Growth allowed once the repeats are over (a leak of even 5 MiB per fault would exceed it)
# and at the peak while 4 faulty calls hold their memory (4 x 2 x 16 MiB caps, and slack).
SETTLED_GROWTH = 100 * MiB
PEAK_GROWTH = 200 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("rss") / "data", examples=True, env=SERVER_ENV
    ) as proc:
        yield proc


class RssWatch:
    """Samples the server's RSS every 20 ms on a thread; `peak` is the largest sample."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.peak = server_rss(server)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, server_rss(self.server))

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("fault", FAULT_LIST, ids=lambda f: f.key)
def test_repeated_faults_leave_memory_bounded(server: ServerProcess, fault: Fault) -> None:
    name = unique(fault.key)
    with server.client() as client:
        fault.deploy(client, name)
        for _ in range(2):  # warm: compiled module, pool, first instance, records table
            fault.check(fault.fire(client, name))
        before = server_rss(server)

        def fire(_: int) -> httpx.Response:
            with server.client() as own:
                return fault.fire(own, name)

        with RssWatch(server) as watch, ThreadPoolExecutor(AT_ONCE) as pool:
            responses = list(pool.map(fire, range(REPEATS)))
        after = server_rss(server)

        for resp in responses:
            fault.check(resp)
        codes = [r["error_code"] for r in records(client, name, limit=REPEATS + 2)]
        assert codes == [fault.code] * (REPEATS + 2)
        assert after - before < SETTLED_GROWTH, (
            f"RSS grew {(after - before) / MiB:.1f} MiB over {REPEATS} x {fault.key}"
        )
        assert watch.peak - before < PEAK_GROWTH, (
            f"RSS peaked {(watch.peak - before) / MiB:.1f} MiB above its start"
        )
        assert_good(good_call(client, fault.abi, name), fault.abi)
        still_serving(client)
