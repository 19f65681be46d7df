"""The in-memory key-value store: per process, bounded (LRU by entries and bytes), TTLs.

Nothing survives a restart, and each worker process has its own: this is the store for
caches and scratch state (Otoroshi's plugin and global maps), not for data that matters.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import OrderedDict

from wasmlet.host.kv.base import KvError

_ENTRY_OVERHEAD = 64  # bytes counted per entry on top of key and value


class MemoryKv:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # (scope, key) -> (value, expires at in time.monotonic() seconds or None)
        self._data: OrderedDict[tuple[str, str], tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    # -- internals (lock held) ---------------------------------------------------------------

    @staticmethod
    def _cost(key: tuple[str, str], value: bytes) -> int:
        return len(key[0]) + len(key[1].encode()) + len(value) + _ENTRY_OVERHEAD

    def _live(self, item: tuple[str, str]) -> tuple[bytes, float | None] | None:
        entry = self._data.get(item)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= time.monotonic():
            self._remove(item)
            return None
        self._data.move_to_end(item)
        return entry

    def _remove(self, item: tuple[str, str]) -> None:
        value, _ = self._data.pop(item)
        self._bytes -= self._cost(item, value)

    def _put(self, item: tuple[str, str], value: bytes, expires: float | None) -> None:
        if item in self._data:
            self._remove(item)
        self._data[item] = (value, expires)
        self._bytes += self._cost(item, value)
        # Evict least recently used entries (never the one just written) to stay bounded.
        while (len(self._data) > self.max_entries or self._bytes > self.max_bytes) and len(
            self._data
        ) > 1:
            oldest = next(iter(self._data))
            self._remove(oldest)

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
        with self._lock:
            found = [
                key
                for (s, key) in list(self._data)
                if s == scope and fnmatch.fnmatchcase(key, pattern) and self._live((s, key))
            ]
        return sorted(found)[:limit]

    def incr(self, scope: str, key: str, delta: int) -> int:
        with self._lock:
            item = (scope, key)
            entry = self._live(item)
            current, expires = (entry[0], entry[1]) if entry else (b"0", None)
            try:
                number = int(current.decode("ascii")) + delta
            except (UnicodeDecodeError, ValueError):
                raise KvError(f"value of {key!r} is not an integer") from None
            self._put(item, str(number).encode(), expires)
            return number

    def pttl(self, scope: str, key: str) -> int:
        with self._lock:
            entry = self._live((scope, key))
            if entry is None:
                return -2
            if entry[1] is None:
                return -1
            return max(0, int((entry[1] - time.monotonic()) * 1000))

    def expire(self, scope: str, key: str, ttl_ms: int) -> bool:
        with self._lock:
            item = (scope, key)
            entry = self._live(item)
            if entry is None:
                return False
            self._data[item] = (entry[0], self._expiry(ttl_ms))
            return True

    def drop_scope(self, scope: str) -> int:
        with self._lock:
            doomed = [item for item in self._data if item[0] == scope]
            for item in doomed:
                self._remove(item)
            return len(doomed)

    def close(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0
