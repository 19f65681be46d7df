"""Quotas per namespace: request rate (token bucket), concurrent invocations, number of
functions and total module bytes.

Rate and concurrency are enforced per server process (each worker holds its own buckets,
so with N workers a namespace can reach N times its rate: set quotas per worker). Counts
of functions and bytes are checked against the database at deploy. The `default`
namespace (the operator's) is unlimited unless a quota row says otherwise; other
namespaces get the server's `quota_*` settings unless a row overrides them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from wasmlet.config import Settings
from wasmlet.errors import QuotaExceeded, RateLimited
from wasmlet.names import DEFAULT_NAMESPACE, namespace_of
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.models import NamespaceQuota


@dataclass(frozen=True, slots=True)
class Quota:
    """What a namespace may use. Every number: 0 = unlimited."""

    requests_per_second: float = 0.0
    burst: int = 0
    max_concurrency: int = 0
    max_functions: int = 0
    max_module_bytes: int = 0
    # Ceilings on the limits a function spec may ask for.
    max_memory_mb: int = 0
    max_timeout_ms: int = 0
    max_fuel: int = 0
    max_pool_size: int = 0
    # Key-value keys and bytes of the whole namespace (function and global scopes).
    kv_max_keys: int = 0
    kv_max_bytes: int = 0
    # Outbound HTTP destinations allowed besides public addresses (CIDRs, host names);
    # None: the node's `egress_allow` setting.
    egress_allow: tuple[str, ...] | None = None


UNLIMITED = Quota()


def ceilings_of(quota: Quota) -> dict[str, int]:
    """The spec ceilings of a quota, by spec field (spec.py `check_limits`)."""
    return {
        "memory_mb": quota.max_memory_mb,
        "timeout_ms": quota.max_timeout_ms,
        "fuel": quota.max_fuel,
        "pool_size": quota.max_pool_size,
    }


_NUMBERS = (
    "requests_per_second",
    "burst",
    "max_concurrency",
    "max_functions",
    "max_module_bytes",
    "max_memory_mb",
    "max_timeout_ms",
    "max_fuel",
    "max_pool_size",
    "kv_max_keys",
    "kv_max_bytes",
)


def parse_egress(text: str | None) -> tuple[str, ...] | None:
    """A stored comma-separated egress list; None stays None (use the node's)."""
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; one token per request."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Limiter:
    """This process's buckets and in-flight counts, and the quotas they enforce."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session] | None) -> None:
        self.settings = settings
        self.sessions = sessions
        self.changes = ChangeSignal(settings.data_dir)
        self._generation = -1
        self._quotas: dict[str, Quota] = {}
        self._overrides: dict[str, NamespaceQuota] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    def default_quota(self, namespace: str) -> Quota:
        if namespace == DEFAULT_NAMESPACE:
            return UNLIMITED
        s = self.settings
        quota = Quota(**{field: getattr(s, f"quota_{field}") for field in _NUMBERS})
        return UNLIMITED if quota == UNLIMITED else quota

    def stale(self) -> bool:
        """Quotas may have changed since they were read: call `reload` (off the loop)."""
        return self.changes.generation != self._generation

    def reload(self) -> None:
        self._reload_if_changed()

    def quota(self, namespace: str) -> Quota:
        """A namespace's quota; reads the database if quotas changed (see `stale`)."""
        self._reload_if_changed()
        found = self._quotas.get(namespace)
        if found is None:
            base = self.default_quota(namespace)
            row = self._overrides.get(namespace)
            if row is not None:
                base = _override(base, row)
            found = self._quotas[namespace] = base
        return found

    def _reload_if_changed(self) -> None:
        generation = self.changes.generation
        if generation == self._generation:
            return
        rows: dict[str, NamespaceQuota] = {}
        if self.sessions is not None:
            with self.sessions() as s:
                for row in s.scalars(select(NamespaceQuota)):
                    s.expunge(row)
                    rows[row.namespace] = row
        with self._lock:
            self._overrides = rows
            self._quotas = {}
            self._buckets = {}
            self._generation = generation

    # -- per request -------------------------------------------------------------------------

    def admit(self, namespace: str, quota: Quota) -> None:
        """Take a token from the namespace's bucket, or raise RateLimited (429)."""
        if quota.requests_per_second <= 0:
            return
        bucket = self._buckets.get(namespace)
        if bucket is None:
            burst = quota.burst or math.ceil(quota.requests_per_second)
            bucket = self._buckets[namespace] = TokenBucket(quota.requests_per_second, burst)
        wait = bucket.take()
        if wait:
            raise RateLimited(
                f"namespace {namespace!r} is over its rate of "
                f"{quota.requests_per_second:g} requests per second",
                retry_after=math.ceil(wait),
            )

    def enter(self, namespace: str, quota: Quota) -> bool:
        """Count an invocation in flight; RateLimited when the namespace is at its limit.
        Returns whether the caller must call `leave`."""
        if quota.max_concurrency <= 0:
            return False
        current = self._inflight.get(namespace, 0)
        if current >= quota.max_concurrency:
            raise RateLimited(
                f"namespace {namespace!r} is at its limit of "
                f"{quota.max_concurrency} concurrent invocations"
            )
        self._inflight[namespace] = current + 1
        return True

    def leave(self, namespace: str) -> None:
        self._inflight[namespace] = self._inflight.get(namespace, 1) - 1


def _override(base: Quota, row: NamespaceQuota) -> Quota:
    """A namespace's row on top of the defaults: each NULL column keeps the default."""
    values: dict[str, Any] = {}  # Quota's fields, read by name
    for field in _NUMBERS:
        value = getattr(row, field)
        values[field] = getattr(base, field) if value is None else value
    egress = parse_egress(row.egress_allow)
    values["egress_allow"] = base.egress_allow if egress is None else egress
    quota = Quota(**values)
    return UNLIMITED if quota == UNLIMITED else quota


def deploy_check(
    limiter: Limiter, usage: Callable[[str], tuple[set[str], int]]
) -> Callable[[str, int], None]:
    """The Deployer's quota hook: functions and module bytes of the name's namespace."""

    def check(name: str, adding: int) -> None:
        namespace = namespace_of(name)
        quota = limiter.quota(namespace)
        if not quota.max_functions and not quota.max_module_bytes:
            return
        names, used = usage(namespace)
        if quota.max_functions and name not in names and len(names) >= quota.max_functions:
            raise QuotaExceeded(
                f"namespace {namespace!r} is at its limit of {quota.max_functions} functions"
            )
        if quota.max_module_bytes and used + adding > quota.max_module_bytes:
            raise QuotaExceeded(
                f"namespace {namespace!r} would exceed its {quota.max_module_bytes} bytes of "
                f"modules ({used} stored, {adding} more)"
            )

    return check


def spec_ceilings(limiter: Limiter) -> Callable[[str], dict[str, int]]:
    """The Deployer's and Invoker's ceiling hook: a qualified name's namespace ceilings."""

    def ceilings(name: str) -> dict[str, int]:
        return ceilings_of(limiter.quota(namespace_of(name)))

    return ceilings
