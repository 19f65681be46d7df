"""Extism plugins: wasmlet's own Extism host against the Extism Python SDK.

Both run the same plugin bytes (bench/plugins/*.wat, compiled with wasmtime.wat2wasm).

Sections:
  inprocess  per-call cost of the byte-moving plugin `echo_upper` (reads its whole input with
             input_load_u64/u8, writes an upper-cased copy with alloc + store_u64/u8, then
             output_set) for 16 B, 1 KiB and 100 KiB inputs:
               wasmlet         InstancePool.execute(Invocation(body=data), CallReport()) on a
                               pool built as the invoker builds it (reuse mode, default
                               settings: fuel metering on)
               sdk             extism.Plugin(wasm, wasi=False).call("upper", data)
             Batches of calls alternate between the two (order swapped every repeat); each
             output is checked against the other's and against bytes.upper(). Then the same
             again in a child process with Settings(fuel_metering=False) (no target: what fuel
             metering costs the guest loop). A child, because wasmlet's Extism ABI cannot be
             linked on a second wasmtime.Engine in one process (see bench/README.md).
  http       hello plugin (`{"message": "Hello <input>"}`) at hey -c 100, one worker each,
             all servers up together and short runs alternating between them (order rotated
             every round), so each round's ratios see nearly the same background load:
               wasmlet         `wasmlet serve`, hello deployed with abi=extism,
                               POST /api/v1/functions/hello/invoke, body = the input
               extism-mutex    bench/peers.py: a Starlette route calling ONE SDK plugin under a
                               lock on the event loop (no thread hop)
               bare-starlette  bench/peers.py: the same route returning the same bytes, no wasm
               bare-asgi       bench/peers.py: a raw ASGI callable returning the same bytes
                               (uvicorn's floor; wasmlet's invoke route is raw ASGI too)
             Besides hey's figures, each run records the server's CPU time per request (from
             /proc, the whole process group), which the shared machine disturbs much less than
             requests per second, and (wasmlet) how many calls were offloaded, waited for a
             pool slot or took over 1 ms / 5 ms, from its /metrics.
             examples/hello-plugin/hello.wasm (the C plugin) is used when it exists, else
             bench/plugins/hello.wat. The in-process section also times this plugin.

Usage: python bench/extism_bench.py [--quick] [--section inprocess|http] [--no-fuel-child]
(JSON on stdout and in bench/results/extism.json; --quick writes extism.quick.json)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import wasmtime
from common import (
    BENCH_DIR,
    EXAMPLES_DIR,
    Server,
    _versions,
    install_cleanup,
    loadavg,
    machine_info,
    median,
    peer_server,
    stop_all,
    temp_dir,
    wasmlet_server,
    write_results,
)
from http_bench import run_hey

PLUGINS_DIR = BENCH_DIR / "plugins"
ECHO_WAT = PLUGINS_DIR / "echo_upper.wat"
ECHO_EXPORT = "upper"
HELLO_WAT = PLUGINS_DIR / "hello.wat"
HELLO_EXPORT = "hello"
C_HELLO = EXAMPLES_DIR / "hello-plugin" / "hello.wasm"
HELLO_INPUT = b"Ada"
INVOKE_PATH = "/api/v1/functions/{name}/invoke"
SIZES = {"16B": 16, "1KiB": 1024, "100KiB": 100 * 1024}
CONTENDERS = ["wasmlet", "sdk"]
SERVERS = ["wasmlet", "extism-mutex", "bare-starlette", "bare-asgi"]
_HIDDEN_EXPORTS = {"memory", "_start", "hs_init", "__wasm_call_ctors", "_initialize"}

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "repeats": 5,
        "calls": {"16B": 1000, "1KiB": 1000, "100KiB": 60},
        "warm_n": 500,
        "rounds": 2,
        "n_run": 2000,
    },
    "full": {
        "repeats": 15,
        "calls": {"16B": 2000, "1KiB": 2000, "100KiB": 150},
        "warm_n": 2000,
        "rounds": 10,
        "n_run": 5000,
    },
}

TARGETS = {"inprocess_wasmlet_over_sdk_max": 2.0, "http_wasmlet_over_mutex_min": 1.5, "errors": 0}


def wasm_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return bytes(wasmtime.wat2wasm(data.decode())) if path.suffix == ".wat" else data


def payload(size: int) -> bytes:
    """Mixed-case ASCII with digits, punctuation and a few non-ASCII bytes, `size` long."""
    unit = b"Hello, World! abc-XYZ 0123 \xc3\xa9t\xc3\xa9 {json: [1, 2]} the quick brown fox\n"
    return (unit * (size // len(unit) + 1))[:size]


def stats_us(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "median_us": round(median(ordered) or 0, 2),
        "min_us": round(ordered[0], 2),
        "max_us": round(ordered[-1], 2),
        "batches_us": [round(v, 2) for v in values],
    }


# -- in process ------------------------------------------------------------------------------


class WasmletHost:
    """A wasmlet state (registry, runtime) with Extism functions deployed; their pools."""

    def __init__(self, plugins: dict[str, dict[str, Any]], *, fuel_metering: bool) -> None:
        from wasmlet.api.state import build_state
        from wasmlet.config import Settings
        from wasmlet.spec import parse_update

        self.data_dir = temp_dir("wasmlet-bench-extism-")
        try:
            self.state = build_state(Settings(data_dir=self.data_dir, fuel_metering=fuel_metering))
        except BaseException:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise
        for name, plugin in plugins.items():
            spec = {"abi": "extism", "export": plugin["export"], "wasi": plugin["wasi"]}
            self.state.deployer.deploy(name, plugin["wasm"], parse_update(spec))
        asyncio.run(self.state.invoker.refresh())
        # The pools the server would build (compile cache, ABI, limits, settings): the one
        # private name used, as in cold_start.py.
        invoker = self.state.invoker
        self.pools = {name: invoker._build_entry(invoker.active[name]).pool for name in plugins}
        if not all(pool.reuse for pool in self.pools.values()):
            raise RuntimeError("extism pools are not in reuse mode")

    def caller(self, name: str, data: bytes) -> Callable[[], bytes]:
        from wasmlet.abi import Invocation
        from wasmlet.runtime.pool import CallReport

        execute = self.pools[name].execute

        def call() -> bytes:
            return execute(Invocation(body=data), CallReport()).body

        return call

    def close(self) -> None:
        self.state.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def time_batch(fn: Callable[[], Any], n: int) -> float:
    """µs per call over one batch of n calls (garbage collected before, not during)."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) / n * 1e6
    finally:
        gc.enable()


def compare(
    label: str,
    calls: dict[str, Callable[[], bytes]],
    expected: bytes,
    n: int,
    p: dict[str, Any],
    note: str,
) -> dict[str, Any]:
    """Alternating batches of wasmlet and SDK calls; outputs checked first."""
    for kind, fn in calls.items():
        got = fn()
        if got != expected:
            raise AssertionError(f"{kind} {label}: output differs: {got[:60]!r}")
    for fn in calls.values():  # warm-up: about as long as a quarter of the measurement
        time_batch(fn, max(5, n * p["repeats"] // 4))
    batches: dict[str, list[float]] = {kind: [] for kind in CONTENDERS}
    for rep in range(p["repeats"]):
        for kind in CONTENDERS if rep % 2 == 0 else CONTENDERS[::-1]:
            batches[kind].append(time_batch(calls[kind], n))
    per_rep = [round(w / s, 3) for w, s in zip(batches["wasmlet"], batches["sdk"], strict=True)]
    out = {
        "calls_per_batch": n,
        "outputs_equal": True,  # checked above; a mismatch aborts the benchmark
        **{kind: stats_us(batches[kind]) for kind in CONTENDERS},
        "ratio_wasmlet_over_sdk": median(per_rep),
        "ratio_per_repeat": per_rep,
    }
    print(
        f"  {label:7} {note} wasmlet {out['wasmlet']['median_us']:8.1f} us"
        f"  sdk {out['sdk']['median_us']:8.1f} us  wasmlet/sdk {out['ratio_wasmlet_over_sdk']}",
        file=sys.stderr,
        flush=True,
    )
    return out


def bench_inprocess(p: dict[str, Any], *, fuel_metering: bool = True) -> dict[str, Any]:
    import extism

    echo = {"wasm": wasm_bytes(ECHO_WAT), "export": ECHO_EXPORT, "wasi": False}
    hello = hello_plugin()
    host = WasmletHost({"echo-upper": echo, "hello": hello}, fuel_metering=fuel_metering)
    sdk_echo = extism.Plugin(echo["wasm"], wasi=False)
    sdk_hello = extism.Plugin(hello["wasm"], wasi=hello["wasi"])
    note = f"fuel={'on ' if fuel_metering else 'off'}"
    sizes: dict[str, Any] = {}
    try:
        for label, size in SIZES.items():
            data = payload(size)
            calls = {
                "wasmlet": host.caller("echo-upper", data),
                "sdk": lambda data=data: sdk_echo.call(ECHO_EXPORT, data),
            }
            sizes[label] = {
                "bytes": size,
                **compare(label, calls, data.upper(), p["calls"][label], p, note),
            }
        calls = {
            "wasmlet": host.caller("hello", HELLO_INPUT),
            "sdk": lambda: sdk_hello.call(hello["export"], HELLO_INPUT),
        }
        expected = bytes(sdk_hello.call(hello["export"], HELLO_INPUT))
        hello_row = compare("hello", calls, expected, p["calls"]["1KiB"], p, note)
    finally:
        host.close()
    return {
        "fuel_metering": fuel_metering,
        "echo_upper": {
            "source": str(ECHO_WAT.relative_to(BENCH_DIR.parent)),
            "export": ECHO_EXPORT,
            "wasm_bytes": len(echo["wasm"]),
        },
        "sizes": sizes,
        "hello": {
            "source": hello["source"],
            "export": hello["export"],
            "input": HELLO_INPUT.decode(),
            **hello_row,
        },
    }


def bench_inprocess_nofuel(quick: bool) -> dict[str, Any]:
    """bench_inprocess with fuel metering off, in a child process (a second engine)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--no-fuel-child"]
    if quick:
        cmd.append("--quick")
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=300)
    if done.returncode != 0:
        return {"error": f"child exited with {done.returncode}"}
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# -- HTTP ------------------------------------------------------------------------------------


def callable_exports(wasm: bytes) -> tuple[list[str], bool]:
    """The plugin's callable exports (() -> () or () -> i32) and whether it imports WASI."""
    module = wasmtime.Module(wasmtime.Engine(), wasm)
    names = []
    for exp in module.exports:
        ty = exp.type
        if exp.name in _HIDDEN_EXPORTS or not isinstance(ty, wasmtime.FuncType):
            continue
        if not list(ty.params) and [str(t) for t in ty.results] in ([], ["i32"]):
            names.append(exp.name)
    wasi = any(imp.module == "wasi_snapshot_preview1" for imp in module.imports)
    return names, wasi


def hello_plugin() -> dict[str, Any]:
    """The hello plugin: the C one from examples/ when it has been built, else the WAT one."""
    if C_HELLO.exists():
        wasm = C_HELLO.read_bytes()
        names, wasi = callable_exports(wasm)
        preferred = [n for n in names if n in ("hello", "greet", "run")]
        if len(names) != 1 and not preferred:
            raise RuntimeError(f"{C_HELLO}: cannot tell which export to call among {names}")
        export = names[0] if len(names) == 1 else preferred[0]
        source = C_HELLO
    else:
        wasm, export, wasi, source = wasm_bytes(HELLO_WAT), HELLO_EXPORT, False, HELLO_WAT
    return {
        "source": str(source.relative_to(BENCH_DIR.parent)),
        "wasm": wasm,
        "export": export,
        "wasi": wasi,
        "bytes": len(wasm),
    }


def sdk_output(plugin: dict[str, Any], data: bytes) -> bytes:
    import extism

    return bytes(extism.Plugin(plugin["wasm"], wasi=plugin["wasi"]).call(plugin["export"], data))


def deploy_hello(base: str, plugin: dict[str, Any], headers: dict[str, str]) -> None:
    # Public, as the peers have no keys either: the comparison is of running the plugin.
    fields = {"name": "hello", "abi": "extism", "export": plugin["export"], "visibility": "public"}
    if plugin["wasi"]:
        fields["wasi"] = "true"
    resp = httpx.post(
        base + "/api/v1/functions",
        data=fields,
        files={"file": ("hello.wasm", plugin["wasm"], "application/wasm")},
        headers=headers,
        timeout=60,
    )
    if resp.status_code >= 300:
        raise RuntimeError(f"deploy failed: {resp.status_code} {resp.text[:500]}")


def check(url: str, expected: bytes) -> None:
    resp = httpx.post(url, content=HELLO_INPUT, headers={"content-type": "text/plain"})
    if resp.status_code != 200 or resp.content != expected:
        raise RuntimeError(f"{url}: expected {expected!r}, got {resp.status_code} {resp.content!r}")


_COUNTERS = {
    "offloaded": "wasmlet_offloaded_calls_total",
    "pool_waits": "wasmlet_pool_waits_total",
    "instantiations": "wasmlet_instantiations_total",
    "overloaded": "wasmlet_overloaded_total",
}


def wasmlet_metrics(base: str, headers: dict[str, str]) -> dict[str, float]:
    """wasmlet's counters for the hello function: did calls run inline, wait, run long?
    (/metrics takes the operator's key.)"""
    text = httpx.get(base + "/metrics", headers=headers, timeout=10).text
    out: dict[str, float] = {}
    for key, name in _COUNTERS.items():
        m = re.search(rf'^{name}\{{function="hello"\}} ([\d.e+]+)$', text, re.M)
        out[key] = float(m.group(1)) if m else 0.0
    buckets = dict(
        re.findall(
            r'^wasmlet_invocation_seconds_bucket\{function="hello",le="([^"]+)"\} ([\d.e+]+)$',
            text,
            re.M,
        )
    )
    total = float(buckets.get("+Inf", 0))
    for le, key in (("0.001", "calls_over_1ms"), ("0.005", "calls_over_5ms")):
        out[key] = total - float(buckets.get(le, total))
    return out


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (a server and
    its workers; each server here runs in its own group, see common.Server)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid pgrp session ... utime (12th) stime (13th).
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def bench_http(p: dict[str, Any], work: Path, temp_dirs: list[Path]) -> dict[str, Any]:
    plugin = hello_plugin()
    plugin_path = work / "hello.wasm"
    plugin_path.write_bytes(plugin["wasm"])
    expected = sdk_output(plugin, HELLO_INPUT)
    body_file = work / "hello-input.txt"
    body_file.write_bytes(HELLO_INPUT)
    answer_file = work / "hello-answer.json"
    answer_file.write_bytes(expected)
    print(f"  hello plugin: {plugin['source']} export {plugin['export']}", file=sys.stderr)

    data_dir = temp_dir("wasmlet-bench-data-")
    temp_dirs.append(data_dir)
    mutex_args = ["--plugin", str(plugin_path), "--export", plugin["export"]]
    if plugin["wasi"]:
        mutex_args.append("--wasi")
    answer_args = ["--body-file", str(answer_file)]
    servers: dict[str, Server] = {
        "wasmlet": wasmlet_server(work, data_dir, examples=False),
        "extism-mutex": peer_server(work, "extism-mutex", args=mutex_args),
        "bare-starlette": peer_server(work, "bare-starlette", args=answer_args),
        "bare-asgi": peer_server(work, "bare-asgi", args=answer_args),
    }
    runs: list[dict[str, Any]] = []
    problems: dict[str, list[str]] = {}
    try:
        for server in servers.values():
            server.start()
        deploy_hello(servers["wasmlet"].url, plugin, servers["wasmlet"].headers())
        urls = {k: s.url + INVOKE_PATH.format(name="hello") for k, s in servers.items()}

        def hey(url: str, n: int, c: int) -> dict[str, Any]:
            return run_hey(url, n, c, body_file=body_file, content_type="text/plain")

        for url in urls.values():
            check(url, expected)
            hey(url, p["warm_n"], 50)
        for rnd in range(p["rounds"]):
            shift = rnd % len(SERVERS)
            for kind in SERVERS[shift:] + SERVERS[:shift]:
                server = servers[kind]
                assert server.proc is not None
                before = wasmlet_metrics(server.url, server.headers()) if kind == "wasmlet" else {}
                cpu0 = group_cpu_s(server.proc.pid)
                res = hey(urls[kind], p["n_run"], 100)
                cpu = group_cpu_s(server.proc.pid) - cpu0
                row = {"section": "http", "server": kind, "round": rnd, **res}
                row["server_cpu_us_per_request"] = round(cpu / p["n_run"] * 1e6, 1)
                if kind == "wasmlet":
                    after = wasmlet_metrics(server.url, server.headers())
                    row["wasmlet_metrics"] = {k: after[k] - before[k] for k in after}
                row["loadavg_1m"] = (loadavg() or [None])[0]
                runs.append(row)
                brief = {
                    k: row.get(k)
                    for k in ("rps", "p50_ms", "p99_ms", "failed", "server_cpu_us_per_request")
                }
                print(f"  http   {kind:15} c100 {brief}", file=sys.stderr, flush=True)
        for url in urls.values():  # still answering correctly after the load
            check(url, expected)
    finally:
        for kind, server in servers.items():
            found = server.log_problems()
            if found:
                problems[kind] = found
            server.stop()

    def rows(kind: str) -> list[dict[str, Any]]:
        return [r for r in runs if r["server"] == kind]

    def figures(kind: str) -> dict[str, Any]:
        rs = rows(kind)

        def med(key: str) -> float | None:
            values = [r[key] for r in rs if r.get(key) is not None]
            return None if not values else round(median(values) or 0, 3)

        out = {
            "runs": len(rs),
            "rps_median": med("rps"),
            "rps_all": [r["rps"] for r in rs],
            "p50_ms_median": med("p50_ms"),
            "p99_ms_median": med("p99_ms"),
            "server_cpu_us_per_request_median": med("server_cpu_us_per_request"),
            "failed_total": sum(r["failed"] for r in rs),
            "non200_total": sum(r["non200"] for r in rs),
            "errors_total": sum(r["errors"] for r in rs),
        }
        if kind == "wasmlet":
            out["wasmlet_metrics_total"] = {
                k: sum(r["wasmlet_metrics"][k] for r in rs) for k in rs[0]["wasmlet_metrics"]
            }
        return out

    def per_round(a: str, b: str, key: str = "rps") -> list[float]:
        ra = {r["round"]: r[key] for r in rows(a)}
        rb = {r["round"]: r[key] for r in rows(b)}
        return [round(ra[k] / rb[k], 3) for k in sorted(ra) if k in rb and ra[k] and rb[k]]

    pairs = [(a, b) for i, a in enumerate(SERVERS) for b in SERVERS[i + 1 :]]
    return {
        "plugin": {k: v for k, v in plugin.items() if k != "wasm"},
        "input": HELLO_INPUT.decode(),
        "expected_output": expected.decode("utf-8", "replace"),
        "servers": {k: figures(k) for k in SERVERS},
        "ratios_rps": {
            f"{a} / {b}": {"median": median(per_round(a, b)), "per_round": per_round(a, b)}
            for a, b in pairs
        },
        # Inverse sense: b's CPU per request over a's (> 1 means a is cheaper per request).
        "ratios_cpu_per_request": {
            f"{b} / {a}": {
                "median": median(per_round(b, a, "server_cpu_us_per_request")),
                "per_round": per_round(b, a, "server_cpu_us_per_request"),
            }
            for a, b in pairs
        },
        "server_log_problems": problems,
        "runs": runs,
    }


# -- main ------------------------------------------------------------------------------------


def targets(inproc: dict[str, Any] | None, http: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if inproc is not None:
        for label in ("1KiB", "100KiB"):
            value = inproc["sizes"][label]["ratio_wasmlet_over_sdk"]
            goal = TARGETS["inprocess_wasmlet_over_sdk_max"]
            out[f"inprocess wasmlet/sdk us per call, {label}"] = {
                "value": value,
                "target": f"<= {goal}",
                "met": value is not None and value <= goal,
            }
    if http is not None:
        value = http["ratios_rps"]["wasmlet / extism-mutex"]["median"]
        goal = TARGETS["http_wasmlet_over_mutex_min"]
        out["http c100 rps wasmlet / extism-mutex"] = {
            "value": value,
            "per_round": http["ratios_rps"]["wasmlet / extism-mutex"]["per_round"],
            "target": f">= {goal}",
            "met": value is not None and value >= goal,
        }
        cpu = http["ratios_cpu_per_request"]["extism-mutex / wasmlet"]
        out["(no target) server CPU per request extism-mutex / wasmlet"] = {
            "value": cpu["median"],
            "per_round": cpu["per_round"],
        }
        failed = {k: v["failed_total"] for k, v in http["servers"].items()}
        out["http failed requests"] = {
            "value": failed,
            "target": TARGETS["errors"],
            "met": failed["wasmlet"] == 0 and failed["extism-mutex"] == 0,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="wasmlet's Extism host against the Extism SDK")
    parser.add_argument("--quick", action="store_true", help="short runs for a smoke test")
    parser.add_argument("--section", choices=["inprocess", "http"], help="run only this one")
    parser.add_argument(
        "--no-fuel-child",
        action="store_true",
        help="internal: the in-process section with fuel metering off, JSON on stdout only",
    )
    args = parser.parse_args(argv)
    profile = "quick" if args.quick else "full"
    p = PROFILES[profile]
    if args.no_fuel_child:
        print(json.dumps(bench_inprocess(p, fuel_metering=False)))
        return 0
    if shutil.which("hey") is None and args.section != "inprocess":
        parser.error("hey is not installed")
    install_cleanup()
    info = machine_info()
    info["packages"].update(_versions("extism", "extism-sys"))
    work = temp_dir("wasmlet-bench-extism-")
    temp_dirs = [work]
    started = time.perf_counter()
    inproc = http = nofuel = None
    try:
        if args.section in (None, "inprocess"):
            print("inprocess", file=sys.stderr, flush=True)
            inproc = bench_inprocess(p)
            nofuel = bench_inprocess_nofuel(args.quick)
        if args.section in (None, "http"):
            print("http", file=sys.stderr, flush=True)
            http = bench_http(p, work, temp_dirs)
    finally:
        stop_all()
        for path in temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    doc = {
        "benchmark": "extism",
        "profile": profile,
        "settings": p,
        "machine": info,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "targets": targets(inproc, http),
        "inprocess": inproc,
        "inprocess_fuel_metering_off": nofuel,
        "http": http,
    }
    name = "extism.json" if profile == "full" else "extism.quick.json"
    if args.section:  # a partial run must not overwrite a complete one
        name = name.replace(".json", f".{args.section}.json")
    path = write_results(name, doc)
    print(f"wrote {path} in {doc['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
