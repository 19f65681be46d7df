"""Key-value quotas per namespace: at most `kv_max_keys` keys and `kv_max_bytes` bytes
(keys plus values) over all of a namespace's scopes, its functions' and its global one.

Each store is held to the quota on its own: the in-memory store (per process, evicting)
and the persistent one (shared by every process) are different places with different
lifetimes, and summing a per-process cache into a cluster-wide count would mean nothing.

Counting a namespace's keys costs a pass over them, so it is not done per write. Each
process keeps an estimate per namespace and store, recounted from the store at most every
`refresh_s` (and on the first write after that), and in between adds every admitted write
as if it created a key. The estimate therefore never falls below the truth from this
process's point of view: writes still in flight while a count runs, and writes admitted
during it, are added to the count. A write that would pass the quota by the estimate goes
ahead only if it rewrites a key that exists, in no more bytes than the quota leaves.

The bound: one process never takes a namespace past its quota (but for a key deleted by
another caller between the existence check and the rewrite). With P processes (workers,
nodes) sharing the persistent store, each can admit writes against a count up to
`refresh_s` old, so a namespace can briefly exceed its quota by at most (P - 1) times
the headroom it had at the last count; after the next count every process refuses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from wasmlet.host.kv.base import KvError, KvStore
from wasmlet.host.kv.scopes import scope_namespace

# namespace -> (max keys, max bytes); 0 = unlimited.
Limits = Callable[[str], tuple[int, int]]

_COUNTER_BYTES = 20  # the most a 64-bit decimal counter takes


class KvQuotaExceeded(KvError):
    """A write would take a namespace past its key or byte quota."""


class CountingStore(KvStore, Protocol):
    def usage(self, namespace: str) -> tuple[int, int]:
        """Live keys of the namespace's scopes, and their bytes (keys plus values)."""


@dataclass
class _Estimate:
    keys: int = 0
    bytes: int = 0
    counted_at: float = -1e18  # time.monotonic() of the last count (never: stale)
    counting: bool = False
    # Admitted writes not yet done, and writes admitted while a count runs.
    inflight_keys: int = 0
    inflight_bytes: int = 0
    window_keys: int = 0
    window_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class QuotaKv:
    """A KvStore that holds every namespace to its quota (`limits`, set by the server
    once its quotas are known; None: no quotas)."""

    def __init__(self, store: CountingStore, *, refresh_s: float = 1.0) -> None:
        self.store = store
        self.limits: Limits | None = None
        self.refresh_s = refresh_s
        self._estimates: dict[str, _Estimate] = {}
        self._lock = threading.Lock()

    # -- quota ---------------------------------------------------------------------------------

    def _estimate(self, namespace: str) -> _Estimate:
        est = self._estimates.get(namespace)
        if est is None:
            with self._lock:
                est = self._estimates.setdefault(namespace, _Estimate())
        if time.monotonic() - est.counted_at >= self.refresh_s:
            self._recount(namespace, est)
        return est

    def _recount(self, namespace: str, est: _Estimate) -> None:
        with est.lock:
            if est.counting or time.monotonic() - est.counted_at < self.refresh_s:
                return
            est.counting = True
            pending = (est.inflight_keys, est.inflight_bytes)
            est.window_keys = est.window_bytes = 0
        try:
            keys, size = self.store.usage(namespace)
        except BaseException:
            with est.lock:
                est.counting = False
            raise
        with est.lock:
            # Writes in flight when the count began may be missing from it, and writes
            # admitted since may be too: add both (counting some twice errs the safe way).
            est.keys = keys + pending[0] + est.window_keys
            est.bytes = size + pending[1] + est.window_bytes
            est.counted_at = time.monotonic()
            est.counting = False

    def _admit(self, scope: str, key: str, size: int) -> tuple[_Estimate, int, int] | None:
        """Count a write of `size` value bytes against the scope's namespace, or raise
        KvQuotaExceeded. Returns what `_done` must release (None: no quota)."""
        namespace = scope_namespace(scope)
        max_keys, max_bytes = self.limits(namespace) if self.limits is not None else (0, 0)
        if max_keys <= 0 and max_bytes <= 0:
            return None
        est = self._estimate(namespace)
        cost = len(key.encode()) + size
        with est.lock:
            fits = (max_keys <= 0 or est.keys < max_keys) and (
                max_bytes <= 0 or est.bytes + cost <= max_bytes
            )
            if fits:
                return self._take(est, 1, cost)
        # Over the estimate: only rewriting an existing key can go ahead.
        old = self.store.get(scope, key)
        if old is None:
            if max_keys > 0 and est.keys >= max_keys:
                raise KvQuotaExceeded(f"namespace {namespace!r} is at its quota of {max_keys} keys")
            raise KvQuotaExceeded(f"namespace {namespace!r} is at its quota of {max_bytes} bytes")
        grows = max(0, size - len(old))
        with est.lock:
            if max_bytes > 0 and est.bytes + grows > max_bytes:
                raise KvQuotaExceeded(
                    f"namespace {namespace!r} is at its quota of {max_bytes} bytes"
                )
            return self._take(est, 0, grows)

    @staticmethod
    def _take(est: _Estimate, keys: int, size: int) -> tuple[_Estimate, int, int]:
        """(lock held) Count an admitted write in the estimate."""
        est.keys += keys
        est.bytes += size
        est.inflight_keys += keys
        est.inflight_bytes += size
        if est.counting:
            est.window_keys += keys
            est.window_bytes += size
        return est, keys, size

    @staticmethod
    def _done(ticket: tuple[_Estimate, int, int] | None) -> None:
        if ticket is not None:
            est, keys, size = ticket
            with est.lock:
                est.inflight_keys -= keys
                est.inflight_bytes -= size

    # -- KvStore -------------------------------------------------------------------------------

    def get(self, scope: str, key: str) -> bytes | None:
        return self.store.get(scope, key)

    def set(
        self,
        scope: str,
        key: str,
        value: bytes,
        ttl_ms: int | None = None,
        *,
        only_if_absent: bool = False,
    ) -> bool:
        ticket = self._admit(scope, key, len(value))
        try:
            return self.store.set(scope, key, value, ttl_ms, only_if_absent=only_if_absent)
        finally:
            self._done(ticket)

    def delete(self, scope: str, key: str) -> bool:
        return self.store.delete(scope, key)

    def keys(self, scope: str, pattern: str = "*", limit: int = 1000) -> list[str]:
        return self.store.keys(scope, pattern, limit)

    def incr(self, scope: str, key: str, delta: int) -> int:
        ticket = self._admit(scope, key, _COUNTER_BYTES)
        try:
            return self.store.incr(scope, key, delta)
        finally:
            self._done(ticket)

    def pttl(self, scope: str, key: str) -> int:
        return self.store.pttl(scope, key)

    def expire(self, scope: str, key: str, ttl_ms: int) -> bool:
        return self.store.expire(scope, key, ttl_ms)

    def drop_scope(self, scope: str) -> int:
        return self.store.drop_scope(scope)

    def usage(self, namespace: str) -> tuple[int, int]:
        return self.store.usage(namespace)

    def close(self) -> None:
        self.store.close()
