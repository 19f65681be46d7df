"""Helpers shared by the HTTP integration tests: deploying, error checks, disk snapshots."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ServerProcess, key_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "tests" / "fixtures"

GCD_WAT = EXAMPLES / "gcd" / "gcd.wat"
GCD_WASM = EXAMPLES / "gcd" / "gcd.wasm"
HELLO_WASM = EXAMPLES / "hello" / "hello.wasm"
ECHO_WASM = EXAMPLES / "echo" / "echo.wasm"


def unique(prefix: str) -> str:
    """A function name no other test (or earlier run against a shared database) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unique_module(tag: str) -> bytes:
    """WAT text for a small core module whose bytes no other test deploys (tag in a data
    segment): `echo(x) -> x` and `twice(x) -> 2x`."""
    return (
        "(module\n"
        '  (memory (export "memory") 1)\n'
        f'  (data (i32.const 16) "{tag}")\n'
        '  (func (export "echo") (param $x i32) (result i32) (local.get $x))\n'
        '  (func (export "twice") (param $x i32) (result i32)\n'
        "    (i32.mul (local.get $x) (i32.const 2))))\n"
    ).encode()


def deploy(
    client: httpx.Client,
    name: str,
    module: Path | bytes,
    *,
    filename: str | None = None,
    spec: Any = None,
    **fields: Any,
) -> httpx.Response:
    """POST /api/v1/functions as multipart: form fields for options, or a JSON `spec` part."""
    if isinstance(module, Path):
        content = module.read_bytes()
        filename = filename or module.name
    else:
        content = module
        filename = filename or "module.wasm"
    data: dict[str, Any] = {"name": name}
    for key, value in fields.items():
        if isinstance(value, list):  # repeated form fields (config, env, allowed_host)
            data[key] = [str(v) for v in value]
        else:
            data[key] = str(value).lower() if isinstance(value, bool) else str(value)
    if spec is not None:
        data["spec"] = json.dumps(spec)
    files = {"file": (filename, content, "application/octet-stream")}
    return client.post("/api/v1/functions", data=data, files=files)


def deployed(client: httpx.Client, name: str, module: Path | bytes, **fields: Any) -> dict:
    """Deploy and insist it worked; returns the function view."""
    resp = deploy(client, name, module, **fields)
    assert resp.status_code in (200, 201), f"deploy {name} failed: {resp.status_code} {resp.text}"
    return resp.json()


def invoke(client: httpx.Client, name: str, args: Any, export: str | None = None) -> httpx.Response:
    path = f"/api/v1/functions/{name}/invoke" + (f"/{export}" if export else "")
    return client.post(path, json={"args": args})


def result_of(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
    body = resp.json()
    assert set(body) == {"result"}, body
    return body["result"]


def assert_error(resp: httpx.Response, status: int, code: str, *mentions: str) -> str:
    """The response is DESIGN.md's error shape with this status and code; returns the message."""
    assert resp.status_code == status, (
        f"expected {status} {code}, got {resp.status_code} {resp.text}"
    )
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, body
    assert error["code"] == code, body
    message = error["message"]
    assert isinstance(message, str) and message.strip(), body
    for text in mentions:
        assert text.lower() in message.lower(), f"{text!r} not in error message {message!r}"
    return message


def function_names(client: httpx.Client) -> list[str]:
    resp = client.get("/api/v1/functions")
    assert resp.status_code == 200, resp.text
    return [f["name"] for f in resp.json()["functions"]]


def files_under(root: Path) -> set[str]:
    """Every file below `root` (relative paths), to prove that nothing new was written."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def blob_path(data_dir: Path, digest: str) -> Path:
    hexd = digest.removeprefix("sha256:")
    return data_dir / "blobs" / "sha256" / hexd[:2] / hexd


def operator_key(client: httpx.Client) -> str:
    """The operator's admin key of the test server `client` talks to."""
    return key_for(str(client.base_url))


def invocation_records(client: httpx.Client, name: str, limit: int = 200) -> list[dict]:
    """A function's invocation records, newest first (the listing flushes pending ones)."""
    resp = client.get(f"/api/v1/functions/{name}/invocations", params={"limit": limit})
    assert resp.status_code == 200, resp.text
    return resp.json()["invocations"]


def span(record: dict) -> tuple[float, float]:
    """An invocation record's [start, end] in Unix seconds, as the server measured it.

    `started_at` is taken when the call is admitted, on the event loop (before any wait for
    a compute slot or an executor thread); `duration_ms` is the guest's last run only. So
    the span lies within the time the call was in flight, and a record that started inside
    another's span was admitted by the event loop while that one was in flight."""
    start = datetime.fromisoformat(record["started_at"]).timestamp()
    return start, start + record["duration_ms"] / 1000


def started_during(records: list[dict], outer: dict) -> list[dict]:
    """The records that the server admitted while `outer` was in flight (see `span`)."""
    begin, end = span(outer)
    return [r for r in records if r is not outer and begin < span(r)[0] < end]


def logged_start(record: dict) -> float:
    """When a run of tests/fixtures/stamped_loop.wat began (Unix seconds): the host clock
    its guest logged first thing, read back from the record's logs."""
    stamps = re.findall(r"\[info\] (\d+)", record["logs"])
    assert stamps, record
    return int(stamps[-1]) / 1000


def metric_samples(client: httpx.Client, name: str) -> list[tuple[dict[str, str], float]]:
    """Samples of one Prometheus metric family (counter samples carry a `_total` name).
    Scraped with the operator's key, whoever `client` is: /metrics names every tenant's
    functions, so only the operator's keys (the `metrics` scope of `default`) may read it."""
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {operator_key(client)}"})
    assert resp.status_code == 200, resp.text
    out = []
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


def metric_value(client: httpx.Client, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value
        for sample_labels, value in metric_samples(client, name)
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


# Guests of tests that talk to an upstream the test starts on loopback: the egress policy
# refuses loopback unless the operator allows it (host/egress.py).
LOOPBACK_EGRESS = {"WASMLET_EGRESS_ALLOW": "127.0.0.0/8,::1"}


@contextmanager
def loopback_server(tmp: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    """A `wasmlet serve --examples` whose guests may reach loopback upstreams."""
    kwargs.setdefault("examples", True)
    env = {**LOOPBACK_EGRESS, **kwargs.pop("env", {})}
    with ServerProcess(tmp / "data", env=env, **kwargs) as server:
        yield server
