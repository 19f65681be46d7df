"""From a function name and an Invocation to an Outcome: resolve, admit, run, meter."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

import wasmtime

from wasmlet.abi import ABIS, Invocation, Outcome, get_abi
from wasmlet.config import Settings
from wasmlet.errors import NotFound, Overloaded, Timeout, WasmletError
from wasmlet.host.context import HostContext, HostError
from wasmlet.host.secrets import redact, redact_all
from wasmlet.host.services import HostServices
from wasmlet.metering import CACHE_EVENTS, OFFLOADS, OVERLOADS, POOL_WAITS, Meter
from wasmlet.names import namespace_of, split
from wasmlet.pending import Pending
from wasmlet.registry.blobs import BlobStore
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.repository import Repository
from wasmlet.runtime.compile_cache import CompileCache
from wasmlet.runtime.dispatch import CallStats
from wasmlet.runtime.engine import EpochTicker, build_engine, engine_fingerprint
from wasmlet.runtime.gate import Gate
from wasmlet.runtime.pool import CallReport, InlineOverrun, InstancePool, VersionRef
from wasmlet.spec import FunctionSpec, clamp

log = logging.getLogger(__name__)

# Inline calls whose recent average is under this may go ahead of callers waiting for the
# function's pool: each delays them by no more than this.
_AHEAD_US = 100


class Runtime:
    """What one process needs to run guests: the engine, its ticker, the compile cache."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: wasmtime.Engine = build_engine(settings)
        self.ticker = EpochTicker(
            self.engine, settings.epoch_tick_ms, always=not settings.fuel_metering
        )
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
    gate: Gate
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
        services: HostServices | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        if services is not None:
            services.call = self.call_nested
        self.runtime = runtime
        self.repo = repo
        self.blobs = blobs
        self.changes = changes
        self.meter = meter
        # A qualified name's spec ceilings (auth/quotas.py `spec_ceilings`); None: none.
        self.ceilings: Callable[[str], Mapping[str, int]] | None = None
        self.active: dict[str, VersionRef] = {}
        # By (name, function id, version digest): two functions deploying the same bytes and
        # spec share a version digest but not a pool (a guest sees its own function's name),
        # and a function deleted and deployed again under its name starts afresh.
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self._refreshing: asyncio.Future[None] | None = None
        self._loading: dict[tuple[str, str, str], asyncio.Future[Entry]] = {}
        self._refresh_lock = asyncio.Lock()
        self._nested_build = threading.Lock()
        self._queue_timeout = settings.queue_timeout_ms / 1000
        # Compute slots (config.compute_slots): calls that only compute share these, so the
        # event loop keeps a core however many long calls arrive; calls that wait on I/O
        # (capabilities) do not take one.
        slots = settings.compute_slots
        if slots < 0:
            slots = max(1, (os.cpu_count() or 2) - 1)
        self._compute = Gate(slots) if slots else None
        # Without fuel metering inline calls are bounded by the (always running) ticker.
        self._inline_fuel = settings.inline_fuel if settings.fuel_metering else None

    def close(self) -> None:
        for entry in self.entries.values():
            entry.pool.drain()
        self.entries.clear()

    # -- resolving names -------------------------------------------------------------------

    def _active_refs(self) -> dict[str, VersionRef]:
        """Every active version, its limits held to its namespace's ceilings as they are
        now: a version stored before a ceiling was lowered is not trusted (off the loop:
        the ceilings may be read from the database)."""
        ceilings = self.ceilings
        return {
            name: VersionRef(
                name=name,
                digest=v.digest,
                module_digest=v.module_digest,
                spec=clamp(FunctionSpec.model_validate(v.spec), ceilings(name))
                if ceilings is not None
                else FunctionSpec.model_validate(v.spec),
                functions=v.exports,
                wasi=v.wasi,
                function_id=fid,
            )
            for name, fid, v in self.repo.active_versions()
        }

    async def refresh(self) -> None:
        async with self._refresh_lock:
            loop = asyncio.get_running_loop()
            active = await loop.run_in_executor(self.runtime.executor, self._active_refs)
            previous = self.active
            self.active = active
            gone = {(r.name, r.function_id) for r in previous.values()} - {
                (r.name, r.function_id) for r in self.active.values()
            }
            for name, function_id in gone:
                for abi in ABIS.values():
                    abi.forget(name, function_id)
                if self.services is not None:  # this process's in-memory keys of it
                    self.services.kv_memory.drop_scope(f"fn:{name}")
            live = {(ref.name, ref.function_id, ref.digest) for ref in self.active.values()}
            # A pool built with other limits (its namespace's ceilings changed) goes too.
            stale = [
                key
                for key, entry in self.entries.items()
                if key not in live or entry.pool.spec != active[key[0]].spec
            ]
            for key in stale:
                self.entries.pop(key).pool.drain()

    async def sync(self) -> None:
        """Make sure the name table reflects every registry change signalled so far.

        The first request to see a change starts the reload; every request arriving while
        it runs waits for the same reload, so none is answered from the old table.
        """
        reloading = self._reloading()
        if reloading is not None:
            await asyncio.shield(reloading)

    def _reloading(self) -> asyncio.Future[None] | None:
        if self.changes.changed():
            self._refreshing = asyncio.ensure_future(self.refresh())
        pending = self._refreshing
        return pending if pending is not None and not pending.done() else None

    async def resolve(self, name: str) -> VersionRef:
        await self.sync()
        return self.resolve_now(name)

    def resolve_now(self, name: str) -> VersionRef:
        """The active version of `name`; Pending while the name table is being reloaded."""
        reloading = self._reloading()
        if reloading is not None:
            raise Pending(partial(asyncio.shield, reloading))
        ref = self.active.get(name)
        if ref is None:
            raise NotFound(f"function {name!r} not found")
        return ref

    async def _entry(self, ref: VersionRef) -> Entry:
        key = (ref.name, ref.function_id, ref.digest)
        entry = self.entries.get(key)
        if entry is not None:
            return entry
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            try:
                entry = await asyncio.get_running_loop().run_in_executor(
                    self.runtime.executor, self._build_entry, ref
                )
                self.entries[key] = entry
                pending.set_result(entry)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # mark retrieved: waiters get it re-raised below
                raise
            finally:
                del self._loading[key]
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
            files_dir=self.settings.data_dir / "files" / ref.name,
            extras={
                name: cache.load(digest, partial(self.blobs.get, digest))
                for name, digest in ref.spec.modules.items()
            },
            services=self.services,
        )
        replayable = abi.replayable(ref.spec)
        return Entry(
            pool=pool,
            gate=Gate(ref.spec.pool_size),
            stats=CallStats(
                self.settings.inline_budget_us,
                inline=replayable and self.settings.fuel_metering,
            ),
            replayable=replayable,
        )

    # -- running ---------------------------------------------------------------------------

    async def invoke(self, name: str, inv: Invocation, ref: VersionRef | None = None) -> Outcome:
        """Run `name`; `ref` is its version when the caller has just resolved it."""
        if ref is None:
            await self.sync()
            ref = self.active.get(name)
            if ref is None:
                raise NotFound(f"function {name!r} not found")
        entry = self.entries.get((name, ref.function_id, ref.digest)) or await self._entry(ref)
        gate = entry.gate
        if not gate.try_enter():
            POOL_WAITS.labels(name).inc()
            try:
                await gate.enter(self._queue_timeout)
            except TimeoutError:
                OVERLOADS.labels(name).inc()
                raise Overloaded(
                    f"function {name!r} is at its concurrency limit ({ref.spec.pool_size})"
                ) from None
        started = time.time()
        report = CallReport()
        try:
            inline = entry.stats.inline and entry.pool.inline_ok
            outcome = self._run_inline(entry, inv, report) if inline else None
            if outcome is None:
                outcome = await self._offload(entry, inv, report)
        except Exception as exc:
            self._fail(ref, inv, started, report, exc)
        finally:
            gate.leave()
        self._record(ref, inv, started, report, outcome.status, None)
        return outcome

    def invoke_now(self, name: str, inv: Invocation, ref: VersionRef) -> Outcome | None:
        """`invoke` for a call that can finish without waiting: its pool is built, has a
        free place and runs it inline. None when it cannot; then nothing was recorded and
        nothing the guest did survives (an inline attempt that overran was abandoned with
        its instance), so the caller goes on with `invoke`, which replays it off-loop."""
        entry = self.entries.get((name, ref.function_id, ref.digest))
        if entry is None or not (entry.stats.inline and entry.pool.inline_ok):
            return None
        gate = entry.gate
        # An inline call is over before any waiter of the gate runs; a short one may use a
        # place handed to a waiter meanwhile (runtime/gate.py).
        place = gate.borrow(entry.stats.ewma_us < _AHEAD_US)
        if not place:
            return None
        started = time.time()
        report = CallReport()
        try:
            outcome = self._run_inline(entry, inv, report)
        except Exception as exc:
            self._fail(ref, inv, started, report, exc)
        finally:
            gate.give_back(place)
        if outcome is not None:
            self._record(ref, inv, started, report, outcome.status, None)
        return outcome

    def _fail(
        self, ref: VersionRef, inv: Invocation, started: float, report: CallReport, exc: Exception
    ) -> NoReturn:
        """Record a failed call and raise its error (a host-side bug becomes a 500
        contained to this call, its trace logged)."""
        if isinstance(exc, WasmletError):
            self._record(ref, inv, started, report, exc.status, exc)  # redacts exc
            raise exc
        trace = redact("".join(traceback.format_exception(exc)), self._secrets_of(ref.name))
        log.error("invocation of %s failed inside the host\n%s", ref.name, trace)
        error = WasmletError(f"internal error: {exc.__class__.__name__}: {exc}")
        self._record(ref, inv, started, report, error.status, error)  # redacts error
        raise error from None

    def _run_inline(self, entry: Entry, inv: Invocation, report: CallReport) -> Outcome | None:
        """Run on the event loop thread; None means "overran its fuel cap, replay off-loop"."""
        try:
            outcome = entry.pool.execute(inv, report, fuel_cap=self._inline_fuel)
        except InlineOverrun:
            entry.stats.demote(report.cpu_us)
            log.info("%s overran the inline budget; replaying off-loop", entry.pool.ref.name)
            return None
        except Timeout:  # never again on the event loop
            entry.stats.demote(report.cpu_us)
            raise
        entry.stats.observe(report.cpu_us)
        return outcome

    async def _offload(self, entry: Entry, inv: Invocation, report: CallReport) -> Outcome:
        pool, stats = entry.pool, entry.stats
        timeout_ms = max(1, pool.spec.timeout_ms - int(report.duration_us / 1000))
        OFFLOADS.labels(pool.ref.name).inc()
        compute = self._compute if entry.replayable else None
        if compute is not None and not compute.try_enter():
            try:
                await compute.enter(self._queue_timeout)
            except TimeoutError:
                OVERLOADS.labels(pool.ref.name).inc()
                raise Overloaded("every compute slot stayed busy; try again") from None
        ticker = self.runtime.ticker
        ticker.hold()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.runtime.executor,
                partial(pool.execute, inv, report, timeout_ms, offloaded=True),
            )
        finally:
            ticker.release()
            if compute is not None:
                compute.leave()
            stats.observe(report.cpu_us)

    # -- function-to-function calls ------------------------------------------------------

    def call_nested(self, caller: HostContext, name: str, payload: bytes) -> bytes:
        """Run `name` for a guest that called it (host/calls.py), on the caller's thread.

        The caller holds an executor thread (functions with capabilities never run on the
        event loop), so the callee runs right here, in an instance of its own, with its
        own limits cut to the time the caller has left. Nested calls bypass the callee's
        admission gate (an asyncio object, not for threads); depth and per-invocation
        call limits bound them instead.
        """
        # `name` is qualified by host/calls.py with the caller's namespace; check it again
        # here, the last step before the name table, so no path reaches another tenant.
        shown = split(name)[1]
        ref = self.active.get(name) if namespace_of(name) == namespace_of(caller.function) else None
        if ref is None:
            raise HostError(f"call: function {shown!r} not found")
        key = (name, ref.function_id, ref.digest)
        entry = self.entries.get(key)
        if entry is None:
            with self._nested_build:
                entry = self.entries.get(key)
                if entry is None:
                    entry = self.entries[key] = self._build_entry(ref)
        left_ms = int(caller.remaining() * 1000)
        if left_ms < 1:
            raise HostError(f"call: no time left to call {shown!r}")
        inv = Invocation(body=payload, via="call", chain=(*caller.chain, caller.function))
        report = CallReport()
        started = time.time()
        timeout_ms = min(ref.spec.timeout_ms, left_ms)
        try:
            outcome = entry.pool.execute(inv, report, timeout_ms, offloaded=True)
        except WasmletError as exc:
            self._record(ref, inv, started, report, exc.status, exc)  # redacts exc
            raise HostError(f"call to {shown!r} failed: {exc.code}: {exc.message}") from None
        self._record(ref, inv, started, report, outcome.status, None)
        if outcome.status >= 400:
            raise HostError(f"call to {shown!r} answered status {outcome.status}")
        return outcome.body

    # -- records -----------------------------------------------------------------------------

    def _secrets_of(self, name: str) -> list[str]:
        source = self.services.secrets if self.services is not None else None
        if source is None:
            return []
        try:
            return source.values(name)
        except Exception:  # an undecryptable secret cannot leak either
            return []

    def _record(
        self,
        ref: VersionRef,
        inv: Invocation,
        started: float,
        report: CallReport,
        status: int,
        exc: WasmletError | None,
    ) -> None:
        """Every invocation record is written through here, so every text in it (error
        message, logs, each outbound request's host, address and error) is redacted of the
        function's secrets in this one place. The error is redacted in place: it is what
        the caller is answered next (a guest's message may quote its secrets)."""
        logs = report.logs.decode("utf-8", "replace") if report.logs else ""
        http_calls = report.http_calls
        if logs or exc is not None or http_calls:
            secrets = self._secrets_of(ref.name)
            if secrets:
                logs = redact(logs, secrets)
                if exc is not None:
                    exc.message = redact(exc.message, secrets)
                    exc.args = (exc.message,)
                http_calls = redact_all(http_calls, secrets) if http_calls else http_calls
        self.meter.record(
            ref.name,
            ref.digest,
            started,
            report.duration_us / 1e6,
            status,
            exc.code if exc else None,
            exc.message if exc else None,
            report.peak_memory,
            report.fuel_used,
            report.instantiated,
            inv.via,
            logs,
            http_calls,
        )
