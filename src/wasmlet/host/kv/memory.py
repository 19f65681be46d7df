"""The in-memory key-value store: per process, bounded (LRU by entries and bytes), TTLs.

Nothing survives a restart, and each worker process has its own: this is the store for
caches and scratch state (Otoroshi's plugin and global maps), not for data that matters.

The counter and TTL rules every store shares (`counter_value`, `check_ttl`) live here too,
so the SQL store parses and bounds integers exactly as this one does, and both behave like
Redis, whose INCRBY is the reference.
"""

from __future__ import annotations

import fnmatch
import re
import threading
import time
from collections import OrderedDict

from wasmlet.host.kv.base import KvError
from wasmlet.host.kv.scopes import scope_namespace

_ENTRY_OVERHEAD = 64  # bytes counted per entry on top of key and value

# Counters are signed 64-bit, stored as plain ASCII decimal (what Redis INCRBY accepts:
# no sign "+", no spaces, no underscores, no leading zeros).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_DECIMAL = re.compile(rb"-?(0|[1-9][0-9]*)")


def counter_value(current: bytes | None, delta: int, key: str) -> int:
    """The value INCRBY delta leaves at a key holding `current` (None = absent), or KvError."""
    if not INT64_MIN <= delta <= INT64_MAX:
        raise KvError(f"increment {delta} is out of the 64-bit integer range")
    if current is None:
        return delta
    if not _DECIMAL.fullmatch(current) or current == b"-0":
        raise KvError(f"value of {key!r} is not an integer")
    number = int(current) + delta
    if not INT64_MIN <= number <= INT64_MAX:
        raise KvError(f"incrementing {key!r} would overflow a 64-bit integer")
    return number


def check_ttl(ttl_ms: int | None) -> None:
    """A TTL given to `set` must be positive (Redis refuses `SET ... PX 0` too)."""
    if ttl_ms is not None and ttl_ms <= 0:
        raise KvError(f"ttl_ms must be positive, got {ttl_ms}")


class MemoryKv:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # (scope, key) -> (value, expires at in time.monotonic() seconds or None), least
        # recently used first.
        self._data: OrderedDict[tuple[str, str], tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        # The entries of each namespace (host/kv/scopes.py), so counting one for its quota
        # (`usage`) passes over its own entries only.
        self._members: dict[str, set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    # -- internals (lock held) ---------------------------------------------------------------

    @staticmethod
    def _cost(key: tuple[str, str], value: bytes) -> int:
        return len(key[0].encode()) + len(key[1].encode()) + len(value) + _ENTRY_OVERHEAD

    @staticmethod
    def _expired(entry: tuple[bytes, float | None], now: float) -> bool:
        return entry[1] is not None and entry[1] <= now

    def _live(self, item: tuple[str, str]) -> tuple[bytes, float | None] | None:
        """The entry if present and unexpired, marked as most recently used."""
        entry = self._data.get(item)
        if entry is None:
            return None
        if self._expired(entry, time.monotonic()):
            self._remove(item)
            return None
        self._data.move_to_end(item)
        return entry

    def _remove(self, item: tuple[str, str]) -> None:
        value, _ = self._data.pop(item)
        self._bytes -= self._cost(item, value)
        namespace = scope_namespace(item[0])
        members = self._members[namespace]
        members.discard(item)
        if not members:
            del self._members[namespace]

    def _put(self, item: tuple[str, str], value: bytes, expires: float | None) -> None:
        cost = self._cost(item, value)
        if cost > self.max_bytes:
            # Keeping it would break the bound; evicting everything else would not help.
            raise KvError(
                f"entry of {cost} bytes exceeds the in-memory store's {self.max_bytes}-byte limit"
            )
        if item in self._data:
            self._remove(item)
        self._data[item] = (value, expires)
        self._bytes += cost
        self._members.setdefault(scope_namespace(item[0]), set()).add(item)
        # Evict least recently used entries, never the one just written (it fits on its
        # own, checked above). Expired entries are not hunted down first: that would cost
        # a scan of the whole store per write once it is full, and unread ones age out of
        # the LRU end anyway.
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._data)))

    @staticmethod
    def _expiry(ttl_ms: int | None) -> float | None:
        return None if ttl_ms is None else time.monotonic() + ttl_ms / 1000

    # -- KvStore -------------------------------------------------------------------------------

    def get(self, scope: str, key: str) -> bytes | None:
        with self._lock:
            entry = self._live((scope, key))
            return entry[0] if entry else None

    def set(
        self,
        scope: str,
        key: str,
        value: bytes,
        ttl_ms: int | None = None,
        *,
        only_if_absent: bool = False,
    ) -> bool:
        check_ttl(ttl_ms)
        with self._lock:
            item = (scope, key)
            if only_if_absent and self._live(item) is not None:
                return False
            self._put(item, bytes(value), self._expiry(ttl_ms))
            return True

    def delete(self, scope: str, key: str) -> bool:
        with self._lock:
            if self._live((scope, key)) is None:
                return False
            self._remove((scope, key))
            return True

    def keys(self, scope: str, pattern: str = "*", limit: int = 1000) -> list[str]:
        # Listing is not a use: it must not reorder the LRU (so no _live here).
        now = time.monotonic()
        with self._lock:
            found = [
                key
                for (s, key), entry in self._data.items()
                if s == scope
                and not self._expired(entry, now)
                and fnmatch.fnmatchcase(key, pattern)
            ]
        return sorted(found)[: max(limit, 0)]

    def incr(self, scope: str, key: str, delta: int) -> int:
        with self._lock:
            item = (scope, key)
            entry = self._live(item)
            number = counter_value(entry[0] if entry else None, delta, key)
            self._put(item, str(number).encode(), entry[1] if entry else None)
            return number

    def pttl(self, scope: str, key: str) -> int:
        with self._lock:
            entry = self._live((scope, key))
            if entry is None:
                return -2
            if entry[1] is None:
                return -1
            # Never report 0 or less for a key that is still there: those read as "gone".
            return max(1, round((entry[1] - time.monotonic()) * 1000))

    def expire(self, scope: str, key: str, ttl_ms: int) -> bool:
        """A TTL of 0 or less removes the key at once (as Redis PEXPIRE does)."""
        with self._lock:
            item = (scope, key)
            entry = self._live(item)
            if entry is None:
                return False
            if ttl_ms <= 0:
                self._remove(item)
            else:
                self._data[item] = (entry[0], self._expiry(ttl_ms))
            return True

    def drop_scope(self, scope: str) -> int:
        """Counts the live keys removed (expired ones were already absent)."""
        now = time.monotonic()
        with self._lock:
            doomed = [(item, e) for item, e in self._data.items() if item[0] == scope]
            for item, _ in doomed:
                self._remove(item)
            return sum(1 for _, e in doomed if not self._expired(e, now))

    def usage(self, namespace: str) -> tuple[int, int]:
        """Live keys of the namespace and their bytes (keys plus values); expired entries
        met on the way are removed, so they stop counting against its quota."""
        now = time.monotonic()
        keys = size = 0
        with self._lock:
            for item in list(self._members.get(namespace, ())):
                entry = self._data[item]
                if self._expired(entry, now):
                    self._remove(item)
                    continue
                keys += 1
                size += len(item[1].encode()) + len(entry[0])
        return keys, size

    def close(self) -> None:
        with self._lock:
            self._data.clear()
            self._members.clear()
            self._bytes = 0
