"""Building runtime pieces in-process for unit tests: guests, settings, runtimes, pools."""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from wasmlet.abi import Invocation, Outcome, get_abi
from wasmlet.config import Settings
from wasmlet.registry.blobs import digest_of
from wasmlet.registry.repository import version_digest
from wasmlet.runtime.invoker import Runtime
from wasmlet.runtime.module_info import describe, module_meta
from wasmlet.runtime.pool import CallReport, InstancePool, VersionRef
from wasmlet.spec import FunctionSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "tests" / "fixtures"

GCD_WAT = EXAMPLES / "gcd" / "gcd.wat"
FIB_WAT = EXAMPLES / "fibonacci" / "fibonacci.wat"
ECHO_WASM = EXAMPLES / "echo" / "echo.wasm"
HELLO_WASM = EXAMPLES / "hello" / "hello.wasm"
MULTI_WAT = FIXTURES / "multi.wat"
TRAP_WAT = FIXTURES / "trap.wat"
LOOP_WAT = FIXTURES / "loop.wat"
MEMBOMB_WAT = FIXTURES / "membomb.wat"

# A core-ABI guest built with WASI: `run()` writes "hi\n" to stdout and "err\n" to stderr.
WASI_LOGGER_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hi\\n")
  (data (i32.const 80) "err\\n")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "run") (result i32)
    (call $write (i32.const 1) (i32.const 64) (i32.const 3))
    (call $write (i32.const 2) (i32.const 80) (i32.const 4))
    (i32.const 7)))
"""


def wasm_bytes(source: Path | str | bytes) -> bytes:
    """Binary wasm from a .wat/.wasm path, WAT text, or wasm bytes."""
    if isinstance(source, Path):
        data = source.read_bytes()
        return data if source.suffix == ".wasm" else bytes(wasmtime.wat2wasm(data.decode()))
    if isinstance(source, str):
        return bytes(wasmtime.wat2wasm(source))
    return source


def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No WASMLET_* variables or config file from the developer's environment."""
    for key in list(os.environ):
        if key.startswith("WASMLET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("WASMLET_CONFIG", str(tmp_path / "no-such-config.toml"))


@contextmanager
def running(data_dir: Path, **settings: Any) -> Iterator[Runtime]:
    """A Runtime for tests. Without the pooling allocator unless asked: each pooled engine
    reserves tens of TiB of address space, so only a few fit in one test process."""
    settings.setdefault("max_instances", 0)
    runtime = Runtime(Settings(data_dir=data_dir, **settings))
    try:
        yield runtime
    finally:
        runtime.close()
        release_stores()


def release_stores() -> None:
    """Free the stores of finished tests now, not at interpreter exit.

    Pools and their slots reference each other, so only the cycle collector frees them. A
    WASI store still alive when the interpreter shuts down can abort the process: a tokio
    thread of wasmtime-wasi calls into Python during finalization and CPython ends it with
    pthread_exit, which Rust turns into an abort. Dropping a WASI store hands its output
    streams to tokio threads that release the Python callbacks once they get the GIL, so
    collect, then let them have the GIL for a moment.
    """
    gc.collect()
    time.sleep(0.05)


@contextmanager
def held(runtime: Runtime) -> Iterator[None]:
    """Keep the epoch ticker running, as the invoker does around offloaded calls."""
    runtime.ticker.hold()
    try:
        yield
    finally:
        runtime.ticker.release()


def make_pool(
    runtime: Runtime,
    source: Path | str | bytes,
    *,
    name: str = "fn",
    log_limit: int | None = None,
    output_limit: int | None = None,
    **spec: Any,
) -> InstancePool:
    """An InstancePool built the way runtime/invoker.py `_build_entry` builds one."""
    wasm = wasm_bytes(source)
    module_digest = digest_of(wasm)
    module = runtime.cache.load(module_digest, lambda: wasm)
    info = describe(module, wasm)
    meta = module_meta(info)
    abi_name = spec.pop("abi", "wasi-cgi" if "_start" in info.func_exports else "core")
    abi = get_abi(abi_name)
    values: dict[str, Any] = {
        "abi": abi_name,
        "export": abi.default_export(info),
        "timeout_ms": 5000,
        "memory_mb": 64,
        "reuse": abi.default_reuse,
        "pool_size": 4,
    }
    values.update(spec)
    fspec = FunctionSpec.model_validate(values)
    ref = VersionRef(
        name=name,
        digest=version_digest(module_digest, fspec.canonical()),
        module_digest=module_digest,
        spec=fspec,
        functions=meta["functions"],
        wasi=meta["wasi"],
    )
    settings = runtime.settings
    return InstancePool(
        ref,
        abi,
        runtime.engine,
        module,
        runtime.ticker,
        fuel_metering=settings.fuel_metering,
        log_limit=settings.max_log_bytes if log_limit is None else log_limit,
        output_limit=settings.max_output_bytes if output_limit is None else output_limit,
    )


def run(pool: InstancePool, report: CallReport | None = None, **inv: Any) -> Outcome:
    return pool.execute(Invocation(**inv), report if report is not None else CallReport())


def result(outcome: Outcome) -> Any:
    """The `result` of a core-ABI JSON answer."""
    assert outcome.status == 200
    assert (b"content-type", b"application/json") in outcome.headers
    return json.loads(outcome.body)["result"]


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One Runtime (default settings, fuel metering on) shared by a test module."""
    data_dir = tmp_path_factory.mktemp("runtime")
    with pytest.MonkeyPatch.context() as mp:
        clean_env(mp, data_dir)
        with running(data_dir) as runtime:
            yield runtime
