"""A plugin calling the host in a tight loop must not hold the event loop for its timeout.

A function's calls run inline on the event loop thread while they are short
(runtime/dispatch.py), each bounded by a fuel cap meant to stand for 10-45 ms; one that
overruns it is replayed on the executor and the function is moved off the loop. Host functions
burn no fuel, and the epoch ticker does not tick for inline calls, so a loop that spends its
time in the host (here `get_log_level`, ~3 wasm instructions per call) used to run inline for
~130 s, far past its timeout, with every other request waiting. Host functions now check the
call's deadline (host/context.py), which bounds the stall by the function's timeout. But that
is still every other request's wait (5 s with the default timeout), and as the call then ends
inline with `timeout` rather than as an overrun, the function is never moved off the loop:
every later call stalls the server again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.support import assert_error, unique
from tests.faults.support import FAULTS_BY_KEY, SERVER_ENV, SLACK_S, assert_good, good_call
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

# A good request may wait this long while the loop runs: generous next to the inline budget,
# and a fraction of the loop's timeout.
GOOD_WAIT_S = 0.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("spin") / "data", examples=True, env=SERVER_ENV
    ) as proc:
        yield proc


def _spin_and_measure(server: ServerProcess, name: str, timeout_ms: int) -> list[float]:
    """One host_spin call (it must end with 504 timeout) and, meanwhile, gcd calls back to
    back: how long each of them took."""
    outcome: dict[str, httpx.Response] = {}

    def spin() -> None:
        with server.client() as own:
            own.timeout = httpx.Timeout(timeout_ms / 1000 + SLACK_S)
            outcome["resp"] = own.post(f"/api/v1/functions/{name}/invoke/host_spin")

    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.05)
    waits = []
    with server.client() as other:
        k = 0
        while spinner.is_alive():
            k += 1
            started = time.monotonic()
            resp = other.post("/api/v1/functions/gcd/invoke", json={"args": [1071 * k, 462 * k]})
            waits.append(time.monotonic() - started)
            assert resp.json() == {"result": 21 * k}, resp.text
    spinner.join()
    assert_error(outcome["resp"], 504, "timeout")
    return waits


def test_first_host_call_spin_does_not_hold_the_event_loop(server: ServerProcess) -> None:
    name = unique("host-spin-first")
    with server.client() as client:
        FAULTS_BY_KEY["extism-host-spin"].deploy(client, name, timeout_ms=3000)
        assert_good(good_call(client, "extism", name), "extism")
    waits = _spin_and_measure(server, name, 3000)
    assert max(waits) < GOOD_WAIT_S, f"a gcd call waited {max(waits):.2f} s behind the loop"


def test_later_host_call_spins_do_not_hold_the_event_loop(server: ServerProcess) -> None:
    name = unique("host-spin-later")
    with server.client() as client:
        FAULTS_BY_KEY["extism-host-spin"].deploy(client, name, timeout_ms=1000)
    _spin_and_measure(server, name, 1000)  # the first call: the test above's subject
    for _ in range(2):
        waits = _spin_and_measure(server, name, 1000)
        assert max(waits) < GOOD_WAIT_S, f"a gcd call waited {max(waits):.2f} s behind the loop"
