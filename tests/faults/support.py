"""The faulty guests, how to deploy and fire each one, and what the server must answer.

Every guest lives in tests/fixtures/faults/ and also has a good path (an export, or a request
body) that answers normally, so a test can show that the same function still serves after a
fault, from a fresh instance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.api.support import FIXTURES, assert_error, deployed
from tests.helpers import ServerProcess

FAULTS = FIXTURES / "faults"
CORE = FAULTS / "core_faults.wat"
CGI = FAULTS / "cgi_faults.wat"
EXTISM = FAULTS / "extism_faults.wat"

# Server settings for the fault suites: a wasi-cgi guest may write at most 1 MiB to stdout
# (so a 100 MiB flood is refused early) and a call keeps at most 4 KiB of logs.
MAX_OUTPUT_BYTES = 1024 * 1024
MAX_LOG_BYTES = 4096
SERVER_ENV = {
    "WASMLET_MAX_OUTPUT_BYTES": str(MAX_OUTPUT_BYTES),
    "WASMLET_MAX_LOG_BYTES": str(MAX_LOG_BYTES),
}

TIMEOUT_MS = 300
MEMORY_MB = 16


@dataclass(frozen=True)
class Fault:
    """One faulty behaviour of one guest and the error it must end with."""

    key: str
    abi: str  # core | wasi-cgi | extism
    export: str  # the faulty export (wasi-cgi: the function's entry point)
    status: int
    code: str
    mentions: tuple[str, ...] = ()
    timeout_ms: int = TIMEOUT_MS
    memory_mb: int = MEMORY_MB
    args: list[Any] = field(default_factory=list)  # core arguments

    @property
    def module(self) -> Path:
        return {"core": CORE, "wasi-cgi": CGI, "extism": EXTISM}[self.abi]

    def deploy(self, client: httpx.Client, name: str, **fields: Any) -> dict:
        """Deploy the guest under `name`. Core and Extism functions default to their good
        export (`ok`) and are faulted by naming the faulty export in the call; a wasi-cgi
        function runs its entry point and takes the good path when given a body."""
        fields.setdefault("timeout_ms", self.timeout_ms)
        fields.setdefault("memory_mb", self.memory_mb)
        if self.abi == "wasi-cgi":
            return deployed(client, name, self.module, abi="wasi-cgi", export=self.export, **fields)
        if self.abi == "extism":
            fields.setdefault("wasi", True)  # exit0 / exit3 import proc_exit
            return deployed(client, name, self.module, abi="extism", export="ok", **fields)
        return deployed(client, name, self.module, export="ok", **fields)

    def fire(self, client: httpx.Client, name: str) -> httpx.Response:
        if self.abi == "wasi-cgi":
            return client.post(f"/fn/{name}/")
        if self.abi == "core":
            return client.post(
                f"/api/v1/functions/{name}/invoke/{self.export}", json={"args": self.args}
            )
        return client.post(f"/api/v1/functions/{name}/invoke/{self.export}")

    def check(self, resp: httpx.Response) -> str:
        """The response is this fault's error; returns the message."""
        return assert_error(resp, self.status, self.code, *self.mentions)


def good_call(client: httpx.Client, abi: str, name: str) -> httpx.Response:
    """The good path of a fault guest."""
    if abi == "wasi-cgi":
        return client.post(f"/fn/{name}/", content=b"please")
    if abi == "core":
        return client.post(f"/api/v1/functions/{name}/invoke", json={"args": []})
    return client.post(f"/api/v1/functions/{name}/invoke")


def assert_good(resp: httpx.Response, abi: str) -> None:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text[:300]}"
    if abi == "core":
        assert resp.json() == {"result": 42}
    else:
        assert resp.content == b"ok", resp.content[:300]


# The faults that end in an error, with the code each must end with.
FAULT_LIST = [
    Fault("core-loop", "core", "spin", 504, "timeout", (f"{TIMEOUT_MS} ms",)),
    Fault("core-stack", "core", "recurse", 500, "guest_trap", ("stack",), args=[0]),
    Fault("core-memory", "core", "grow", 500, "memory_limit", (f"{MEMORY_MB} MiB",)),
    Fault("core-trap", "core", "trap", 500, "guest_trap", ("unreachable",)),
    Fault(
        "cgi-stdout-flood",
        "wasi-cgi",
        "flood",
        500,
        "guest_error",
        (f"{MAX_OUTPUT_BYTES} bytes",),
        timeout_ms=2000,  # it must end by the output cap, long before its deadline
    ),
    Fault("cgi-exit3", "wasi-cgi", "exit3", 500, "guest_error", ("status 3",)),
    Fault("extism-loop", "extism", "spin", 504, "timeout", (f"{TIMEOUT_MS} ms",)),
    Fault("extism-host-loop", "extism", "host_loop", 504, "timeout", (f"{TIMEOUT_MS} ms",)),
    Fault("extism-host-spin", "extism", "host_spin", 504, "timeout", (f"{TIMEOUT_MS} ms",)),
    Fault("extism-kernel-alloc", "extism", "exhaust", 500, "guest_error", ("exhausted",)),
    Fault("extism-exit3", "extism", "exit3", 500, "guest_error", ("status 3",)),
    Fault("extism-bad-error", "extism", "bad_error", 500, "guest_error", ("\ufffd",)),
]
FAULTS_BY_KEY = {f.key: f for f in FAULT_LIST}


def records(client: httpx.Client, name: str, limit: int = 100) -> list[dict]:
    """Invocation records of a function, newest first."""
    resp = client.get(f"/api/v1/functions/{name}/invocations", params={"limit": limit})
    assert resp.status_code == 200, resp.text
    return resp.json()["invocations"]


def timed(call: Any, *args: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    resp = call(*args)
    return resp, time.monotonic() - started


def server_rss(server: ServerProcess) -> int:
    """Resident memory of the server process, in bytes (VmRSS)."""
    assert server.proc is not None and server.proc.poll() is None, "server is not running"
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line for the server process")


def still_serving(client: httpx.Client) -> None:
    """The bundled examples answer as usual (the server needs examples=True)."""
    assert client.get("/healthz").json()["status"] == "ok"
    resp = client.post("/api/v1/functions/gcd/invoke", json={"args": [1071, 462]})
    assert resp.status_code == 200 and resp.json() == {"result": 21}, resp.text
    resp = client.post("/api/v1/functions/hello-plugin/invoke", content=b"Ada")
    assert resp.status_code == 200 and resp.json() == {"message": "Hello Ada"}, resp.text
