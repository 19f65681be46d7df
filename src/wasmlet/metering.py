"""Invocation records and Prometheus metrics.

Records are queued in memory and written in batches by one background thread, so the
request path never waits on the database; a batch is one transaction, however many calls
it holds. Metrics are process-local, or aggregated across workers through
prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import asyncio
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

# A thread other than the event loop's (flush() from a request handler or at exit) works
# through up to a second's records at once in pure Python, holding the GIL; the event loop
# would wait up to the switch interval (5 ms) to get it back after each guest call. Giving
# the GIL up every few hundred records keeps such waits to ~0.1 ms.
_YIELD_EVERY = 256
# Records counted per slice on the event loop (~1 ms of work).
_SLICE = 2000
_BOUNDS = DURATION._upper_bounds[:-1]  # the finite bounds; +Inf is the last bucket


def _observe_many(histogram: Histogram, buckets: list[int], total: float) -> None:
    """What observe() of each value would do, for values already counted per bucket.
    prometheus-client has no bulk observe; this uses the two value lists observe() itself
    updates (tests/test_metering.py checks the result against observe())."""
    for index, n in enumerate(buckets):
        if n:
            histogram._buckets[index].inc(n)
    histogram._sum.inc(total)


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

    The request path only appends a tuple to a deque. Once a second the queued records are
    applied to the Prometheus metrics and the newest `retention` per function of them turned
    into rows (older ones would be pruned anyway), and a background thread writes the rows.
    /metrics and record reads flush this process's queue first; with several workers, the
    others' figures are at most a second old.

    In the server the counting runs on the event loop (`attach`), in slices: done by the
    thread, it competed with the event loop for the GIL, and every guest call (which
    releases it) could then wait for it; under steady load that cost the request path far
    more than the counting itself (a third of its throughput in the second after a burst).
    The thread keeps the database work, most of which runs in SQLite without the GIL.
    """

    def __init__(self, repo: Repository, *, retention: int, flush_interval: float = 1.0) -> None:
        self.repo = repo
        self.retention = retention
        self.flush_interval = flush_interval
        self._queue: deque[tuple[Any, ...]] = deque(maxlen=200_000)
        self._series: dict[str, Any] = {}
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        # The newest `retention` records of each function counted since the last rows were
        # made (shared by the event loop's slices and flush(), under _recent_lock).
        self._recent: dict[str, deque[tuple[int, tuple[Any, ...]]]] = {}
        self._seq = 0
        self._recent_lock = threading.Lock()
        self._rows_out: deque[list[dict[str, Any]]] = deque()  # counted, to be written
        self._write_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._run, name="wasmlet-meter", daemon=True)
        self._last_prune = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.detach()
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count queued records on `loop` (call from it) from now on."""
        self._loop = loop
        self._tick_handle = loop.call_later(self.flush_interval, self._tick)

    def detach(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self._loop = None

    def _tick(self) -> None:
        """On the event loop: count a slice of the queue; the rest in later iterations."""
        loop = self._loop
        if loop is None:
            return
        batch = self._take(_SLICE)
        with self._recent_lock:
            if batch:
                self._absorb(batch, yield_gil=False)
            more = len(self._queue) >= _SLICE
            if not more:
                self._seal()
        # More: go on after the I/O that is waiting; else in a second.
        self._tick_handle = loop.call_later(0 if more else self.flush_interval, self._tick)

    def _absorb(self, batch: list[tuple[Any, ...]], *, yield_gil: bool) -> None:
        """Count `batch` and remember its newest records per function (_recent_lock held)."""
        self._count(batch, yield_gil)
        if not self.retention:
            return
        recent = self._recent
        seq = self._seq
        for item in batch:
            kept = recent.get(item[0])
            if kept is None:
                kept = recent[item[0]] = deque(maxlen=self.retention)
            seq += 1
            kept.append((seq, item))  # seq: rows are written in the order calls ended
        self._seq = seq

    def _seal(self) -> None:
        """Queue the remembered records as rows for the writer, oldest first."""
        if not self._recent:
            return
        items = sorted(entry for kept in self._recent.values() for entry in kept)
        self._recent = {}
        self._rows_out.append(self._rows([item for _, item in items]))

    def _take(self, limit: int) -> list[tuple[Any, ...]]:
        queue = self._queue
        batch: list[tuple[Any, ...]] = []
        while queue and len(batch) < limit:
            batch.append(queue.popleft())
        return batch

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
        """Apply queued records to the metrics and write the recent ones to the database
        (from any thread; the event loop's own slices never wait for the database)."""
        with self._flush_lock, self._recent_lock:
            while self._queue:
                self._absorb(self._take(20_000), yield_gil=True)
            self._seal()
        self._write()

    def _write(self) -> None:
        """Write the counted rows, oldest batch first, one writer at a time."""
        with self._write_lock:
            while self._rows_out:
                rows = self._rows_out.popleft()
                try:
                    self.repo.insert_invocations(rows)
                except Exception:
                    log.exception("dropping %d invocation records", len(rows))

    def _count(self, batch: list[tuple[Any, ...]], yield_gil: bool = True) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        instantiations: dict[str, int] = {}
        # Durations per function as (bucket counts, sum), applied to the histogram once per
        # batch: observe() per record (a lock and a bucket scan each) was most of this
        # thread's cost, several microseconds per request under load.
        durations: dict[str, tuple[list[int], list[float]]] = {}
        bounds = _BOUNDS
        for i, item in enumerate(batch):
            if yield_gil and not i % _YIELD_EVERY:
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

    @staticmethod
    def _rows(items: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for item in items:
            row = dict(zip(_RECORD_FIELDS, item, strict=True))
            row["started_at"] = datetime.fromtimestamp(item[2], UTC)
            row["duration_ms"] = round(item[3] * 1000, 4)
            rows.append(row)
        return rows

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            if self._loop is None:
                self.flush()
            else:
                self._write()
            now = time.monotonic()
            if now - self._last_prune > 10:
                self._last_prune = now
                try:
                    self.repo.prune_invocations(self.retention)
                except Exception:
                    log.exception("pruning invocation records failed")
