"""Cold starts: how long a new or restarted function takes to answer, and what one costs.

  deploy     over HTTP: upload a module under a fresh name, then invoke until it answers;
             deploy-to-first-response, repeated with distinct names and distinct bytes (a
             nonce global in gcd.wat, a custom section appended to hello.wasm), so that no
             run profits from the content-addressed blob store or compile cache.
  restart    over HTTP: the first invocation after a server restart, with the compiled
             artifact on disk (deserialized) and with the cache directory removed (compiled
             again), against a second, warm invocation.
  inprocess  no HTTP: what one request costs in each instancing strategy, with wasmlet's
             engine configuration (epoch interruption, fuel):
               call_only          a call on one long-lived instance (reuse, the floor)
               instantiate_pre    new Store + InstancePre.instantiate + call (wasmlet fresh)
               instance_new       new Store + Instance(store, module, imports) + call
               deserialize        Module.deserialize + instantiate + call (a cache hit)
               compile            Module(engine, wasm) + instantiate + call (the naive
                                  "new plugin per request" design)
             and wasmlet's own InstancePool.execute (ABI, limits, metering data included)
             in reuse and fresh mode.

Usage: python bench/cold_start.py [--quick]
(JSON on stdout and in bench/results/cold_start.json; --quick writes cold_start.quick.json)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import wasmtime
from common import (
    EXAMPLES_DIR,
    install_cleanup,
    loadavg,
    machine_info,
    median,
    percentile,
    ratio,
    stop_all,
    temp_dir,
    wasmlet_server,
    write_results,
)

GCD_BODY = b'{"args":[1071,462]}'
GCD_EXPECTED = b'{"result": 21}'
HELLO_EXPECTED = b"Hello, Ada!"

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"deploys": 3, "restarts": 1, "scale": 0.1, "repeats": 3},
    "full": {"deploys": 10, "restarts": 4, "scale": 1.0, "repeats": 5},
}


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def stats_ms(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median_ms": None if not values else round(median(values) or 0, 3),
        "p90_ms": percentile(values, 90),
        "min_ms": min(values, default=None),
        "max_ms": max(values, default=None),
        "all_ms": values,
    }


# -- distinct module bytes -------------------------------------------------------------------


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def unique_gcd_wat(nonce: int) -> bytes:
    """gcd.wat plus an unused global: same behaviour, different bytes and digest."""
    text = (EXAMPLES_DIR / "gcd" / "gcd.wat").read_text().rstrip()
    assert text.endswith(")")
    return (text[:-1] + f"\n  (global $nonce i32 (i32.const {nonce})))\n").encode()


def unique_wasm(path: Path, nonce: int) -> bytes:
    """A module with a custom section appended: custom sections may come anywhere."""
    name = b"bench-nonce"
    payload = _uleb(len(name)) + name + str(nonce).encode()
    return path.read_bytes() + b"\x00" + _uleb(len(payload)) + payload


# -- over HTTP -------------------------------------------------------------------------------


def deploy(client: httpx.Client, name: str, filename: str, data: bytes, abi: str) -> None:
    resp = client.post(
        "/api/v1/functions",
        data={"name": name, "abi": abi, "visibility": "public"},
        files={"file": (filename, data, "application/octet-stream")},
    )
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"deploy {name}: {resp.status_code} {resp.text[:300]}")


def invoke(client: httpx.Client, kind: str, name: str) -> bool:
    if kind == "gcd":
        resp = client.post(
            f"/api/v1/functions/{name}/invoke",
            content=GCD_BODY,
            headers={"content-type": "application/json"},
        )
        return resp.status_code == 200 and resp.content == GCD_EXPECTED
    resp = client.get(f"/fn/{name}/", params={"name": "Ada"})
    return resp.status_code == 200 and resp.content.strip() == HELLO_EXPECTED


def invoke_until_ok(client: httpx.Client, kind: str, name: str, timeout_s: float = 30) -> int:
    """Invoke until the function answers correctly; returns the number of attempts."""
    deadline = time.perf_counter() + timeout_s
    attempts = 0
    while True:
        attempts += 1
        if invoke(client, kind, name):
            return attempts
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{name} did not answer within {timeout_s}s")


def bench_deploy(work: Path, p: dict[str, Any]) -> dict[str, Any]:
    data_dir = temp_dir("wasmlet-bench-cold-")
    server = wasmlet_server(work, data_dir, examples=False, label="wasmlet-deploy")
    out: dict[str, Any] = {}
    try:
        server.start()
        out["server_ready_s"] = round(server.ready_s or 0, 3)
        with httpx.Client(base_url=server.url, timeout=60, headers=server.headers()) as client:
            # The server's first deploy pays for lazy imports and warm-up; counted apart.
            t0 = time.perf_counter()
            deploy(client, "warmup", "gcd.wat", unique_gcd_wat(10**6), "core")
            invoke_until_ok(client, "gcd", "warmup")
            out["first_deploy_after_start_ms"] = ms(time.perf_counter() - t0)
            cases = {
                "gcd": ("gcd.wat", "core", unique_gcd_wat),
                "hello": (
                    "hello.wasm",
                    "wasi-cgi",
                    lambda n: unique_wasm(EXAMPLES_DIR / "hello" / "hello.wasm", n),
                ),
            }
            for kind, (filename, abi, make) in cases.items():
                rows = []
                for i in range(p["deploys"]):
                    name = f"cold-{kind}-{i}"
                    data = make(i)
                    t0 = time.perf_counter()
                    deploy(client, name, filename, data, abi)
                    t1 = time.perf_counter()
                    attempts = invoke_until_ok(client, kind, name)
                    t2 = time.perf_counter()
                    invoke_until_ok(client, kind, name)
                    t3 = time.perf_counter()
                    rows.append(
                        {
                            "deploy_ms": ms(t1 - t0),
                            "first_invoke_ms": ms(t2 - t1),
                            "total_ms": ms(t2 - t0),
                            "warm_invoke_ms": ms(t3 - t2),
                            "attempts": attempts,
                            "module_bytes": len(data),
                        }
                    )
                out[kind] = {
                    "deploy_to_first_response": stats_ms([r["total_ms"] for r in rows]),
                    "deploy_request": stats_ms([r["deploy_ms"] for r in rows]),
                    "first_invoke": stats_ms([r["first_invoke_ms"] for r in rows]),
                    "warm_invoke": stats_ms([r["warm_invoke_ms"] for r in rows]),
                    "runs": rows,
                }
                figure = out[kind]["deploy_to_first_response"]["median_ms"]
                print(f"  deploy {kind}: median {figure} ms", file=sys.stderr)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def bench_restart(work: Path, p: dict[str, Any]) -> dict[str, Any]:
    data_dir = temp_dir("wasmlet-bench-restart-")
    rows: list[dict[str, Any]] = []
    try:
        with wasmlet_server(work, data_dir, examples=True, label="wasmlet-seed").start():
            pass  # --examples deploys gcd and hello, writing their compiled artifacts
        cache_dir = data_dir / "cache"
        for rep in range(p["restarts"]):
            for mode in ("cached", "compile") if rep % 2 == 0 else ("compile", "cached"):
                if mode == "compile":
                    shutil.rmtree(cache_dir, ignore_errors=True)
                artifacts = len(list(cache_dir.glob("*/*.cwasm")))
                server = wasmlet_server(work, data_dir, examples=False, label=f"wasmlet-{mode}")
                row: dict[str, Any] = {"mode": mode, "rep": rep, "artifacts_on_disk": artifacts}
                with (
                    server.start(),
                    httpx.Client(
                        base_url=server.url, timeout=60, headers=server.headers()
                    ) as client,
                ):
                    row["server_ready_ms"] = ms(server.ready_s or 0)
                    # A request for a missing function first: it opens the connection and
                    # makes the process read the registry, so the timings below are about
                    # loading one function only.
                    t0 = time.perf_counter()
                    resp = client.post("/api/v1/functions/no-such-function/invoke", content=b"")
                    row["first_request_404_ms"] = ms(time.perf_counter() - t0)
                    if resp.status_code != 404:
                        raise RuntimeError(f"expected 404, got {resp.status_code}")
                    for kind, name in (("gcd", "gcd"), ("hello", "hello")):
                        t0 = time.perf_counter()
                        if not invoke(client, kind, name):
                            raise RuntimeError(f"{name} failed after restart")
                        t1 = time.perf_counter()
                        invoke(client, kind, name)
                        t2 = time.perf_counter()
                        row[f"{kind}_first_ms"] = ms(t1 - t0)
                        row[f"{kind}_warm_ms"] = ms(t2 - t1)
                rows.append(row)
                print(f"  restart {mode}: {row}", file=sys.stderr)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    def col(mode: str, key: str) -> dict[str, Any]:
        return stats_ms([r[key] for r in rows if r["mode"] == mode])

    out: dict[str, Any] = {}
    for mode in ("cached", "compile"):
        out[mode] = {
            key: col(mode, key)
            for key in (
                "server_ready_ms",
                "first_request_404_ms",
                "gcd_first_ms",
                "gcd_warm_ms",
                "hello_first_ms",
            )
        }
        out[mode]["hello_warm_ms"] = col(mode, "hello_warm_ms")
    out["runs"] = rows
    return out


# -- in process ------------------------------------------------------------------------------


def per_op_us(fn: Callable[[], Any], n: int, repeats: int) -> dict[str, Any]:
    """Median over `repeats` batches of the mean time per call in a batch of `n` calls."""
    n = max(1, n)
    fn()  # warm: first-call costs (trampolines, lazy init) are not per-request costs
    batches = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        batches.append((time.perf_counter() - t0) / n * 1e6)
    return {
        "median_us": round(statistics.median(batches), 2),
        "min_us": round(min(batches), 2),
        "batches_us": [round(b, 2) for b in batches],
        "calls_per_batch": n,
    }


def raw_strategies(engine: wasmtime.Engine, p: dict[str, Any]) -> dict[str, Any]:
    """Each instancing strategy with wasmtime-py's public API only."""
    scale, reps = p["scale"], p["repeats"]
    gcd_wasm = wasmtime.wat2wasm((EXAMPLES_DIR / "gcd" / "gcd.wat").read_text())
    hello_wasm = (EXAMPLES_DIR / "hello" / "hello.wasm").read_bytes()

    def new_store() -> wasmtime.Store:
        store = wasmtime.Store(engine)
        store.set_limits(memory_size=64 * 1024 * 1024)
        store.set_epoch_deadline(1_000)
        store.set_fuel(1 << 62)
        return store

    # gcd (no imports) --------------------------------------------------------------------
    gcd_module = wasmtime.Module(engine, gcd_wasm)
    gcd_serialized = gcd_module.serialize()
    gcd_pre = wasmtime.Linker(engine).instantiate_pre(gcd_module)
    shared_store = new_store()
    shared = wasmtime.Instance(shared_store, gcd_module, [])
    shared_gcd = shared.exports(shared_store)["gcd"]

    def gcd_call(store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        if instance.exports(store)["gcd"](store, 1071, 462) != 21:
            raise AssertionError("gcd answered wrongly")

    def gcd_call_only() -> None:
        shared_store.set_epoch_deadline(1_000)
        if shared_gcd(shared_store, 1071, 462) != 21:
            raise AssertionError("gcd answered wrongly")

    def gcd_instantiate_pre() -> None:
        store = new_store()
        gcd_call(store, gcd_pre.instantiate(store))

    def gcd_instance_new() -> None:
        store = new_store()
        gcd_call(store, wasmtime.Instance(store, gcd_module, []))

    def gcd_deserialize() -> None:
        module = wasmtime.Module.deserialize(engine, gcd_serialized)
        store = new_store()
        gcd_call(store, wasmtime.Instance(store, module, []))

    def gcd_compile() -> None:
        module = wasmtime.Module(engine, gcd_wasm)
        store = new_store()
        gcd_call(store, wasmtime.Instance(store, module, []))

    gcd = {
        "call_only": per_op_us(gcd_call_only, int(20_000 * scale), reps),
        "instantiate_pre": per_op_us(gcd_instantiate_pre, int(3_000 * scale), reps),
        "instance_new": per_op_us(gcd_instance_new, int(3_000 * scale), reps),
        "deserialize": per_op_us(gcd_deserialize, int(500 * scale), reps),
        "compile": per_op_us(gcd_compile, int(200 * scale), reps),
    }

    # hello (WASI command) ----------------------------------------------------------------
    hello_module = wasmtime.Module(engine, hello_wasm)
    hello_serialized = hello_module.serialize()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    hello_pre = linker.instantiate_pre(hello_module)

    def wasi_store() -> tuple[wasmtime.Store, list[bytes]]:
        out: list[bytes] = []

        def write(data: bytes) -> int:
            out.append(bytes(data))
            return len(data)

        store = new_store()
        config = wasmtime.WasiConfig()
        config.argv = ["hello"]
        config.env = [("QUERY_STRING", "name=Ada"), ("REQUEST_METHOD", "GET")]
        config.stdout_custom = write
        store.set_wasi(config)
        return store, out

    def run_start(store: wasmtime.Store, instance: wasmtime.Instance, out: list[bytes]) -> None:
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            if exc.code != 0:
                raise
        if HELLO_EXPECTED not in b"".join(out):
            raise AssertionError(f"hello answered {b''.join(out)!r}")

    def hello_instantiate_pre() -> None:
        store, out = wasi_store()
        run_start(store, hello_pre.instantiate(store), out)

    def hello_linker_instantiate() -> None:
        store, out = wasi_store()
        run_start(store, linker.instantiate(store, hello_module), out)

    def hello_deserialize() -> None:
        module = wasmtime.Module.deserialize(engine, hello_serialized)
        store, out = wasi_store()
        run_start(store, linker.instantiate(store, module), out)

    def hello_compile() -> None:
        module = wasmtime.Module(engine, hello_wasm)
        store, out = wasi_store()
        run_start(store, linker.instantiate(store, module), out)

    hello = {
        "instantiate_pre": per_op_us(hello_instantiate_pre, int(1_000 * scale), reps),
        "instance_new": per_op_us(hello_linker_instantiate, int(1_000 * scale), reps),
        "deserialize": per_op_us(hello_deserialize, int(300 * scale), reps),
        "compile": per_op_us(hello_compile, max(3, int(20 * scale)), reps),
    }
    return {
        "gcd": gcd,
        "hello": hello,
        "module_bytes": {"gcd": len(gcd_wasm), "hello": len(hello_wasm)},
        "serialized_bytes": {"gcd": len(gcd_serialized), "hello": len(hello_serialized)},
        "notes": {
            "instance_new": "gcd: wasmtime.Instance(store, module, []); hello needs WASI "
            "imports, so Linker.instantiate(store, module)",
        },
    }


def wasmlet_pools(p: dict[str, Any]) -> dict[str, Any]:
    """wasmlet's InstancePool.execute in reuse and fresh mode: the whole per-call path."""
    from wasmlet.abi import Invocation
    from wasmlet.api.state import build_state
    from wasmlet.config import Settings
    from wasmlet.runtime.pool import CallReport, InstancePool
    from wasmlet.spec import parse_update

    scale, reps = p["scale"], p["repeats"]
    data_dir = temp_dir("wasmlet-bench-pool-")
    try:
        state = build_state(Settings(data_dir=data_dir))
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    try:
        gcd_wat = (EXAMPLES_DIR / "gcd" / "gcd.wat").read_bytes()
        hello_wasm = (EXAMPLES_DIR / "hello" / "hello.wasm").read_bytes()
        deploys = {
            "gcd-reuse": (gcd_wat, {"abi": "core", "export": "gcd", "reuse": True}),
            "gcd-fresh": (gcd_wat, {"abi": "core", "export": "gcd", "reuse": False}),
            "hello-fresh": (hello_wasm, {"abi": "wasi-cgi"}),
        }
        for name, (data, spec) in deploys.items():
            state.deployer.deploy(name, data, parse_update(spec))
        asyncio.run(state.invoker.refresh())
        # Pools built the way the server builds them (compile cache, ABI, limits), so
        # this follows wasmlet's runtime as it changes; `_build_entry` is the one private
        # name used here.
        pools = {
            name: state.invoker._build_entry(state.invoker.active[name]).pool for name in deploys
        }
        settings = state.settings

        def gcd_call(pool: InstancePool) -> Callable[[], None]:
            def call() -> None:
                inv = Invocation(method="POST", body=GCD_BODY)
                outcome = pool.execute(inv, CallReport())
                if outcome.body != GCD_EXPECTED:
                    raise AssertionError(outcome.body)

            return call

        def hello_call() -> None:
            inv = Invocation(method="GET", query="name=Ada", via="gateway")
            outcome = pools["hello-fresh"].execute(inv, CallReport())
            if outcome.body.strip() != HELLO_EXPECTED:
                raise AssertionError(outcome.body)

        out = {
            "gcd_reuse": per_op_us(gcd_call(pools["gcd-reuse"]), int(10_000 * scale), reps),
            "gcd_fresh": per_op_us(gcd_call(pools["gcd-fresh"]), int(3_000 * scale), reps),
            "hello_fresh": per_op_us(hello_call, int(1_000 * scale), reps),
            "instantiations": {name: pool.instantiations for name, pool in pools.items()},
            "fuel_metering": settings.fuel_metering,
        }
    finally:
        state.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def bench_inprocess(p: dict[str, Any]) -> dict[str, Any]:
    from wasmlet.config import Settings
    from wasmlet.runtime.engine import build_engine

    engine = build_engine(Settings())
    raw = raw_strategies(engine, p)
    pools = wasmlet_pools(p)
    g, h = raw["gcd"], raw["hello"]

    def r(a: dict[str, Any], b: dict[str, Any]) -> float | None:
        return ratio(a["median_us"], b["median_us"])

    return {
        "wasmtime": raw,
        "wasmlet_pool_execute": pools,
        "ratios": {
            "gcd compile / instantiate_pre": r(g["compile"], g["instantiate_pre"]),
            "gcd compile / call_only": r(g["compile"], g["call_only"]),
            "gcd instance_new / instantiate_pre": r(g["instance_new"], g["instantiate_pre"]),
            "gcd instantiate_pre / call_only": r(g["instantiate_pre"], g["call_only"]),
            "gcd deserialize / instantiate_pre": r(g["deserialize"], g["instantiate_pre"]),
            "hello compile / instantiate_pre": r(h["compile"], h["instantiate_pre"]),
            "hello instance_new / instantiate_pre": r(h["instance_new"], h["instantiate_pre"]),
            "hello deserialize / instantiate_pre": r(h["deserialize"], h["instantiate_pre"]),
            "wasmlet gcd fresh / reuse (execute)": r(pools["gcd_fresh"], pools["gcd_reuse"]),
            "wasmlet gcd reuse execute / raw call_only": r(pools["gcd_reuse"], g["call_only"]),
            "wasmlet gcd fresh execute / raw instantiate_pre": r(
                pools["gcd_fresh"], g["instantiate_pre"]
            ),
            "wasmlet hello execute / raw instantiate_pre": r(
                pools["hello_fresh"], h["instantiate_pre"]
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="wasmlet cold-start benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke test")
    args = parser.parse_args(argv)
    install_cleanup()
    profile = "quick" if args.quick else "full"
    p = PROFILES[profile]
    info = machine_info()
    work = temp_dir("wasmlet-bench-cold-logs-")
    started = time.perf_counter()
    try:
        print("deploy -> first response", file=sys.stderr)
        deploy_res = bench_deploy(work, p)
        print("restart", file=sys.stderr)
        restart_res = bench_restart(work, p)
        print("in-process", file=sys.stderr)
        inproc = bench_inprocess(p)
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    cached = restart_res["cached"]
    compiled = restart_res["compile"]
    doc = {
        "benchmark": "cold_start",
        "profile": profile,
        "settings": p,
        "machine": info,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "summary": {
            "deploy_to_first_response_ms": {
                k: {
                    "median": deploy_res[k]["deploy_to_first_response"]["median_ms"],
                    "p90": deploy_res[k]["deploy_to_first_response"]["p90_ms"],
                }
                for k in ("gcd", "hello")
            },
            "first_invoke_after_restart_ms": {
                "gcd_cached": cached["gcd_first_ms"]["median_ms"],
                "gcd_compile": compiled["gcd_first_ms"]["median_ms"],
                "gcd_warm": cached["gcd_warm_ms"]["median_ms"],
                "hello_cached": cached["hello_first_ms"]["median_ms"],
                "hello_compile": compiled["hello_first_ms"]["median_ms"],
                "hello_warm": cached["hello_warm_ms"]["median_ms"],
            },
            "per_request_us": {
                "gcd": {k: v["median_us"] for k, v in inproc["wasmtime"]["gcd"].items()},
                "hello": {k: v["median_us"] for k, v in inproc["wasmtime"]["hello"].items()},
                "wasmlet_execute": {
                    k: inproc["wasmlet_pool_execute"][k]["median_us"]
                    for k in ("gcd_reuse", "gcd_fresh", "hello_fresh")
                },
            },
            "ratios": {
                "hello first invoke: compile / cached": ratio(
                    compiled["hello_first_ms"]["median_ms"], cached["hello_first_ms"]["median_ms"]
                ),
                "gcd first invoke: compile / cached": ratio(
                    compiled["gcd_first_ms"]["median_ms"], cached["gcd_first_ms"]["median_ms"]
                ),
                **inproc["ratios"],
            },
        },
        "deploy": deploy_res,
        "restart": restart_res,
        "inprocess": inproc,
    }
    # A smoke test must not overwrite the recorded full-run figures.
    name = "cold_start.json" if profile == "full" else "cold_start.quick.json"
    path = write_results(name, doc)
    print(f"wrote {path} in {doc['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
