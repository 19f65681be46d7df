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
from pathlib import Path

import httpx
import pytest

from tests.api.support import (
    assert_error,
    invocation_records,
    metric_value,
    started_during,
    unique,
)
from tests.faults.support import (
    EXTISM,
    FAULTS_BY_KEY,
    SERVER_ENV,
    assert_good,
    good_call,
)
from tests.helpers import ServerProcess
from tests.runtime.support import clean_env, make_pool, running
from wasmlet.abi import Invocation
from wasmlet.runtime.pool import CallReport, InlineOverrun

OFFLOADED = "wasmlet_offloaded_calls_total"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("spin") / "data", examples=True, env=SERVER_ENV
    ) as proc:
        yield proc


def _spin_beside_gcd(server: ServerProcess, name: str, timeout_ms: int) -> None:
    """One host_spin call, and gcd calls back to back while it runs; then what shows that
    the spin did not hold the event loop, from the server's own records and metrics:

    - the call was run off the event loop (the offloaded-calls counter rose by one);
    - it ended with `timeout`, having spun for (nearly) its whole timeout there: a call's
      replay off-loop gets only what its inline attempt left of the timeout, so a long stall
      on the loop would show as a short record;
    - gcd calls were admitted and answered while it was in flight (an event loop held by
      the spin admits nothing until it ends).
    """
    outcome: dict[str, httpx.Response] = {}
    with server.client() as client:
        offloaded = metric_value(client, OFFLOADED, function=name)
        gcd_before = {r["id"] for r in invocation_records(client, "gcd")}

    def spin() -> None:
        with server.client() as own:  # its 30 s timeout only guards against a hang
            outcome["resp"] = own.post(f"/api/v1/functions/{name}/invoke/host_spin")

    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.05)
    k = 0
    with server.client() as other:
        while spinner.is_alive() and k < 150:
            k += 1
            resp = other.post("/api/v1/functions/gcd/invoke", json={"args": [1071 * k, 462 * k]})
            assert resp.json() == {"result": 21 * k}, resp.text
    spinner.join()
    assert_error(outcome["resp"], 504, "timeout")

    with server.client() as client:
        assert metric_value(client, OFFLOADED, function=name) == offloaded + 1
        record = invocation_records(client, name)[0]
        assert record["error_code"] == "timeout", record
        assert record["duration_ms"] >= 0.8 * timeout_ms, record
        gcd = [r for r in invocation_records(client, "gcd") if r["id"] not in gcd_before]
        assert len(gcd) == k
        meanwhile = started_during(gcd, record)
        assert len(meanwhile) >= 5, (record, gcd)


@pytest.mark.integration
def test_first_host_call_spin_does_not_hold_the_event_loop(server: ServerProcess) -> None:
    name = unique("host-spin-first")
    with server.client() as client:
        FAULTS_BY_KEY["extism-host-spin"].deploy(client, name, timeout_ms=3000)
        assert_good(good_call(client, "extism", name), "extism")
    _spin_beside_gcd(server, name, 3000)


@pytest.mark.integration
def test_later_host_call_spins_do_not_hold_the_event_loop(server: ServerProcess) -> None:
    name = unique("host-spin-later")
    with server.client() as client:
        FAULTS_BY_KEY["extism-host-spin"].deploy(client, name, timeout_ms=1000)
    for _ in range(3):  # the first call is the test above's subject; the later ones too
        _spin_beside_gcd(server, name, 1000)


def test_an_inline_host_spin_ends_as_an_overrun_not_a_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What keeps the first call above from holding the loop, seen directly (a call that
    first runs inline, through the fast lane, is recorded only for its replay): run the
    way the invoker runs it inline (with a fuel cap, no epoch ticks), a host_spin call with
    a 3 s timeout ends as an overrun, which the invoker replays off the loop. Without the
    host-time budget it would end by its 3 s deadline instead, as a timeout, still inline:
    its fuel, burnt only by the few instructions between host calls, lasts longer."""
    clean_env(monkeypatch, tmp_path)
    with running(tmp_path / "data") as rt:
        pool = make_pool(rt, EXTISM, abi="extism", export="host_spin", wasi=True, timeout_ms=3000)
        report = CallReport()
        with pytest.raises(InlineOverrun):
            pool.execute(Invocation(), report, fuel_cap=rt.settings.inline_fuel)
        assert report.fuel_used is not None and report.fuel_used < rt.settings.inline_fuel
