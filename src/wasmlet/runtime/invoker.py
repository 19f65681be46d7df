"""From a function name and an Invocation to an Outcome: resolve, admit, run, meter."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import wasmtime

from wasmlet.abi import Invocation, Outcome, get_abi
from wasmlet.config import Settings
from wasmlet.errors import NotFound, Overloaded, Timeout, WasmletError
from wasmlet.metering import CACHE_EVENTS, OFFLOADS, OVERLOADS, POOL_WAITS, Meter
from wasmlet.registry.blobs import BlobStore
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.repository import Repository
from wasmlet.runtime.compile_cache import CompileCache
from wasmlet.runtime.dispatch import CallStats
from wasmlet.runtime.engine import EpochTicker, build_engine, engine_fingerprint
from wasmlet.runtime.pool import CallReport, InstancePool, VersionRef
from wasmlet.spec import FunctionSpec

log = logging.getLogger(__name__)


class Runtime:
    """What one process needs to run guests: the engine, its ticker, the compile cache."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: wasmtime.Engine = build_engine(settings)
        self.ticker = EpochTicker(self.engine, settings.epoch_tick_ms)
        self.cache = CompileCache(
            settings.data_dir / "cache", self.engine, engine_fingerprint(settings)
        )
        self.executor = ThreadPoolExecutor(
            max_workers=settings.executor_threads, thread_name_prefix="wasmlet-guest"
        )
        self.ticker.start()

    def close(self) -> None:
        self.ticker.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Entry:
    pool: InstancePool
    gate: asyncio.Semaphore
    stats: CallStats
    replayable: bool


class Invoker:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        repo: Repository,
        blobs: BlobStore,
        changes: ChangeSignal,
        meter: Meter,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.repo = repo
        self.blobs = blobs
        self.changes = changes
        self.meter = meter
        self.active: dict[str, VersionRef] = {}
        self.entries: dict[str, Entry] = {}  # by version digest
        self._loading: dict[str, asyncio.Future[Entry]] = {}
        self._refresh_lock = asyncio.Lock()
        self._queue_timeout = settings.queue_timeout_ms / 1000
        self._inline_deadline = settings.inline_deadline_ms

    # -- resolving names -------------------------------------------------------------------

    async def refresh(self) -> None:
        async with self._refresh_lock:
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(self.runtime.executor, self.repo.active_versions)
            self.active = {
                name: VersionRef(
                    name=name,
                    digest=v.digest,
                    module_digest=v.module_digest,
                    spec=FunctionSpec.model_validate(v.spec),
                    functions=v.exports,
                    wasi=v.wasi,
                )
                for name, v in rows
            }
            live = {ref.digest for ref in self.active.values()}
            for digest in [d for d in self.entries if d not in live]:
                self.entries.pop(digest).pool.drain()

    async def resolve(self, name: str) -> VersionRef:
        if self.changes.changed():
            await self.refresh()
        ref = self.active.get(name)
        if ref is None:
            raise NotFound(f"function {name!r} not found")
        return ref

    async def _entry(self, ref: VersionRef) -> Entry:
        entry = self.entries.get(ref.digest)
        if entry is not None:
            return entry
        pending = self._loading.get(ref.digest)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[ref.digest] = pending
            try:
                entry = await asyncio.get_running_loop().run_in_executor(
                    self.runtime.executor, self._build_entry, ref
                )
                self.entries[ref.digest] = entry
                pending.set_result(entry)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved: waiters get it re-raised below
                raise
            finally:
                del self._loading[ref.digest]
            return entry
        return await asyncio.shield(pending)

    def _build_entry(self, ref: VersionRef) -> Entry:
        cache = self.runtime.cache
        hits = cache.hits
        module = cache.load(ref.module_digest, lambda: self.blobs.get(ref.module_digest))
        CACHE_EVENTS.labels("hit" if cache.hits > hits else "miss").inc()
        abi = get_abi(ref.spec.abi)
        pool = InstancePool(
            ref,
            abi,
            self.runtime.engine,
            module,
            self.runtime.ticker,
            fuel_metering=self.settings.fuel_metering,
            log_limit=self.settings.max_log_bytes,
            output_limit=self.settings.max_output_bytes,
        )
        # Guests of this ABIs touch nothing outside their own instance, so an
        # abandoned inline attempt can be replayed safely.
        replayable = True
        return Entry(
            pool=pool,
            gate=asyncio.Semaphore(ref.spec.pool_size),
            stats=CallStats(self.settings.inline_budget_us, inline=replayable),
            replayable=replayable,
        )

    # -- running ---------------------------------------------------------------------------

    async def invoke(self, name: str, inv: Invocation) -> Outcome:
        ref = await self.resolve(name)
        entry = await self._entry(ref)
        gate = entry.gate
        if gate.locked():
            POOL_WAITS.labels(name).inc()
            try:
                async with asyncio.timeout(self._queue_timeout):
                    await gate.acquire()
            except TimeoutError:
                OVERLOADS.labels(name).inc()
                raise Overloaded(
                    f"function {name!r} is at its concurrency limit ({ref.spec.pool_size})"
                ) from None
        else:
            await gate.acquire()
        started = time.time()
        report = CallReport()
        try:
            outcome = await self._run(entry, inv, report)
        except WasmletError as exc:
            self._record(ref, inv, started, report, exc.status, exc)
            raise
        finally:
            gate.release()
        self._record(ref, inv, started, report, outcome.status, None)
        return outcome

    async def _run(self, entry: Entry, inv: Invocation, report: CallReport) -> Outcome:
        pool, stats = entry.pool, entry.stats
        timeout_ms = pool.spec.timeout_ms
        if stats.inline:
            attempt = min(self._inline_deadline, timeout_ms)
            try:
                outcome = pool.execute(inv, report, attempt)
                stats.observe(report.duration_us)
                return outcome
            except Timeout:
                if attempt >= timeout_ms:
                    raise
                stats.demote(report.duration_us)
                log.info("%s overran the inline deadline; replaying off-loop", pool.ref.name)
            timeout_ms = max(1, timeout_ms - int(report.duration_us / 1000))
        OFFLOADS.labels(pool.ref.name).inc()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.runtime.executor, pool.execute, inv, report, timeout_ms
            )
        finally:
            stats.observe(report.duration_us)

    def _record(
        self,
        ref: VersionRef,
        inv: Invocation,
        started: float,
        report: CallReport,
        status: int,
        exc: WasmletError | None,
    ) -> None:
        self.meter.record(
            function=ref.name,
            version=ref.digest,
            started=started,
            duration_s=report.duration_us / 1e6,
            status=status,
            error_code=exc.code if exc else None,
            error_message=exc.message if exc else None,
            peak_memory=report.peak_memory,
            fuel_used=report.fuel_used,
            instantiated=report.instantiated,
            via=inv.via,
            logs=report.logs.decode("utf-8", "replace"),
        )
