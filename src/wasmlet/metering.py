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
from bisect import bisect_left
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
CACHE_EVENTS = Counter("wasmlet_compile_cache_total", "Compiled-artifact cache lookups", ["result"])
OFFLOADS = Counter(
    "wasmlet_offloaded_calls_total",
    "Calls run on the executor rather than the event loop",
    ["function"],
)

# Which path served an invocation request: the HTTP fast lane (http_protocol.py) or ASGI.
LANES = Counter("wasmlet_http_invocations_total", "Invocation requests by serving path", ["lane"])
FAST_LANE = LANES.labels("fast")
ASGI_LANE = LANES.labels("asgi")

# This thread works through a second's records at once (thousands under load) in pure
# Python, holding the GIL. A thread that releases the GIL meanwhile (the event loop around
# each guest call and each poll) would wait up to the switch interval (5 ms) to get it back,
# stretching requests and making fast functions look slow (runtime/dispatch.py). Giving the
# GIL up every few hundred records keeps such waits to ~0.1 ms.
_YIELD_EVERY = 256
_BOUNDS = DURATION._upper_bounds[:-1]  # the finite bounds; +Inf is the last bucket


def _observe_many(histogram: Histogram, buckets: list[int], total: float) -> None:
    """What observe() of each value would do, for values already counted per bucket.
    prometheus-client has no bulk observe; this uses the two value lists observe() itself
    updates (tests/test_metering.py checks the result against observe())."""
    for index, n in enumerate(buckets):
        if n:
            histogram._buckets[index].inc(n)  # type: ignore[attr-defined]
    histogram._sum.inc(total)  # type: ignore[attr-defined]


_RECORD_FIELDS = (
    "function",
    "version",
    "started_at",
    "duration_ms",
    "status",
    "error_code",
    "error_message",
    "peak_memory",
    "fuel_used",
    "instantiated",
    "via",
    "logs",
    "http_calls",
)


class Meter:
    """Counts every invocation in metrics and keeps a record of the recent ones.

    The request path only appends a tuple to a deque. A background thread applies batches
    to the Prometheus metrics and turns them into rows once a second (and /metrics or a read
    of the records flushes this process's queue first; with several workers, the others'
    figures are at most a second old), keeping per function
    only the newest `retention` records of a batch (older ones would be pruned anyway). So
    metering costs the event loop almost nothing and stays bounded under any load.
    """

    def __init__(self, repo: Repository, *, retention: int, flush_interval: float = 1.0) -> None:
        self.repo = repo
        self.retention = retention
        self.flush_interval = flush_interval
        self._queue: deque[tuple[Any, ...]] = deque(maxlen=200_000)
        self._series: dict[str, Any] = {}
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
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
        function: str,
        version: str,
        started: float,
        duration_s: float,
        status: int,
        error_code: str | None,
        error_message: str | None,
        peak_memory: int,
        fuel_used: int | None,
        instantiated: bool,
        via: str,
        logs: str,
        http_calls: list[dict[str, Any]] | None = None,
    ) -> None:
        """The request path's whole cost of metering: one deque append."""
        self._queue.append(
            (function, version, started, duration_s, status, error_code, error_message,
             peak_memory, fuel_used, instantiated, via, logs, http_calls)
        )  # fmt: skip

    def flush(self) -> None:
        """Apply queued records to the metrics and write the recent ones to the database."""
        with self._flush_lock:
            while self._queue:
                batch: list[tuple[Any, ...]] = []
                while self._queue and len(batch) < 20_000:
                    batch.append(self._queue.popleft())
                self._count(batch)
                if not self.retention:
                    continue
                try:
                    self.repo.insert_invocations(self._rows(batch))
                except Exception:
                    log.exception("dropping %d invocation records", len(batch))

    def _count(self, batch: list[tuple[Any, ...]]) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        instantiations: dict[str, int] = {}
        # Durations per function as (bucket counts, sum), applied to the histogram once per
        # batch: observe() per record (a lock and a bucket scan each) was most of this
        # thread's cost, several microseconds per request under load.
        durations: dict[str, tuple[list[int], list[float]]] = {}
        bounds = _BOUNDS
        for i, item in enumerate(batch):
            if not i % _YIELD_EVERY:
                time.sleep(0)  # let the event loop thread have the GIL (see _YIELD_EVERY)
            function = item[0]
            key = (function, str(item[4]), item[5] or "ok")
            counts[key] = counts.get(key, 0) + 1
            found = durations.get(function)
            if found is None:
                found = durations[function] = ([0] * (len(bounds) + 1), [0.0])
            found[0][bisect_left(bounds, item[3])] += 1  # the first bound >= the value
            found[1][0] += item[3]
            if item[9]:
                instantiations[function] = instantiations.get(function, 0) + 1
        for function, (buckets, total) in durations.items():
            histogram = self._series.get(function)
            if histogram is None:
                histogram = self._series[function] = DURATION.labels(function)
            _observe_many(histogram, buckets, total[0])
        for (function, status, code), n in counts.items():
            INVOCATIONS.labels(function, status, code).inc(n)
        for function, n in instantiations.items():
            INSTANTIATIONS.labels(function).inc(n)

    def _rows(self, batch: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        kept: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        for i, item in enumerate(reversed(batch)):  # newest first: the cap keeps the newest
            if not i % _YIELD_EVERY:
                time.sleep(0)
            n = kept.get(item[0], 0)
            if n >= self.retention:
                continue
            kept[item[0]] = n + 1
            row = dict(zip(_RECORD_FIELDS, item, strict=True))
            row["started_at"] = datetime.fromtimestamp(item[2], UTC)
            row["duration_ms"] = round(item[3] * 1000, 4)
            rows.append(row)
        rows.reverse()
        return rows

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()
            now = time.monotonic()
            if now - self._last_prune > 10:
                self._last_prune = now
                try:
                    self.repo.prune_invocations(self.retention)
                except Exception:
                    log.exception("pruning invocation records failed")
