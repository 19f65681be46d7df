"""Meter: records queued on the request path, written and counted in batches."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from wasmlet.metering import Meter
from wasmlet.registry.db import make_engine, make_sessionmaker, upgrade
from wasmlet.registry.repository import Repository

VERSION = "sha256:" + "ab" * 32


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    engine = make_engine(f"sqlite:///{tmp_path / 'wasmlet.db'}")
    upgrade(engine)
    try:
        yield Repository(make_sessionmaker(engine))
    finally:
        engine.dispose()


def unique() -> str:
    """Prometheus metrics are process-wide: each test counts under its own names."""
    return f"m-{uuid.uuid4().hex[:8]}"


def record(
    meter: Meter,
    name: str,
    i: int = 0,
    *,
    status: int = 200,
    code: str | None = None,
    instantiated: bool = False,
    duration: float = 0.0123456,
) -> None:
    meter.record(
        name, VERSION, 1_700_000_000 + i, duration, status, code,
        "boom" if code else None, 65536 * (i + 1), 100 + i, instantiated, "api", f"#{i}",
    )  # fmt: skip


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_record_then_flush_writes_rows(repo: Repository) -> None:
    meter = Meter(repo, retention=100)
    name = unique()
    record(meter, name, 0, instantiated=True)
    record(meter, name, 1, status=500, code="guest_trap")
    assert repo.invocations(name) == []  # nothing written until a flush
    meter.flush()
    rows = repo.invocations(name)
    assert [r.logs for r in rows] == ["#1", "#0"]
    trap, ok = rows
    assert (trap.status, trap.error_code, trap.error_message) == (500, "guest_trap", "boom")
    assert (ok.status, ok.error_code, ok.error_message) == (200, None, None)
    assert ok.version == VERSION
    assert ok.started_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert ok.duration_ms == 12.3456
    assert ok.peak_memory == 65536
    assert ok.fuel_used == 100
    assert ok.instantiated is True and trap.instantiated is False
    assert ok.via == "api"
    meter.flush()  # an empty queue writes nothing more
    assert len(repo.invocations(name)) == 2


def test_keeps_only_the_newest_per_function_per_batch(repo: Repository) -> None:
    meter = Meter(repo, retention=3)
    busy, quiet = unique(), unique()
    for i in range(10):
        record(meter, busy, i)
        if i == 4:
            record(meter, quiet, i)
    meter.flush()
    assert [r.logs for r in repo.invocations(busy)] == ["#9", "#8", "#7"]
    assert [r.logs for r in repo.invocations(quiet)] == ["#4"]


def test_zero_retention_writes_nothing_but_counts(repo: Repository) -> None:
    meter = Meter(repo, retention=0)
    name = unique()
    record(meter, name)
    meter.flush()
    assert repo.invocations(name) == []
    assert sample("wasmlet_invocations_total", function=name, status="200", code="ok") == 1


def test_prometheus_counters_increase_after_flush(repo: Repository) -> None:
    meter = Meter(repo, retention=10)
    name = unique()
    for i in range(4):
        record(meter, name, i, instantiated=i == 0, duration=0.002)
    record(meter, name, 9, status=504, code="timeout", duration=2.0)
    ok = {"function": name, "status": "200", "code": "ok"}
    assert sample("wasmlet_invocations_total", **ok) == 0
    meter.flush()
    assert sample("wasmlet_invocations_total", **ok) == 4
    assert sample("wasmlet_invocations_total", function=name, status="504", code="timeout") == 1
    assert sample("wasmlet_instantiations_total", function=name) == 1
    assert sample("wasmlet_invocation_seconds_count", function=name) == 5
    assert sample("wasmlet_invocation_seconds_sum", function=name) == pytest.approx(2.008)
    assert sample("wasmlet_invocation_seconds_bucket", function=name, le="0.0025") == 4
    assert sample("wasmlet_invocation_seconds_bucket", function=name, le="5.0") == 5
    record(meter, name, 10)
    meter.flush()
    assert sample("wasmlet_invocations_total", **ok) == 5


def test_database_failure_drops_the_batch_but_keeps_counting(
    repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    meter = Meter(repo, retention=10)
    name = unique()

    def broken(_rows) -> None:
        raise RuntimeError("database down")

    repo.insert_invocations = broken  # type: ignore[method-assign]
    record(meter, name)
    meter.flush()  # does not raise: the request path never sees database trouble
    assert "dropping 1 invocation records" in caplog.text
    assert sample("wasmlet_invocations_total", function=name, status="200", code="ok") == 1


def test_background_thread_flushes_prunes_and_stop_drains(repo: Repository) -> None:
    name = unique()
    seed = Meter(repo, retention=100)
    for i in range(6):
        record(seed, name, i)
    seed.flush()
    meter = Meter(repo, retention=2, flush_interval=0.02)
    meter.start()
    try:
        record(meter, name, 50)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            logs = [r.logs for r in repo.invocations(name)]
            if logs == ["#50", "#5"]:
                break
            time.sleep(0.02)
        assert logs == ["#50", "#5"]  # written by the thread, then pruned to the newest 2
    finally:
        meter.stop()
    record(meter, name, 60)
    meter.stop()  # stopping again still flushes what is queued
    assert [r.logs for r in repo.invocations(name)][:1] == ["#60"]


def test_batched_durations_fill_the_histogram_as_observe_would(repo: Repository) -> None:
    """Durations are counted per bucket and applied once per batch: the exposed histogram
    must be exactly what one observe() per call would have made, bounds included."""
    from prometheus_client import CollectorRegistry, Histogram

    from wasmlet.metering import DURATION

    reference = Histogram(
        "reference_seconds", "", buckets=DURATION._upper_bounds, registry=CollectorRegistry()
    )
    meter = Meter(repo, retention=0)
    name = unique()
    durations = [0.0, 0.00005, 0.00005001, 0.0003, 0.001, 0.004, 0.05, 0.7, 5.0, 9.5, 1e-9]
    for i, duration in enumerate(durations * 3):
        record(meter, name, i, duration=duration)
        reference.observe(duration)
    meter.flush()
    for bound in [*DURATION._upper_bounds[:-1], float("inf")]:
        le = "+Inf" if bound == float("inf") else str(float(bound))
        mine = sample("wasmlet_invocation_seconds_bucket", function=name, le=le)
        theirs = reference.collect()[0]
        expected = next(
            s.value for s in theirs.samples if s.name.endswith("_bucket") and s.labels["le"] == le
        )
        assert mine == expected, (le, mine, expected)
    assert sample("wasmlet_invocation_seconds_count", function=name) == len(durations) * 3
    assert sample("wasmlet_invocation_seconds_sum", function=name) == pytest.approx(
        sum(durations) * 3
    )


def test_attached_to_a_loop_it_counts_there_and_the_thread_writes(repo: Repository) -> None:
    """In the server the loop counts in slices and the thread writes the newest records of
    each function, in the order the calls ended, with nobody calling flush()."""
    import asyncio

    from wasmlet import metering

    meter = Meter(repo, retention=4, flush_interval=0.05)
    busy, quiet = unique(), unique()
    meter.start()

    async def main() -> None:
        meter.attach(asyncio.get_running_loop())
        for i in range(metering._SLICE + 500):  # more than one slice
            record(meter, busy, i)
            if i == 7:
                record(meter, quiet, i)
        newest = f"#{metering._SLICE + 500 - 1}"  # wait for the last slice, not the first
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and newest not in (
            r.logs for r in repo.invocations(busy)
        ):
            await asyncio.sleep(0.05)

    try:
        asyncio.run(main())
        total = metering._SLICE + 500
        assert sample("wasmlet_invocations_total", function=busy, status="200", code="ok") == total
        written = [r.logs for r in repo.invocations(busy)]
        # Each slice keeps its newest `retention` (pruning trims the rest later).
        assert written[:4] == [f"#{total - 1 - k}" for k in range(4)]
        assert len(written) <= 8 and len(set(written)) == len(written)
        assert [r.logs for r in repo.invocations(quiet)] == ["#7"]
    finally:
        meter.stop()
    assert [r.logs for r in repo.invocations(busy)] == written  # stop() wrote nothing twice
