"""What the benchmarks share: starting and stopping servers, machine facts, statistics.

Every server runs in its own process group, so stopping it reaches uvicorn's worker
processes too; `Servers.stop_all` runs from `finally`, atexit and on SIGTERM/SIGINT, so a
benchmark that fails or is interrupted leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
EXAMPLES_DIR = REPO_DIR / "examples"
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process (and its workers), started in a new process group."""

    def __init__(self, label: str, cmd: list[str], port: int, log_dir: Path) -> None:
        self.label = label
        self.cmd = cmd
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{label}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_s: float | None = None
        self.data_dir: Path | None = None  # wasmlet servers: where its admin key is

    def headers(self) -> dict[str, str]:
        """The admin key wasmlet wrote on its first start, for management calls."""
        if self.data_dir is None:
            return {}
        token = (self.data_dir / "admin.key").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def start(self, timeout_s: float = 60.0) -> Server:
        log = open(self.log_path, "wb")  # noqa: SIM115  (outlives this call; closed by the child)
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO_DIR,
        )
        log.close()
        _LIVE.add(self)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        self.ready_s = time.perf_counter() - self.started_at
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # uvicorn workers may outlive the supervisor by a moment; make sure the group is gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_problems(self, limit: int = 20) -> list[str]:
        """Warning, error and traceback lines the server logged, for the results file."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        keys = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Error:")
        return [line for line in text.splitlines() if any(k in line for k in keys)][:limit]

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_LIVE: set[Server] = set()


def stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def _on_signal(signum: int, _frame: Any) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def wasmlet_server(
    log_dir: Path,
    data_dir: Path,
    *,
    workers: int = 1,
    examples: bool = True,
    port: int | None = None,
    label: str | None = None,
) -> Server:
    port = port or free_port()
    cmd = [PYTHON, "-m", "wasmlet", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    cmd += ["--workers", str(workers)]
    if examples:
        cmd.append("--examples")
    server = Server(label or f"wasmlet-w{workers}", cmd, port, log_dir)
    server.data_dir = data_dir
    return server


def peer_server(log_dir: Path, peer: str, *, workers: int = 1, args: Sequence[str] = ()) -> Server:
    """A peer from peers.py; `args` are extra options (e.g. --body-file, --plugin)."""
    port = free_port()
    cmd = [PYTHON, str(BENCH_DIR / "peers.py"), peer, "--port", str(port)]
    cmd += ["--workers", str(workers), *args]
    return Server(f"{peer}-w{workers}", cmd, port, log_dir)


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# -- facts and numbers -----------------------------------------------------------------------


def _versions(*names: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _run_text(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO_DIR)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip() or None


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = _run_text(["wrk", "-v"])
    commit = _run_text(["git", "rev-parse", "--short", "HEAD"])
    dirty = _run_text(["git", "status", "--porcelain", "--", "src"])
    # The tree may be edited while benchmarks run: name the exact source state measured.
    diff = (_run_text(["git", "diff", "HEAD", "--", "src"]) or "") + (dirty or "")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": _versions(
            "wasmlet", "wasmtime", "uvicorn", "starlette", "fastapi", "httptools", "uvloop"
        ),
        "wrk": wrk.splitlines()[0] if wrk else None,
        "hey": "hey (Debian package; no version flag)",
        "git_commit": commit,
        "src_modified": bool(dirty),
        "src_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if dirty else None,
        "loadavg_start": loadavg(),
    }


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return round(num / den, 3)


def write_results(name: str, doc: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    text = json.dumps(doc, indent=2)
    path.write_text(text + "\n")
    print(text)
    return path
