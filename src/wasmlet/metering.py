"""Invocation records and Prometheus metrics.

Records are queued in memory and written in batches by one background thread, so the
request path never waits on the database; a batch is one transaction, however many calls
it holds. Metrics are process-local, or aggregated across workers through
prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from wasmlet.registry.repository import Repository

log = logging.getLogger(__name__)

INVOCATIONS = Counter(
    "wasmlet_invocations_total", "Function invocations", ["function", "status", "code"]
)
DURATION = Histogram(
    "wasmlet_invocation_seconds",
    "Time spent running a function (instantiation included)",
    ["function"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
)
INSTANTIATIONS = Counter("wasmlet_instantiations_total", "Instances created", ["function"])
POOL_WAITS = Counter(
    "wasmlet_pool_waits_total", "Requests that waited for a free instance slot", ["function"]
)
OVERLOADS = Counter(
    "wasmlet_overloaded_total", "Requests refused because a pool stayed full", ["function"]
)
CACHE_EVENTS = Counter(
    "wasmlet_compile_cache_total", "Compiled-artifact cache lookups", ["result"]
)
OFFLOADS = Counter(
    "wasmlet_offloaded_calls_total", "Calls run on the executor rather than the event loop",
    ["function"],
)


class Meter:
    def __init__(self, repo: Repository, *, retention: int, flush_interval: float = 0.2) -> None:
        self.repo = repo
        self.retention = retention
        self.flush_interval = flush_interval
        self._queue: deque[dict[str, Any]] = deque(maxlen=100_000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wasmlet-meter", daemon=True)
        self._last_prune = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()

    def record(
        self,
        *,
        function: str,
        version: str,
        started: float,
        duration_s: float,
        status: int,
        error_code: str | None = None,
        error_message: str | None = None,
        peak_memory: int = 0,
        fuel_used: int | None = None,
        instantiated: bool = False,
        via: str = "api",
        logs: str = "",
    ) -> None:
        INVOCATIONS.labels(function, str(status), error_code or "ok").inc()
        DURATION.labels(function).observe(duration_s)
        if instantiated:
            INSTANTIATIONS.labels(function).inc()
        if self.retention == 0:
            return
        self._queue.append(
            {
                "function": function,
                "version": version,
                "started_at": datetime.fromtimestamp(started, UTC),
                "duration_ms": round(duration_s * 1000, 4),
                "status": status,
                "error_code": error_code,
                "error_message": error_message,
                "peak_memory": peak_memory,
                "fuel_used": fuel_used,
                "instantiated": instantiated,
                "via": via,
                "logs": logs,
            }
        )

    def flush(self) -> None:
        batch: list[dict[str, Any]] = []
        while self._queue and len(batch) < 5000:
            batch.append(self._queue.popleft())
        if batch:
            try:
                self.repo.insert_invocations(batch)
            except Exception:
                log.exception("dropping %d invocation records", len(batch))

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            while self._queue:
                self.flush()
            now = time.monotonic()
            if now - self._last_prune > 10:
                self._last_prune = now
                try:
                    self.repo.prune_invocations(self.retention)
                except Exception:
                    log.exception("pruning invocation records failed")
