"""Attack: a guest answers with more bytes than the server should hold for it.

An Extism plugin once returned 200 MB with status 200, and four such calls at once pushed
the server to 1 GB RSS. Every ABI now holds a guest's output to `max_output_bytes` on the
length the guest declares, before a byte is copied out of its memory; error messages and
log text are clipped to `max_log_bytes` the same way. Here the cap is 1 MiB, and the
guests, built from C, ask for far more.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.support import assert_error
from tests.helpers import ServerProcess
from tests.security.guests import guest_bytes
from tests.security.support import client_with, mint_key

CAP = 1024 * 1024
LOG_CAP = 16 * 1024
# Declared by the Extism guest and never written (only its first and last byte): with the
# cap enforced the server holds none of it; copied out, it holds at least this much.
HUGE = 192 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"WASMLET_MAX_OUTPUT_BYTES": str(CAP), "WASMLET_MAX_LOG_BYTES": str(LOG_CAP)}
    with ServerProcess(tmp_path_factory.mktemp("caps") / "data", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def tenant(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as operator:
        token = mint_key(operator, "capped")
    with client_with(server, token) as client:
        client.timeout = httpx.Timeout(120)
        yield client


def _deploy(client: httpx.Client, name: str, wasm: bytes, **fields: object) -> None:
    data = {"name": name, **{k: str(v) for k, v in fields.items()}}
    files = {"file": (f"{name}.wasm", wasm, "application/octet-stream")}
    resp = client.post("/api/v1/functions", data=data, files=files)
    assert resp.status_code in (200, 201), resp.text


def _peak_rss(server: ServerProcess) -> int:
    """The server process's peak resident memory (VmHWM), in bytes."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _reset_peak_rss(server: ServerProcess) -> int:
    """Start a new peak (Linux: 5 to clear_refs sets VmHWM to the current RSS), so an
    earlier test's peak cannot hide this one's; returns it."""
    assert server.proc is not None
    Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")
    return _peak_rss(server)


def _alive(server: ServerProcess) -> None:
    assert server.proc is not None and server.proc.poll() is None
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def _records(client: httpx.Client, name: str, count: int) -> list[dict]:
    """The function's invocation records, once `count` have been written."""
    for _ in range(100):
        records = client.get(f"/api/v1/functions/{name}/invocations").json()["invocations"]
        if len(records) >= count:
            return records
        time.sleep(0.1)
    raise AssertionError(f"{name}: fewer than {count} records")


@pytest.fixture(scope="module")
def plugin(tenant: httpx.Client) -> str:
    wasm = guest_bytes("extism_big.c", plugin=True)
    _deploy(tenant, "big", wasm, abi="extism", export="big", memory_mb=256)
    return "big"


def test_extism_log_is_not_copied_whole(
    server: ServerProcess, tenant: httpx.Client, plugin: str
) -> None:
    before = _reset_peak_rss(server)
    resp = tenant.post(f"/fn/{plugin}?export=shout", content=str(HUGE).encode())
    assert resp.status_code == 200 and resp.content == b"ok", resp.text
    grown = _peak_rss(server) - before
    assert grown < HUGE // 2, f"the server's peak RSS grew by {grown} bytes"
    shout = [r for r in _records(tenant, plugin, 1) if r["status"] == 200 and r["logs"]]
    assert shout and len(shout[0]["logs"]) < 2 * LOG_CAP


def test_extism_output_over_the_cap_is_refused_before_it_is_copied(
    server: ServerProcess, tenant: httpx.Client, plugin: str
) -> None:
    before = _reset_peak_rss(server)
    with ThreadPoolExecutor(4) as pool:  # four at once, as in the report
        answers = list(
            pool.map(
                lambda _: tenant.post(f"/fn/{plugin}?export=big", content=str(HUGE).encode()),
                range(4),
            )
        )
    for resp in answers:
        assert_error(resp, 500, "guest_error", f"output of {HUGE} bytes", f"limit of {CAP}")
    grown = _peak_rss(server) - before
    assert grown < HUGE // 2, f"the server's peak RSS grew by {grown} bytes"
    _alive(server)
    small = tenant.post(f"/fn/{plugin}?export=big", content=str(CAP).encode())
    assert small.status_code == 200 and len(small.content) == CAP  # the cap itself is fine


@pytest.mark.parametrize("export", ["fail", "fail_trap"])
def test_extism_error_message_is_clipped(tenant: httpx.Client, plugin: str, export: str) -> None:
    resp = tenant.post(f"/fn/{plugin}?export={export}", content=str(CAP).encode())
    message = assert_error(resp, 500, "guest_error", "eeee", "bytes dropped")
    assert len(message) < 2 * LOG_CAP, len(message)


def test_wasi_cgi_stdout_past_the_cap_is_refused(
    server: ServerProcess, tenant: httpx.Client
) -> None:
    _deploy(tenant, "cgi-big", guest_bytes("cgi_big.c"), abi="wasi-cgi")
    resp = tenant.get("/fn/cgi-big", params={"n": 4 * CAP})
    assert_error(resp, 500, "guest_error", f"more than {CAP} bytes")
    _alive(server)
    ok = tenant.get("/fn/cgi-big", params={"n": 1000})
    assert ok.status_code == 200 and ok.content == b"y" * 1000


@pytest.mark.parametrize(
    ("mode", "count"),
    [
        ("str", 2 * CAP),
        ("base64", 4 * CAP),
        ("bytes", CAP + 1),
        # An answer under the cap (~6 bytes a number) whose body decodes past it (9 bytes
        # a number): the decoded body is held to the cap too.
        ("json", 150_000),
    ],
)
def test_otoroshi_body_past_the_cap_is_refused(
    server: ServerProcess, tenant: httpx.Client, mode: str, count: int
) -> None:
    name = f"oto-{mode}"
    wasm = guest_bytes("otoroshi_big.c", plugin=True)
    _deploy(tenant, name, wasm, abi="otoroshi", memory_mb=128)
    resp = tenant.patch(
        f"/api/v1/functions/{name}", json={"config": {"n": str(count), "mode": mode}}
    )
    assert resp.status_code == 200, resp.text
    answer = tenant.get(f"/fn/{name}")
    assert_error(answer, 400, "guest_error", "exceeds the limit of", str(CAP))
    _alive(server)
    resp = tenant.patch(f"/api/v1/functions/{name}", json={"config": {"n": "10", "mode": mode}})
    assert resp.status_code == 200, resp.text
    assert tenant.get(f"/fn/{name}").status_code == 200


def test_otoroshi_log_is_not_copied_whole(server: ServerProcess, tenant: httpx.Client) -> None:
    wasm = guest_bytes("otoroshi_big.c", plugin=True)
    _deploy(tenant, "oto-log", wasm, abi="otoroshi", memory_mb=256)
    config = {"config": {"n": str(HUGE), "mode": "log"}}
    assert tenant.patch("/api/v1/functions/oto-log", json=config).status_code == 200
    before = _reset_peak_rss(server)
    resp = tenant.get("/fn/oto-log")
    assert resp.status_code == 200 and resp.content == b"ok", resp.text[:500]
    grown = _peak_rss(server) - before
    assert grown < HUGE // 2, f"the server's peak RSS grew by {grown} bytes"
    logs = [r["logs"] for r in _records(tenant, "oto-log", 1) if r["status"] == 200]
    assert logs and len(logs[0]) < 2 * LOG_CAP
