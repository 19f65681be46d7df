"""Faults stay contained under load: while threads fire every fault of the catalogue over and
over, a concurrent stream of good requests to other functions gets every answer right, and
every fault still ends with its own code.

No timing is asserted here: latency under faults is bench/faults.py's figure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.support import assert_error, metric_value, unique
from tests.faults.support import (
    FAULT_LIST,
    FAULTS_BY_KEY,
    SERVER_ENV,
    records,
    still_serving,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

GOOD_CALLS = 150  # per good stream
FAULT_THREADS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # No compute-slot limit: the bursts below must run in parallel to race each other.
    env = {**SERVER_ENV, "WASMLET_COMPUTE_SLOTS": "0"}
    with ServerProcess(tmp_path_factory.mktemp("load") / "data", examples=True, env=env) as proc:
        yield proc


# Each good stream: (label, request for the k-th call, check of its answer) -> problem or None.
def _gcd(client: httpx.Client, k: int) -> str | None:
    resp = client.post("/api/v1/functions/gcd/invoke", json={"args": [1071 * k, 462 * k]})
    if resp.status_code != 200 or resp.json() != {"result": 21 * k}:
        return f"gcd #{k}: {resp.status_code} {resp.text[:200]}"
    return None


def _hello_plugin(client: httpx.Client, k: int) -> str | None:
    resp = client.post("/api/v1/functions/hello-plugin/invoke", content=f"caller{k}".encode())
    if resp.status_code != 200 or resp.json() != {"message": f"Hello caller{k}"}:
        return f"hello-plugin #{k}: {resp.status_code} {resp.text[:200]}"
    return None


def _hello_cgi(client: httpx.Client, k: int) -> str | None:
    resp = client.get(f"/fn/hello/?name=N{k}")
    if resp.status_code != 200 or resp.text != f"Hello, N{k}!\n":
        return f"hello #{k}: {resp.status_code} {resp.text[:200]}"
    return None


GOOD_STREAMS: list[Callable[[httpx.Client, int], str | None]] = [_gcd, _hello_plugin, _hello_cgi]


def test_good_requests_all_succeed_while_faults_fire(server: ServerProcess) -> None:
    names = {fault.key: unique(fault.key) for fault in FAULT_LIST}
    with server.client() as client:
        for fault in FAULT_LIST:
            fault.deploy(client, names[fault.key])
        still_serving(client)

    done = threading.Event()
    lock = threading.Lock()
    fired: dict[str, int] = {fault.key: 0 for fault in FAULT_LIST}
    wrong_faults: list[str] = []

    def fault_thread(offset: int) -> None:
        order = FAULT_LIST[offset:] + FAULT_LIST[:offset]  # each thread from its own start
        with server.client() as client:
            passes = 0
            while passes == 0 or not done.is_set():
                for fault in order:
                    resp = fault.fire(client, names[fault.key])
                    try:
                        fault.check(resp)
                    except AssertionError as exc:
                        with lock:
                            wrong_faults.append(f"{fault.key}: {exc}")
                    with lock:
                        fired[fault.key] += 1
                passes += 1

    def good_stream(call: Callable[[httpx.Client, int], str | None]) -> list[str]:
        with server.client() as client:
            return [p for k in range(1, GOOD_CALLS + 1) if (p := call(client, k))]

    with ThreadPoolExecutor(FAULT_THREADS + len(GOOD_STREAMS)) as pool:
        step = len(FAULT_LIST) // FAULT_THREADS
        faulting = [pool.submit(fault_thread, i * step) for i in range(FAULT_THREADS)]
        good = [pool.submit(good_stream, call) for call in GOOD_STREAMS]
        problems = [p for future in good for p in future.result()]
        done.set()
        for future in faulting:
            future.result()

    assert not problems, f"{len(problems)} good requests failed, e.g. {problems[:5]}"
    assert not wrong_faults, wrong_faults[:5]
    assert all(count >= FAULT_THREADS for count in fired.values()), fired
    with server.client() as client:
        still_serving(client)
        for fault in FAULT_LIST:
            codes = {r["error_code"] for r in records(client, names[fault.key], limit=1000)}
            assert codes == {fault.code}, (fault.key, codes)


BURST = 12
BURSTS = 8
BURST_TIMEOUT_MS = 1000


def test_simultaneous_host_loop_timeouts_all_report_timeout(server: ServerProcess) -> None:
    """Bursts of host-call loops on the executor, started together so that their deadlines
    fall on the same epoch tick.

    The deadline then often strikes inside a host function's nested kernel call, and leaves
    the host function as a Python exception, which wasmtime-py parks in one process-wide
    variable (wasmtime._func.LAST_EXCEPTION). Before host exceptions were kept per thread
    (wasm/fastcall.py `guarded`), another thread's call took it, and ~5% of these calls
    answered 500 guest_trap "wasm error: python exception" instead of 504 timeout.
    """
    fault = FAULTS_BY_KEY["extism-host-loop"]
    name = unique("host-loop-burst")
    with server.client() as client:
        fault.deploy(client, name, timeout_ms=BURST_TIMEOUT_MS)
        # A pure wasm loop overruns the inline fuel cap at once: the function moves to the
        # executor, where the bursts run in parallel (checked below).
        assert_error(client.post(f"/api/v1/functions/{name}/invoke/spin"), 504, "timeout")
        offloaded_before = metric_value(client, "wasmlet_offloaded_calls_total", function=name)
    clients = [server.client() for _ in range(BURST)]
    start = threading.Barrier(BURST)

    def fire(index: int) -> httpx.Response:
        start.wait()
        return fault.fire(clients[index], name)

    answers: list[str] = []
    try:
        with ThreadPoolExecutor(BURST) as pool:
            for _ in range(BURSTS):
                for resp in pool.map(fire, range(BURST)):
                    answers.append(f"{resp.status_code} {resp.text[:120]}")
    finally:
        for c in clients:
            c.close()
    with server.client() as client:
        offloaded = metric_value(client, "wasmlet_offloaded_calls_total", function=name)
    assert offloaded - offloaded_before >= BURST * BURSTS, "the bursts did not run in parallel"
    wrong = [a for a in answers if not a.startswith("504 ")]
    assert not wrong, f"{len(wrong)} of {len(answers)} timeouts misreported, e.g. {wrong[:3]}"
