"""Fault containment under load: does a stream of good requests notice misbehaving guests?

One wasmlet server (--examples, stdout cap 1 MiB, log cap 4 KiB) gets the fault guests of
tests/fixtures/faults/ deployed next to the bundled examples. A good stream — threads
alternating `gcd` (core) and `hello-plugin` (extism) calls, each with its own arguments and
its answer checked — runs through every phase:

  first-faults  each fault fired once, one after another, on functions never called before
                (first calls run inline on the event loop until the dispatcher learns
                better: runtime/dispatch.py), with the good stream running
  baseline      the good stream alone
  control       the good stream while the fault threads send good requests (fibonacci)
                instead: how much of what the faults cost is just more requests
  faults        the good stream while threads fire every fault over and over
  faults-no-host-loops  the same without the two host-call loops (which hold the event
                loop today): what the other faults cost
                (baseline, control and the two fault phases alternate, `rounds` times, so
                each round sees about the same background load on a shared machine)
  only <fault>  (--per-fault) the good stream while the fault threads fire one fault only,
                to see which faults cost the good stream most

Figures of merit: p99(faults) / p99(baseline) of the good stream, per pair (target <= 2),
and the good stream's success rate (target 100%). Every fault's observed status and code is
recorded against the one it should end with, and the server's RSS is sampled throughout.

Usage: python bench/faults.py [--quick] [--per-fault]
(JSON on stdout and in bench/results/faults.json; --quick writes faults.quick.json)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import (
    REPO_DIR,
    Server,
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

FIXTURES = REPO_DIR / "tests" / "fixtures" / "faults"
SERVER_ENV = {"WASMLET_MAX_OUTPUT_BYTES": str(1024 * 1024), "WASMLET_MAX_LOG_BYTES": "4096"}
TIMEOUT_MS = 300
MEMORY_MB = 16
GOOD_TIMEOUT_S = 10.0  # a good request not answered by then counts as failed

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "phase_s": 10.0,
        "rounds": 3,
        "good_threads": 8,
        "fault_threads": 4,
    },
    "quick": {
        "phase_s": 3.0,
        "rounds": 1,
        "good_threads": 4,
        "fault_threads": 2,
    },
}


@dataclass(frozen=True)
class Fault:
    """A fault guest, how it is deployed and called, and the answer it should end with."""

    key: str
    abi: str
    export: str
    expected: tuple[int, str | None]  # (status, error code); None: a success
    fields: dict[str, str] = field(default_factory=dict)
    args: tuple[int, ...] = ()  # core arguments

    @property
    def module(self) -> Path:
        return FIXTURES / {"core": "core_faults.wat", "wasi-cgi": "cgi_faults.wat"}.get(
            self.abi, "extism_faults.wat"
        )

    def deploy(self, client: httpx.Client) -> None:
        data = {"name": self.key, "abi": self.abi, "timeout_ms": str(TIMEOUT_MS)}
        data["memory_mb"] = str(MEMORY_MB)
        data["export"] = self.export if self.abi == "wasi-cgi" else "ok"
        if self.abi == "extism":
            data["wasi"] = "true"
        data.update(self.fields)
        files = {"file": (self.module.name, self.module.read_bytes())}
        resp = client.post("/api/v1/functions", data=data, files=files)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"deploy {self.key}: {resp.status_code} {resp.text}")

    def fire(self, client: httpx.Client) -> httpx.Response:
        if self.abi == "wasi-cgi":
            return client.post(f"/fn/{self.key}/")
        body = {"args": list(self.args)} if self.abi == "core" else None
        return client.post(f"/api/v1/functions/{self.key}/invoke/{self.export}", json=body)


FAULTS = [
    Fault("f-core-loop", "core", "spin", (504, "timeout")),
    Fault("f-core-stack", "core", "recurse", (500, "guest_trap"), args=(0,)),
    Fault("f-core-memory", "core", "grow", (500, "memory_limit")),
    Fault("f-core-trap", "core", "trap", (500, "guest_trap")),
    Fault("f-cgi-flood", "wasi-cgi", "flood", (500, "guest_error"), {"timeout_ms": "2000"}),
    Fault("f-cgi-exit0", "wasi-cgi", "exit0", (200, None)),
    Fault("f-cgi-exit3", "wasi-cgi", "exit3", (500, "guest_error")),
    Fault("f-extism-loop", "extism", "spin", (504, "timeout")),
    Fault("f-extism-host-loop", "extism", "host_loop", (504, "timeout")),
    Fault("f-extism-host-spin", "extism", "host_spin", (504, "timeout")),
    Fault("f-extism-kernel-alloc", "extism", "exhaust", (500, "guest_error")),
    Fault("f-extism-kernel-trap", "extism", "exhaust_trap", (500, "memory_limit")),
    Fault("f-extism-exit0", "extism", "exit0", (200, None)),
    Fault("f-extism-exit3", "extism", "exit3", (500, "guest_error")),
    Fault("f-extism-not-utf8", "extism", "not_utf8", (200, None)),
    Fault(
        "f-extism-not-json",
        "extism",
        "not_json",
        (500, "guest_error"),
        {"content_type": "application/json"},
    ),
]
# The faults but the two that call the host in a loop, which today hold the event loop for
# their whole timeout (see bench/README.md): what the others cost on their own.
NO_HOST_LOOPS = [f for f in FAULTS if f.export not in ("host_loop", "host_spin")]
# The control: the same extra threads, sending good requests (a bundled example) instead of
# faults, so "the faults hurt" can be told apart from "more requests hurt".
CONTROL = [Fault("fibonacci", "core", "fib", (200, None), args=(30,))]


@dataclass(frozen=True)
class Target:
    """The server under test, and the key that lets the bench in (if it asks for one)."""

    url: str
    headers: dict[str, str]

    @classmethod
    def of(cls, server: Server, data_dir: Path) -> Target:
        # A server with access control writes its operator key here on first start.
        key = data_dir / "admin.key"
        token = key.read_text().strip() if key.exists() else ""
        return cls(server.url, {"Authorization": f"Bearer {token}"} if token else {})

    def client(self, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, headers=self.headers)


def observed(resp: httpx.Response) -> str:
    """`status code` of an answer, e.g. `504 timeout` or `200 -`."""
    code = "-"
    if resp.status_code >= 400:
        try:
            code = resp.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "(not the error shape)"
    return f"{resp.status_code} {code}"


def expected_label(fault: Fault) -> str:
    status, code = fault.expected
    return f"{status} {code or '-'}"


# -- the good stream ---------------------------------------------------------------------------


def good_call(client: httpx.Client, k: int) -> str | None:
    """The k-th good request (gcd or hello-plugin by parity); a problem, or None when right."""
    try:
        if k % 2:
            m = k % 1_000_000 + 1  # gcd(1071 m, 462 m) = 21 m; 1071 m stays within i32
            resp = client.post("/api/v1/functions/gcd/invoke", json={"args": [1071 * m, 462 * m]})
            if resp.status_code == 200 and resp.json() == {"result": 21 * m}:
                return None
        else:
            resp = client.post("/api/v1/functions/hello-plugin/invoke", content=b"c%d" % k)
            if resp.status_code == 200 and resp.json() == {"message": f"Hello c{k}"}:
                return None
        return f"{resp.status_code} {resp.text[:120]}"
    except httpx.HTTPError as exc:
        return f"{exc.__class__.__name__}: {exc}"


class GoodStream:
    """Threads sending good requests back to back until stopped; latencies in ms."""

    def __init__(self, target: Target, threads: int) -> None:
        self.target = target
        self.threads = threads
        self.latencies: list[float] = []
        self.problems: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="good")
        self._futures: list[Any] = []
        self._started = 0.0
        self.elapsed = 0.0

    def _run(self, index: int) -> None:
        k = index * 1_000_000
        with self.target.client(GOOD_TIMEOUT_S) as client:
            while not self.stop.is_set():
                k += 1
                t0 = time.perf_counter()
                problem = good_call(client, k)
                ms = (time.perf_counter() - t0) * 1000
                with self._lock:
                    self.latencies.append(ms)
                    if problem:
                        self.problems.append(problem)

    def start(self) -> GoodStream:
        self._started = time.perf_counter()
        self._futures = [self._pool.submit(self._run, i) for i in range(self.threads)]
        return self

    def finish(self) -> dict[str, Any]:
        self.stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()
        self.elapsed = time.perf_counter() - self._started
        n = len(self.latencies)
        ok = n - len(self.problems)
        return {
            "requests": n,
            "ok": ok,
            "success_rate": round(ok / n, 6) if n else None,
            "rps": round(n / self.elapsed, 1) if self.elapsed else None,
            "p50_ms": _round(percentile(self.latencies, 50)),
            "p99_ms": _round(percentile(self.latencies, 99)),
            "max_ms": _round(max(self.latencies, default=None)),
            "problems_sample": self.problems[:5],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- faults and memory -------------------------------------------------------------------------


class FaultStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[str, Counter[str]] = {}
        self.latencies: dict[str, list[float]] = {}

    def fire(self, client: httpx.Client, fault: Fault) -> None:
        t0 = time.perf_counter()
        try:
            label = observed(fault.fire(client))
        except httpx.HTTPError as exc:
            label = f"no answer ({exc.__class__.__name__})"
        ms = (time.perf_counter() - t0) * 1000
        with self._lock:
            self.outcomes.setdefault(fault.key, Counter())[label] += 1
            self.latencies.setdefault(fault.key, []).append(ms)

    def summary(self, faults: list[Fault]) -> dict[str, Any]:
        out = {}
        for fault in faults:
            seen = self.outcomes.get(fault.key, Counter())
            lat = self.latencies.get(fault.key, [])
            out[fault.key] = {
                "expected": expected_label(fault),
                "observed": dict(seen),
                "as_expected": seen.get(expected_label(fault), 0) == sum(seen.values()) > 0,
                "p50_ms": _round(percentile(lat, 50)),
                "max_ms": _round(max(lat, default=None)),
            }
        return out


def fault_threads(
    target: Target, threads: int, stop: threading.Event, stats: FaultStats, faults: list[Fault]
) -> list[Any]:
    """Threads firing each of `faults` in turn (each from its own offset) until `stop`."""

    def run(offset: int) -> None:
        order = faults[offset:] + faults[:offset]
        with target.client(60) as client:
            while not stop.is_set():
                for fault in order:
                    if stop.is_set():
                        return
                    stats.fire(client, fault)

    pool = ThreadPoolExecutor(threads, thread_name_prefix="fault")
    step = max(1, len(faults) // threads)
    futures = [pool.submit(run, i * step) for i in range(threads)]
    pool.shutdown(wait=False)
    return futures


class RssSampler:
    """The server's VmRSS every 50 ms; `peak_since(mark)` for one phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(self.now())

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self) -> int:
        return len(self.samples)

    def peak_since(self, mark: int) -> int:
        return max(self.samples[mark:], default=self.now())


def mib(n: int) -> float:
    return round(n / 2**20, 1)


# -- the run -----------------------------------------------------------------------------------


class Bench:
    def __init__(self, profile: str, per_fault: bool) -> None:
        self.profile = profile
        self.p = PROFILES[profile]
        self.per_fault = per_fault
        self.temp_dirs: list[Path] = []
        self.phases: list[dict[str, Any]] = []

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def run(self) -> dict[str, Any]:
        base = temp_dir("wasmlet-faults-")
        self.temp_dirs.append(base)
        os.environ.update(SERVER_ENV)  # the server inherits the bench's environment
        server = wasmlet_server(base, base / "data", label="wasmlet-faults").start()
        assert server.proc is not None
        rss = RssSampler(server.proc.pid).start()
        rss_start = rss.now()
        target = Target.of(server, base / "data")
        try:
            with target.client(30) as client:
                for fault in FAULTS:
                    fault.deploy(client)
                for k in range(1, 201):  # warm the good functions
                    if problem := good_call(client, k):
                        raise RuntimeError(f"good request failed before the run: {problem}")
            self.first_faults(target, rss)
            for rnd in range(self.p["rounds"]):
                self.log(f"round {rnd + 1}/{self.p['rounds']}")
                self.phase(target, rss, "baseline", rnd, [])
                self.phase(target, rss, "control", rnd, CONTROL)
                self.phase(target, rss, "faults", rnd, FAULTS)
                self.phase(target, rss, "faults-no-host-loops", rnd, NO_HOST_LOOPS)
            if self.per_fault:
                self.log("each fault alone")
                for fault in FAULTS:
                    self.phase(target, rss, f"only {fault.key}", 0, [fault])
            rss_end = rss.now()
            problems = server.log_problems()
        finally:
            rss.stop()
            server.stop()
        return self.summary(rss_start, rss_end, rss, problems)

    def phase(
        self, target: Target, rss: RssSampler, name: str, rnd: int, faults: list[Fault]
    ) -> None:
        """The good stream for `phase_s`, with `faults` fired meanwhile (none: a baseline)."""
        mark, before = rss.mark(), rss.now()
        stats = FaultStats()
        stop = threading.Event()
        good = GoodStream(target, self.p["good_threads"]).start()
        threads = self.p["fault_threads"]
        firing = fault_threads(target, threads, stop, stats, faults) if faults else []
        time.sleep(self.p["phase_s"])
        result = good.finish()
        stop.set()
        for future in firing:
            future.result()
        entry = {
            "phase": name,
            "round": rnd + 1,
            "good": result,
            "rss_mib": {
                "start": mib(before),
                "peak": mib(rss.peak_since(mark)),
                "end": mib(rss.now()),
            },
        }
        if faults:
            entry["faults"] = stats.summary(faults)
            entry["faults_fired"] = sum(sum(c.values()) for c in stats.outcomes.values())
        self.phases.append(entry)
        self.log(
            f"  {name}: {result['requests']} good, success {result['success_rate']}, "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
        )

    def first_faults(self, target: Target, rss: RssSampler) -> None:
        self.log("first faults")
        mark, before = rss.mark(), rss.now()
        stats = FaultStats()
        good = GoodStream(target, self.p["good_threads"]).start()
        time.sleep(0.5)
        with target.client(60) as client:
            for fault in FAULTS:
                stats.fire(client, fault)
        time.sleep(0.5)
        result = good.finish()
        self.phases.append(
            {
                "phase": "first-faults",
                "round": 1,
                "good": result,
                "faults": stats.summary(FAULTS),
                "rss_mib": {"start": mib(before), "peak": mib(rss.peak_since(mark))},
            }
        )
        self.log(f"  first-faults: p99 {result['p99_ms']} ms, max {result['max_ms']} ms")

    def summary(
        self,
        rss_start: int,
        rss_end: int,
        rss: RssSampler,
        problems: list[str],
    ) -> dict[str, Any]:
        base = [p for p in self.phases if p["phase"] == "baseline"]
        hurt = [p for p in self.phases if p["phase"] == "faults"]
        control = [p for p in self.phases if p["phase"] == "control"]
        rest = [p for p in self.phases if p["phase"] == "faults-no-host-loops"]
        pairs = [
            ratio(f["good"]["p99_ms"], b["good"]["p99_ms"]) for b, f in zip(base, hurt, strict=True)
        ]
        outcome_rows: dict[str, dict[str, Any]] = {}
        for phase in self.phases:
            if phase["phase"] == "control":
                continue
            for key, row in phase.get("faults", {}).items():
                agg = outcome_rows.setdefault(
                    key, {"expected": row["expected"], "observed": Counter(), "max_ms": 0.0}
                )
                agg["observed"].update(row["observed"])
                agg["max_ms"] = max(agg["max_ms"], row["max_ms"] or 0.0)
        for row in outcome_rows.values():
            row["observed"] = dict(row["observed"])
            row["as_expected"] = row["observed"].get(row["expected"], 0) == sum(
                row["observed"].values()
            )
        first = self.phases[0]["good"]
        base_p99 = median([p["good"]["p99_ms"] for p in base])
        alone = {
            p["phase"].removeprefix("only "): {
                "p50_ms": p["good"]["p50_ms"],
                "p99_ms": p["good"]["p99_ms"],
                "p99_ratio_to_median_baseline": ratio(p["good"]["p99_ms"], base_p99),
                "success_rate": p["good"]["success_rate"],
                "rps": p["good"]["rps"],
            }
            for p in self.phases
            if p["phase"].startswith("only ")
        }

        def rate(phases: list[dict[str, Any]]) -> float | None:
            n = sum(p["good"]["requests"] for p in phases)
            return round(sum(p["good"]["ok"] for p in phases) / n, 6) if n else None

        return {
            "figure_of_merit": {
                "p99_ratio_per_pair": pairs,
                "p99_ratio_median": median([r for r in pairs if r is not None]),
                "target": 2.0,
                "baseline_p99_ms_median": base_p99,
                "faults_p99_ms_median": median([p["good"]["p99_ms"] for p in hurt]),
                "control_p99_ms_median": median([p["good"]["p99_ms"] for p in control]),
                "faults_to_control_p99_ratio_per_round": [
                    ratio(f["good"]["p99_ms"], c["good"]["p99_ms"])
                    for c, f in zip(control, hurt, strict=True)
                ],
                "baseline_p50_ms_median": median([p["good"]["p50_ms"] for p in base]),
                "faults_p50_ms_median": median([p["good"]["p50_ms"] for p in hurt]),
                "baseline_success_rate": rate(base),
                "faults_success_rate": rate(hurt),
                "no_host_loops_p99_ratio_per_pair": [
                    ratio(f["good"]["p99_ms"], b["good"]["p99_ms"])
                    for b, f in zip(base, rest, strict=True)
                ],
                "no_host_loops_p99_ms_median": median([p["good"]["p99_ms"] for p in rest]),
                "no_host_loops_success_rate": rate(rest),
                "control_success_rate": rate(control),
                "faults_fired": sum(p.get("faults_fired", 0) for p in hurt),
            },
            "first_faults": {
                "p99_ms": first["p99_ms"],
                "max_ms": first["max_ms"],
                "success_rate": first["success_rate"],
            },
            "each_fault_alone": alone,
            "fault_outcomes": outcome_rows,
            "rss_mib": {
                "start": mib(rss_start),
                "end": mib(rss_end),
                "peak": mib(max(rss.samples, default=0)),
            },
            "server_log_problems": problems,
        }


def print_table(summary: dict[str, Any], phases: list[dict[str, Any]]) -> None:
    out = sys.stderr
    print("\nphase          round  requests  success   p50 ms   p99 ms   max ms", file=out)
    for p in phases:
        g = p["good"]
        print(
            f"{p['phase']:<14} {p['round']:>5} {g['requests']:>9} {g['success_rate']!s:>8} "
            f"{g['p50_ms']!s:>8} {g['p99_ms']!s:>8} {g['max_ms']!s:>8}",
            file=out,
        )
    fom = summary["figure_of_merit"]
    print(
        f"\np99(faults)/p99(baseline): {fom['p99_ratio_per_pair']} -> median "
        f"{fom['p99_ratio_median']} (target <= 2); "
        f"success with faults {fom['faults_success_rate']}",
        file=out,
    )
    print(
        f"p99(faults)/p99(control): {fom['faults_to_control_p99_ratio_per_round']}",
        file=out,
    )
    print(
        f"p99(faults but host-call loops)/p99(baseline): {fom['no_host_loops_p99_ratio_per_pair']}",
        file=out,
    )
    print("\nfault                    expected          observed", file=out)
    for key, row in summary["fault_outcomes"].items():
        mark = "" if row["as_expected"] else "   <-- not as expected"
        print(f"{key:<24} {row['expected']:<17} {row['observed']}{mark}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fault containment under load")
    parser.add_argument("--quick", action="store_true", help="short phases, one round")
    parser.add_argument(
        "--per-fault", action="store_true", help="also a phase for each fault alone"
    )
    args = parser.parse_args(argv)
    install_cleanup()
    profile = "quick" if args.quick else "full"
    bench = Bench(profile, per_fault=args.per_fault)
    info = machine_info()
    started = time.perf_counter()
    try:
        summary = bench.run()
    finally:
        stop_all()
        for path in bench.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    doc = {
        "benchmark": "faults",
        "profile": profile,
        "settings": {
            **bench.p,
            "per_fault": bench.per_fault,
            "server_env": SERVER_ENV,
            "timeout_ms": TIMEOUT_MS,
            "memory_mb": MEMORY_MB,
            "good_timeout_s": GOOD_TIMEOUT_S,
        },
        "machine": info,
        "elapsed_s": round(time.perf_counter() - started, 1),
        **summary,
        "phases": bench.phases,
    }
    print_table(summary, bench.phases)
    path = write_results("faults.json" if profile == "full" else "faults.quick.json", doc)
    print(f"wrote {path} in {doc['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
