"""The interface every key-value store implements.

Keys are UTF-8 text, values bytes. `scope` separates namespaces: `global`, or
`fn:<function name>` for a function's own keys. Stores never see an unscoped key, so one
function can never reach another's keys: the capability picks the scope, not the guest.
TTLs are in milliseconds; an expired key is absent for every operation.
"""

from __future__ import annotations

from typing import Protocol


class KvError(Exception):
    """An operation the store refuses (e.g. incrementing a value that is not an integer)."""


class KvStore(Protocol):
    def get(self, scope: str, key: str) -> bytes | None: ...

    def set(
        self,
        scope: str,
        key: str,
        value: bytes,
        ttl_ms: int | None = None,
        *,
        only_if_absent: bool = False,
    ) -> bool:
        """Store value (replacing any TTL with `ttl_ms`, None = no expiry). With
        only_if_absent, do nothing and return False when the key exists."""

    def delete(self, scope: str, key: str) -> bool:
        """True when the key existed."""

    def keys(self, scope: str, pattern: str = "*", limit: int = 1000) -> list[str]:
        """Live keys of the scope matching a glob (`*`, `?`, `[...]`), sorted, at most
        `limit`."""

    def incr(self, scope: str, key: str, delta: int) -> int:
        """Add delta to the decimal integer stored at key (absent = 0), atomically, and
        return the new value; the key's TTL is kept. KvError if the value is not an
        integer (stored as ASCII decimal)."""

    def pttl(self, scope: str, key: str) -> int:
        """Milliseconds left: -2 when the key is absent, -1 when it has no expiry."""

    def expire(self, scope: str, key: str, ttl_ms: int) -> bool:
        """Set a TTL on an existing key; False when absent."""

    def drop_scope(self, scope: str) -> int:
        """Delete every key of a scope (a function was deleted); returns how many."""

    def close(self) -> None: ...
