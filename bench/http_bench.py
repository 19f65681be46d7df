"""HTTP load: wasmlet's invoke path against peer servers, with `hey` and `wrk`.

Every server is started on a free port (wasmlet with a fresh data dir and --examples),
checked, warmed up, measured, and stopped before the next one starts, so the servers never
compete with each other; the load generator shares the machine with the server under test
in every run, so ratios between servers measured in the same run are the meaningful
figures on a shared machine, not absolute requests per second.

Sections:
  gcd        POST /api/v1/functions/gcd/invoke {"args":[1071,462]} with hey at -c 1 and
             -c 100 against wasmlet and each peer (bench/peers.py), and at -c 200 against
             wasmlet; repeated in rounds (server order reversed every other round).
  fresh      gcd deployed again with reuse=false (a fresh instance per request) against the
             pooled gcd, alternating, in one wasmlet process, at -c 100.
  hello      GET /fn/hello/?name=Ada (wasi-cgi: a fresh instance per request) at -c 100.
  paired     wasmlet and bare-starlette both up, short -c 100 hey runs alternating between
             them: the per-pair ratio is the most noise-resistant figure on a shared machine.
  wrk        wrk -t2 -c100 against wasmlet and bare-starlette with 1 and 2 worker processes:
             wrk costs less CPU per request than hey, so it shows how the servers scale.

Usage: python bench/http_bench.py [--quick]
(JSON on stdout and in bench/results/http.json; --quick writes http.quick.json)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    EXAMPLES_DIR,
    Server,
    install_cleanup,
    loadavg,
    machine_info,
    median,
    peer_server,
    ratio,
    stop_all,
    temp_dir,
    wasmlet_server,
    write_results,
)

GCD_BODY = b'{"args":[1071,462]}'
GCD_EXPECTED = b'{"result": 21}'
GCD_PATH = "/api/v1/functions/{name}/invoke"
HELLO_PATH = "/fn/hello/?name=Ada"
HELLO_EXPECTED = b"Hello, Ada!"
PEERS = ["bare-starlette", "bare-asgi", "wasmtime-direct"]
FRESH_NAME = "gcd-fresh"

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "rounds": 1,
        "warm_n": 500,
        "n_c1": 300,
        "n_c100": 3000,
        "n_c200": 3000,
        "fresh_reps": 1,
        "n_fresh": 3000,
        "n_hello": 2000,
        "wrk_s": 2,
        "wrk_rounds": 1,
        "pairs": 2,
        "n_pair": 2000,
    },
    "full": {
        "rounds": 5,
        "warm_n": 2000,
        "n_c1": 1000,
        "n_c100": 10000,
        "n_c200": 20000,
        "fresh_reps": 3,
        "n_fresh": 10000,
        "n_hello": 10000,
        "wrk_s": 5,
        "wrk_rounds": 2,
        "pairs": 10,
        "n_pair": 6000,
    },
}

TARGETS = {"c100_vs_bare_starlette": 0.6, "fresh_vs_pooled": 0.5, "errors": 0}

WRK_LUA = """\
wrk.method = "POST"
wrk.body = '{"args":[1071,462]}'
wrk.headers["Content-Type"] = "application/json"
"""


# -- hey -------------------------------------------------------------------------------------

_STATUS_RE = re.compile(r"^\s*\[(\d{3})\]\s+(\d+) responses", re.M)
_ERROR_RE = re.compile(r"^\s*\[(\d+)\]\s+(.*)$")


def parse_hey(text: str) -> dict[str, Any]:
    """Figures from hey's summary: rps, latency percentiles, status and error counts."""

    def seconds(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    def ms(pattern: str) -> float | None:
        s = seconds(pattern)
        return None if s is None else round(s * 1000, 3)

    statuses = {int(code): int(count) for code, count in _STATUS_RE.findall(text)}
    errors: dict[str, int] = {}
    if "Error distribution:" in text:
        for line in text.split("Error distribution:", 1)[1].splitlines():
            m = _ERROR_RE.match(line)
            if m:
                message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", m.group(2).strip())
                errors[message[:200]] = errors.get(message[:200], 0) + int(m.group(1))
    non200 = sum(count for code, count in statuses.items() if code != 200)
    error_count = sum(errors.values())
    rps = seconds(r"Requests/sec:\s+([\d.]+)")
    return {
        "rps": None if rps is None else round(rps, 1),
        "p50_ms": ms(r"50% in ([\d.]+) secs"),
        "p90_ms": ms(r"90% in ([\d.]+) secs"),
        "p99_ms": ms(r"99% in ([\d.]+) secs"),
        "avg_ms": ms(r"Average:\s+([\d.]+) secs"),
        "slowest_ms": ms(r"Slowest:\s+([\d.]+) secs"),
        "total_s": seconds(r"Total:\s+([\d.]+) secs"),
        "status_counts": statuses,
        "non200": non200,
        "errors": error_count,
        "error_messages": errors,
        "failed": non200 + error_count,
    }


def run_hey(
    url: str,
    n: int,
    c: int,
    *,
    method: str = "POST",
    body_file: Path | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    cmd = ["hey", "-n", str(n), "-c", str(c), "-m", method]
    if body_file is not None:
        cmd += ["-D", str(body_file), "-T", content_type]
    cmd.append(url)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    result = parse_hey(done.stdout)
    result.update(
        tool="hey",
        concurrency=c,
        requests=n,
        method=method,
        wall_s=round(time.perf_counter() - started, 2),
        command=" ".join(cmd),
    )
    if done.returncode != 0 or result["rps"] is None:
        result["hey_failed"] = (done.stderr or done.stdout)[-500:]
    return result


# -- wrk -------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _duration_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return round(float(m.group(1)) * _UNITS[m.group(2)], 3)


def parse_wrk(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = round(float(m.group(1)), 1) if m else None
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        out[f"p{pct}_ms"] = _duration_ms(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    out["total_requests"] = int(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    # wrk prints the socket-errors line only when there were some.
    counts = map(int, m.groups()) if m else (0, 0, 0, 0)
    out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), counts, strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    out["errors"] = sum(out["socket_errors"].values())
    out["failed"] = out["non2xx"] + out["errors"]
    return out


def run_wrk(url: str, lua: Path, *, threads: int, conns: int, seconds: int) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(lua)]
    cmd.append(url)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    result = parse_wrk(done.stdout)
    result.update(tool="wrk", concurrency=conns, threads=threads, seconds=seconds)
    result["command"] = " ".join(cmd)
    if done.returncode != 0 or result["rps"] is None:
        result["wrk_failed"] = (done.stderr or done.stdout)[-500:]
    return result


# -- helpers ---------------------------------------------------------------------------------


def check(url: str, *, expected: bytes, body: bytes | None) -> None:
    """One request before measuring: a server that answers wrongly is not benchmarked."""
    if body is None:
        resp = httpx.get(url, timeout=30)
    else:
        resp = httpx.post(url, content=body, headers={"content-type": "application/json"})
    if resp.status_code != 200 or resp.content.strip() != expected:
        raise RuntimeError(f"{url}: expected {expected!r}, got {resp.status_code} {resp.content!r}")


def deploy_fresh_gcd(base: str, headers: dict[str, str]) -> dict[str, Any]:
    data = (EXAMPLES_DIR / "gcd" / "gcd.wat").read_bytes()
    resp = httpx.post(
        base + "/api/v1/functions",
        headers=headers,
        data={
            "name": FRESH_NAME,
            "abi": "core",
            "export": "gcd",
            "reuse": "false",
            "visibility": "public",
        },
        files={"file": ("gcd.wat", data, "application/octet-stream")},
        timeout=60,
    )
    resp.raise_for_status()
    spec = resp.json()["active_version"]["spec"]
    if spec["reuse"] is not False:
        raise RuntimeError(f"{FRESH_NAME} deployed with reuse={spec['reuse']}")
    return spec


class Bench:
    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.p = PROFILES[profile]
        self.work = temp_dir("wasmlet-bench-http-")
        self.body_file = self.work / "gcd-body.json"
        self.body_file.write_bytes(GCD_BODY)
        self.lua = self.work / "post.lua"
        self.lua.write_text(WRK_LUA)
        self.runs: list[dict[str, Any]] = []
        self.servers: list[dict[str, Any]] = []
        self.log_problems: dict[str, list[str]] = {}
        self.temp_dirs: list[Path] = [self.work]
        self.failures: list[dict[str, Any]] = []

    def start(self, kind: str, workers: int = 1) -> Server | None:
        """Start a server; one that fails to start is recorded and its section skipped."""
        if kind == "wasmlet":
            data_dir = temp_dir("wasmlet-bench-data-")
            self.temp_dirs.append(data_dir)
            server = wasmlet_server(self.work, data_dir, workers=workers)
        else:
            server = peer_server(self.work, kind, workers=workers)
        if not self._try_start(server, kind, workers):
            return None
        self.servers.append({"label": server.label, "ready_s": round(server.ready_s or 0, 2)})
        return server

    def _try_start(self, server: Server, kind: str, workers: int) -> bool:
        try:
            server.start()
            return True
        except RuntimeError as exc:
            server.stop()
            message = str(exc).splitlines()
            failure = {"server": server.label, "workers": workers, "error": message[0]}
            failure["log_tail"] = message[-3:]
            self.failures.append(failure)
            print(f"  {server.label} failed to start: {message[-1]}", file=sys.stderr)
            return False

    def finish(self, server: Server) -> None:
        problems = server.log_problems()
        if problems:
            self.log_problems[server.label] = problems
        server.stop()

    def record(
        self, section: str, server: str, workers: int, rnd: int, res: dict, label: str = ""
    ) -> dict:
        row = {"section": section, "server": server, "workers": workers, "round": rnd, **res}
        row["process"] = label or server
        row["loadavg_1m"] = (loadavg() or [None])[0]  # how busy the shared machine was
        self.runs.append(row)
        brief = {k: row.get(k) for k in ("rps", "p50_ms", "p99_ms", "failed")}
        print(
            f"  {section:6} {server:16} w{workers} c{row['concurrency']:<4} {brief}",
            file=sys.stderr,
            flush=True,
        )
        return row

    # -- sections ----------------------------------------------------------------------------

    def gcd_round(self, kind: str, rnd: int, extras: bool) -> None:
        server = self.start(kind)
        if server is None:
            return
        try:
            url = server.url + GCD_PATH.format(name="gcd")
            check(url, expected=GCD_EXPECTED, body=GCD_BODY)
            run_hey(url, self.p["warm_n"], 50, body_file=self.body_file)
            for c, n in ((1, self.p["n_c1"]), (100, self.p["n_c100"])):
                res = run_hey(url, n, c, body_file=self.body_file)
                self.record("gcd", kind, 1, rnd, res)
            if kind == "wasmlet" and extras:
                res = run_hey(url, self.p["n_c200"], 200, body_file=self.body_file)
                self.record("gcd", kind, 1, rnd, res)
                self.fresh_vs_pooled(server)
                self.hello(server)
        finally:
            self.finish(server)

    def fresh_vs_pooled(self, server: Server) -> None:
        deploy_fresh_gcd(server.url, server.headers())
        urls = {
            "pooled": server.url + GCD_PATH.format(name="gcd"),
            "fresh": server.url + GCD_PATH.format(name=FRESH_NAME),
        }
        check(urls["fresh"], expected=GCD_EXPECTED, body=GCD_BODY)
        run_hey(urls["fresh"], self.p["warm_n"], 50, body_file=self.body_file)
        for rep in range(self.p["fresh_reps"]):
            for mode in ("pooled", "fresh") if rep % 2 == 0 else ("fresh", "pooled"):
                res = run_hey(urls[mode], self.p["n_fresh"], 100, body_file=self.body_file)
                self.record("fresh", f"wasmlet-{mode}", 1, rep, res)

    def hello(self, server: Server) -> None:
        url = server.url + HELLO_PATH
        check(url, expected=HELLO_EXPECTED, body=None)
        run_hey(url, self.p["warm_n"], 50, method="GET")
        res = run_hey(url, self.p["n_hello"], 100, method="GET")
        self.record("hello", "wasmlet", 1, 0, res)

    def paired(self) -> None:
        """wasmlet and bare-starlette both up, short hey runs alternating between them.

        The sequential rounds above measure servers tens of seconds apart; on a shared
        machine the background load changes faster than that. Here the two runs of a pair
        are seconds apart, so each pair's ratio sees (nearly) the same background load. The
        idle server only sleeps meanwhile (wasmlet's epoch ticker wakes 100 times a second).
        """
        servers = {kind: self.start(kind) for kind in ("wasmlet", "bare-starlette")}
        try:
            if any(server is None for server in servers.values()):
                return
            urls = {k: s.url + GCD_PATH.format(name="gcd") for k, s in servers.items() if s}
            for url in urls.values():
                check(url, expected=GCD_EXPECTED, body=GCD_BODY)
                run_hey(url, self.p["warm_n"], 50, body_file=self.body_file)
            kinds = list(urls)
            for i in range(self.p["pairs"]):
                for kind in kinds if i % 2 == 0 else kinds[::-1]:
                    res = run_hey(urls[kind], self.p["n_pair"], 100, body_file=self.body_file)
                    self.record("paired", kind, 1, i, res)
        finally:
            for server in servers.values():
                if server is not None:
                    self.finish(server)

    def wrk(self, kind: str, workers: int, rnd: int) -> None:
        server = self.start(kind, workers)
        if server is None:
            return
        try:
            url = server.url + GCD_PATH.format(name="gcd")
            check(url, expected=GCD_EXPECTED, body=GCD_BODY)
            # Warm every worker process: each compiles its pool on its first request.
            run_wrk(url, self.lua, threads=2, conns=100, seconds=1)
            res = run_wrk(url, self.lua, threads=2, conns=100, seconds=self.p["wrk_s"])
            self.record("wrk", kind, workers, rnd, res, label=server.label)
        finally:
            self.finish(server)

    def run(self) -> dict[str, Any]:
        order = ["wasmlet", *PEERS]
        for rnd in range(self.p["rounds"]):
            print(f"round {rnd + 1}/{self.p['rounds']}", file=sys.stderr, flush=True)
            for kind in order if rnd % 2 == 0 else order[::-1]:
                self.gcd_round(kind, rnd, extras=rnd == 0)
        print("paired", file=sys.stderr, flush=True)
        self.paired()
        print("wrk", file=sys.stderr, flush=True)
        configs = [(kind, w) for w in (1, 2) for kind in ("wasmlet", "bare-starlette")]
        for rnd in range(self.p["wrk_rounds"]):
            for kind, workers in configs if rnd % 2 == 0 else configs[::-1]:
                self.wrk(kind, workers, rnd)
        return self.summarise()

    # -- summary -----------------------------------------------------------------------------

    def _rows(self, section: str, server: str, c: int, workers: int = 1) -> list[dict]:
        return [
            r
            for r in self.runs
            if r["section"] == section
            and r["server"] == server
            and r["concurrency"] == c
            and r["workers"] == workers
        ]

    def _figures(self, rows: list[dict]) -> dict[str, Any]:
        def med(key: str) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            return None if not values else round(median(values), 3)

        return {
            "runs": len(rows),
            "rps_median": med("rps"),
            "rps_all": [r["rps"] for r in rows],
            "p50_ms_median": med("p50_ms"),
            "p99_ms_median": med("p99_ms"),
            "failed_total": sum(r["failed"] for r in rows),
            "non200_total": sum(r.get("non200", r.get("non2xx", 0)) for r in rows),
            "errors_total": sum(r["errors"] for r in rows),
        }

    def _paired(self, section: str, a: str, b: str, c: int) -> list[float]:
        """Per-round ratios a/b: each pair was measured minutes apart at most."""
        ra = {r["round"]: r["rps"] for r in self._rows(section, a, c)}
        rb = {r["round"]: r["rps"] for r in self._rows(section, b, c)}
        return [round(ra[k] / rb[k], 3) for k in sorted(ra) if k in rb and ra[k] and rb[k]]

    def summarise(self) -> dict[str, Any]:
        gcd = {
            kind: {f"c{c}": self._figures(self._rows("gcd", kind, c)) for c in (1, 100, 200)}
            for kind in ["wasmlet", *PEERS]
        }
        for kind in PEERS:
            del gcd[kind]["c200"]
        fresh = {
            m: self._figures(self._rows("fresh", f"wasmlet-{m}", 100)) for m in ("pooled", "fresh")
        }
        hello = self._figures(self._rows("hello", "wasmlet", 100))
        wrk = {
            f"{kind}-w{w}": self._figures(self._rows("wrk", kind, 100, w))
            for kind in ("wasmlet", "bare-starlette")
            for w in (1, 2)
        }

        def target(value: float | None, goal: float, pairs: list[float]) -> dict[str, Any]:
            return {
                "value": value,
                "per_round": pairs,
                "target": goal,
                "met": value is not None and value >= goal,
            }

        vs_starlette = self._paired("gcd", "wasmlet", "bare-starlette", 100)
        vs_starlette_paired = self._paired("paired", "wasmlet", "bare-starlette", 100)
        paired = {
            k: self._figures(self._rows("paired", k, 100)) for k in ("wasmlet", "bare-starlette")
        }
        fresh_pairs = self._paired("fresh", "wasmlet-fresh", "wasmlet-pooled", 100)
        wasmlet_failed = {c: gcd["wasmlet"][f"c{c}"]["failed_total"] for c in (100, 200)}
        ratios = {
            "wasmlet_gcd_c100_rps / bare_starlette_c100_rps (paired bursts)": target(
                median(vs_starlette_paired),
                TARGETS["c100_vs_bare_starlette"],
                vs_starlette_paired,
            ),
            "wasmlet_gcd_c100_rps / bare_starlette_c100_rps (sequential rounds)": target(
                median(vs_starlette), TARGETS["c100_vs_bare_starlette"], vs_starlette
            ),
            "fresh_c100_rps / pooled_c100_rps": target(
                median(fresh_pairs), TARGETS["fresh_vs_pooled"], fresh_pairs
            ),
            "wasmlet_failed_requests_c100_c200": {
                "value": wasmlet_failed,
                "target": TARGETS["errors"],
                "met": all(v == 0 for v in wasmlet_failed.values()),
            },
            "other (no target)": {
                "wasmlet / bare_asgi c100 rps": median(
                    self._paired("gcd", "wasmlet", "bare-asgi", 100)
                ),
                "wasmlet / wasmtime_direct c100 rps": median(
                    self._paired("gcd", "wasmlet", "wasmtime-direct", 100)
                ),
                "wasmlet / bare_starlette c1 rps": median(
                    self._paired("gcd", "wasmlet", "bare-starlette", 1)
                ),
                "wasmtime_direct / bare_starlette c100 rps": median(
                    self._paired("gcd", "wasmtime-direct", "bare-starlette", 100)
                ),
                "hello c100 rps / gcd pooled c100 rps": ratio(
                    hello["rps_median"], fresh["pooled"]["rps_median"]
                ),
                "wrk wasmlet w2 / w1": ratio(
                    wrk["wasmlet-w2"]["rps_median"], wrk["wasmlet-w1"]["rps_median"]
                ),
                "wrk bare_starlette w2 / w1": ratio(
                    wrk["bare-starlette-w2"]["rps_median"], wrk["bare-starlette-w1"]["rps_median"]
                ),
                "wrk wasmlet / bare_starlette w1": ratio(
                    wrk["wasmlet-w1"]["rps_median"], wrk["bare-starlette-w1"]["rps_median"]
                ),
                "wrk wasmlet / bare_starlette w2": ratio(
                    wrk["wasmlet-w2"]["rps_median"], wrk["bare-starlette-w2"]["rps_median"]
                ),
            },
        }
        return {
            "gcd_hey": gcd,
            "paired_hey_c100": paired,
            "fresh_vs_pooled_hey_c100": fresh,
            "hello_hey_c100": hello,
            "wrk_t2_c100": wrk,
            "ratios": ratios,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="wasmlet HTTP load benchmark against peers")
    parser.add_argument("--quick", action="store_true", help="short runs for a smoke test")
    args = parser.parse_args(argv)
    for tool in ("hey", "wrk"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed")
    install_cleanup()
    profile = "quick" if args.quick else "full"
    bench = Bench(profile)
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
        "benchmark": "http",
        "profile": profile,
        "settings": bench.p,
        "machine": info,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "servers_started": bench.servers,
        "server_failures": bench.failures,
        "server_log_problems": bench.log_problems,
        **summary,
        "runs": bench.runs,
    }
    # A smoke test must not overwrite the recorded full-run figures.
    path = write_results("http.json" if profile == "full" else "http.quick.json", doc)
    print(f"wrote {path} in {doc['elapsed_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
