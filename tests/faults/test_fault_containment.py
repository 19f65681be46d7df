"""Each faulty guest ends with its own error code, in bounded time, and its instance is
discarded: the next call to the same function runs on a fresh instance and succeeds.

Guests: tests/fixtures/faults/*.wat. Several tests here were written against defects this
suite found (no answer at all for a CGI header with a control byte, JSON-declared output never
checked, a trap after kernel memory ran out reported as guest_trap); they now guard the fixes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.support import assert_error, deployed, unique
from tests.faults.support import (
    CGI,
    FAULT_LIST,
    FAULTS_BY_KEY,
    MAX_LOG_BYTES,
    MEMORY_MB,
    SERVER_ENV,
    TIMEOUT_MS,
    Fault,
    assert_good,
    good_call,
    records,
    still_serving,
    timed,
)
from tests.helpers import ServerProcess

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("faults") / "data", examples=True, env=SERVER_ENV
    ) as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, which JSON does not have."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# -- every fault: its code, bounded time, instance discarded -----------------------------------


@pytest.mark.parametrize("fault", FAULT_LIST, ids=lambda f: f.key)
def test_fault_ends_with_its_code_and_the_instance_is_discarded(
    client: httpx.Client, fault: Fault
) -> None:
    name = unique(fault.key)
    fault.deploy(client, name)
    assert_good(good_call(client, fault.abi, name), fault.abi)
    assert_good(good_call(client, fault.abi, name), fault.abi)

    # Bounded: it ends with its own code (a fault nothing stopped would run into the
    # client's 30 s timeout instead) ...
    resp, elapsed = timed(fault.fire, client, name)
    fault.check(resp)
    if fault.code == "timeout":  # ... and a timeout only at its deadline, not before
        limit_s = fault.timeout_ms / 1000
        assert elapsed >= 0.9 * limit_s, f"{fault.key} timed out after {elapsed:.2f} s"

    assert_good(good_call(client, fault.abi, name), fault.abi)
    after, failed, second, first = records(client, name)[:4]
    assert (failed["status"], failed["error_code"]) == (fault.status, fault.code), failed
    assert [r["error_code"] for r in (after, second, first)] == [None, None, None]
    assert first["instantiated"] is True
    if fault.abi != "wasi-cgi":  # pooled: a healthy instance serves again ...
        assert second["instantiated"] is False, second
    # ... but the one that faulted is gone: the call after the fault starts afresh.
    assert after["instantiated"] is True, after
    still_serving(client)


def test_memory_growth_stops_at_the_cap(client: httpx.Client) -> None:
    fault = FAULTS_BY_KEY["core-memory"]
    name = unique("grow")
    fault.deploy(client, name)
    for _ in range(3):
        fault.check(fault.fire(client, name))
    for record in records(client, name)[:3]:
        assert record["error_code"] == "memory_limit"
        # It grew to the cap (1 MiB at a time) and not past it.
        assert (MEMORY_MB - 1) * MiB <= record["peak_memory"] <= MEMORY_MB * MiB, record


def test_host_call_loop_keeps_its_log_capped(client: httpx.Client) -> None:
    """The loop logs a line per host call; the invocation keeps only max_log_bytes."""
    fault = FAULTS_BY_KEY["extism-host-loop"]
    name = unique("host-loop-log")
    fault.deploy(client, name)
    fault.check(fault.fire(client, name))
    [record] = records(client, name)[:1]
    logs = record["logs"]
    assert logs.startswith("[info] host call\n"), logs[:100]
    assert "bytes dropped]" in logs, logs[-100:]
    assert len(logs.encode()) <= MAX_LOG_BYTES + 64, len(logs)


def test_stdout_flood_is_cut_at_the_output_cap(client: httpx.Client) -> None:
    fault = FAULTS_BY_KEY["cgi-stdout-flood"]
    name = unique("flood")
    fault.deploy(client, name)
    message = fault.check(fault.fire(client, name))
    assert "stdout" in message
    [record] = records(client, name)[:1]
    assert (record["status"], record["error_code"]) == (500, "guest_error")
    # Refused at the cap, not after writing 100 MiB: far sooner than its 2 s deadline.
    assert record["duration_ms"] < fault.timeout_ms, record


def test_trapped_stack_overflow_names_the_cause(client: httpx.Client) -> None:
    fault = FAULTS_BY_KEY["core-stack"]
    name = unique("stack")
    fault.deploy(client, name)
    message = fault.check(fault.fire(client, name))
    assert "call stack exhausted" in message


# -- proc_exit ----------------------------------------------------------------------------------


def test_cgi_proc_exit_zero_is_a_success(client: httpx.Client) -> None:
    name = unique("cgi-exit0")
    deployed(client, name, CGI, abi="wasi-cgi", export="exit0", timeout_ms=TIMEOUT_MS)
    resp = client.post(f"/fn/{name}/")
    assert resp.status_code == 200, resp.text
    assert resp.content == b"bye"
    assert resp.headers["x-exit"] == "zero"
    assert resp.headers["content-type"] == "text/plain"
    [record] = records(client, name)[:1]
    assert (record["status"], record["error_code"], record["instantiated"]) == (200, None, True)


def test_cgi_proc_exit_three_does_not_send_its_partial_output(client: httpx.Client) -> None:
    """Exit 3 after writing `partial`: the partial output is not sent as if it succeeded."""
    fault = FAULTS_BY_KEY["cgi-exit3"]
    name = unique("cgi-exit3")
    fault.deploy(client, name)
    resp = fault.fire(client, name)
    fault.check(resp)
    assert b"partial" not in resp.content


def test_extism_proc_exit_zero_is_a_success_and_retires_the_instance(
    client: httpx.Client,
) -> None:
    """proc_exit(0) keeps the output set before it (EXTISM-ABI.md section 1) and, like a WASI
    command's exit, leaves an instance that must not run again."""
    name = unique("extism-exit0")
    FAULTS_BY_KEY["extism-exit3"].deploy(client, name)
    assert_good(good_call(client, "extism", name), "extism")
    resp = client.post(f"/api/v1/functions/{name}/invoke/exit0")
    assert resp.status_code == 200, resp.text
    assert resp.content == b"bye"
    assert_good(good_call(client, "extism", name), "extism")
    after, exited, _ = records(client, name)[:3]
    assert (exited["status"], exited["error_code"]) == (200, None)
    assert after["instantiated"] is True, after


# -- output that is not what it claims to be ---------------------------------------------------


@pytest.mark.parametrize("export", ["nan", "inf"])
def test_core_non_finite_result_is_still_json(client: httpx.Client, export: str) -> None:
    """A core answer is JSON the host builds; NaN and infinity have no JSON form."""
    name = unique(f"core-{export}")
    FAULTS_BY_KEY["core-trap"].deploy(client, name)
    resp = client.post(f"/api/v1/functions/{name}/invoke/{export}", json={"args": []})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert _strict_json(resp.text) == {"result": export}


def test_cgi_output_that_is_not_utf8_passes_through_as_bytes(client: httpx.Client) -> None:
    name = unique("cgi-binary")
    deployed(client, name, CGI, abi="wasi-cgi", export="binary", timeout_ms=TIMEOUT_MS)
    resp = client.post(f"/fn/{name}/")
    assert resp.status_code == 200, resp.text
    assert resp.content == b"\xff\xfe\xfd\xc3\x28\xa0\xa1\x80"
    assert resp.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("export", "body"),
    [
        ("not_utf8", b"\xff\xfe\xfd\xc3\x28\xa0\xa1\x80"),
        ("not_json", b'{"broken": [1, 2'),
        ("not_utf8_json", b'{"a": "\xff\xfe"}'),
    ],
)
def test_extism_output_is_never_labelled_json_unless_it_is(
    client: httpx.Client, export: str, body: bytes
) -> None:
    """Without a declared content type the host labels output JSON only if it parses."""
    name = unique(f"extism-{export}")
    FAULTS_BY_KEY["extism-loop"].deploy(client, name)
    resp = client.post(f"/api/v1/functions/{name}/invoke/{export}")
    assert resp.status_code == 200, resp.text
    assert resp.content == body
    assert resp.headers["content-type"] == "application/octet-stream"


def test_extism_error_message_that_is_not_utf8_still_gives_a_json_error(
    client: httpx.Client,
) -> None:
    name = unique("extism-bad-error")
    FAULTS_BY_KEY["extism-bad-error"].deploy(client, name)
    resp = client.post(f"/api/v1/functions/{name}/invoke/bad_error")
    message = assert_error(resp, 500, "guest_error")
    assert message == "bad \ufffd\ufffd message"
    _strict_json(resp.text)


def test_compat_route_answers_json_for_output_that_is_not_utf8(client: httpx.Client) -> None:
    """The WasmEngine route always answers JSON: bytes that are not text come back as a
    string with replacement characters (lossy, but valid JSON)."""
    name = unique("compat-binary")
    FAULTS_BY_KEY["extism-loop"].deploy(client, name)
    resp = client.post("/function/invoke", json={"function_name": name, "export": "not_utf8"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert _strict_json(resp.text) == {"result": "\ufffd\ufffd\ufffd\ufffd(\ufffd\ufffd\ufffd"}


@pytest.mark.parametrize("export", ["not_json", "not_utf8_json"])
def test_declared_json_output_that_is_not_json_is_a_guest_error(
    client: httpx.Client, export: str
) -> None:
    name = unique(f"json-{export}")
    FAULTS_BY_KEY["extism-loop"].deploy(client, name, content_type="application/json")
    resp = client.post(f"/api/v1/functions/{name}/invoke/{export}")
    assert_error(resp, 500, "guest_error", "json")


def test_compat_route_never_answers_invalid_json(client: httpx.Client) -> None:
    name = unique("compat-json")
    FAULTS_BY_KEY["extism-loop"].deploy(client, name, content_type="application/json")
    resp = client.post("/function/invoke", json={"function_name": name, "export": "not_json"})
    assert_error(resp, 500, "guest_error", "json")


def test_cgi_header_with_a_control_byte_is_a_guest_error(client: httpx.Client) -> None:
    """Such a header would break the response framing: uvicorn used to refuse it mid-send and
    drop the connection with no answer at all."""
    name = unique("cgi-ctl-header")
    deployed(client, name, CGI, abi="wasi-cgi", export="ctl_header", timeout_ms=TIMEOUT_MS)
    resp = client.post(f"/fn/{name}/")
    assert_error(resp, 500, "guest_error", "header")
    assert_good(good_call(client, "wasi-cgi", name), "wasi-cgi")
    still_serving(client)


# -- kernel memory (Extism) ----------------------------------------------------------------------


def test_trap_after_kernel_memory_runs_out_is_a_memory_limit(client: httpx.Client) -> None:
    name = unique("kernel-trap")
    FAULTS_BY_KEY["extism-kernel-alloc"].deploy(client, name)
    resp = client.post(f"/api/v1/functions/{name}/invoke/exhaust_trap")
    assert_error(resp, 500, "memory_limit", f"{MEMORY_MB} MiB")


def test_extism_memory_cap_holds_for_each_memory_and_the_record_counts_both(
    client: httpx.Client,
) -> None:
    """memory_mb caps each linear memory of a store on its own (runtime/slot.py): a plugin
    that fills its own memory and then the kernel memory holds up to twice memory_mb, and the
    invocation record's peak_memory counts both."""
    name = unique("hoard")
    FAULTS_BY_KEY["extism-kernel-alloc"].deploy(client, name)
    resp = client.post(f"/api/v1/functions/{name}/invoke/hoard")
    assert resp.status_code == 200, resp.text
    held_mib = resp.content[0]  # MiB the guest got: its own memory, then the kernel's
    assert 2 * (MEMORY_MB - 2) <= held_mib <= 2 * MEMORY_MB, held_mib
    [record] = records(client, name)[:1]
    assert held_mib * MiB <= record["peak_memory"] <= 2 * MEMORY_MB * MiB, record


def test_kernel_memory_exhaustion_reported_by_the_plugin(client: httpx.Client) -> None:
    """alloc returns 0 at the cap (it never traps); the plugin reports it like a PDK does."""
    fault = FAULTS_BY_KEY["extism-kernel-alloc"]
    name = unique("kernel-alloc")
    fault.deploy(client, name, error_status=507)
    resp = fault.fire(client, name)
    assert_error(resp, 507, "guest_error", "kernel memory exhausted")
    assert_good(good_call(client, "extism", name), "extism")
    after, failed = records(client, name)[:2]
    assert (failed["status"], failed["error_code"]) == (507, "guest_error")
    assert after["instantiated"] is True
