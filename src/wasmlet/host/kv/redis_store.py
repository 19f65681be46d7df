"""The persistent key-value store on Redis, for deployments that scale out.

Each key lives at `<prefix><n>:<scope>:<key>`, where n is the scope's length in UTF-8
bytes (prefix `wasmlet:kv:` unless told otherwise, so a test or a second installation can
share one Redis). The length makes the name injective whatever bytes scope and key hold:
without it, the operator's global key `b:cfg` and tenant b's global key `cfg` were both
`global:b:cfg`. Every operation maps onto one Redis command, so atomicity and expiry are
Redis's own.

Names written before this layout (`<prefix><scope>:<key>`) are not read: they cannot all
be decoded (that was the collision), so an upgrade keeps them aside, untouched; an
operator moves what matters with `SCAN`/`RENAME`, knowing which scope each belongs to.

Connection errors surface as redis-py's exceptions (`redis.exceptions.ConnectionError`,
`TimeoutError`): the store is unavailable, which is not the same thing as refusing an
operation (KvError), and the callers tell the two apart.
"""

from __future__ import annotations

import fnmatch

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.retry import Retry

from wasmlet.host.kv.base import KvError
from wasmlet.host.kv.memory import check_ttl
from wasmlet.host.kv.scopes import global_scope_of, scope_namespace, tenant_fn_prefix

DEFAULT_PREFIX = "wasmlet:kv:"
_SCAN_COUNT = 1000  # a hint to SCAN: keys examined per round trip
_UNLINK_BATCH = 500
_GLOB_SPECIALS = frozenset("*?[]\\")


def glob_escape(text: str) -> str:
    """`text` as a Redis glob that matches exactly itself."""
    return "".join("\\" + c if c in _GLOB_SPECIALS else c for c in text)


def redis_prefilter(pattern: str) -> str:
    """A Redis MATCH glob matching at least what the fnmatch-style `pattern` matches.

    Redis globs differ from fnmatch (`\\` escapes, `[^...]` negates) and match bytes, not
    characters, so `?` or a class would miss a multi-byte character. Literal characters are
    therefore escaped and every wildcard or class becomes `*`; the exact test is fnmatch
    on the candidates.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "[":
            # Parsed as fnmatch does; an unclosed `[` is a literal.
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j < n:
                c, i = "*", j + 1
        if c in ("*", "?"):
            if not out or out[-1] != "*":
                out.append("*")
        else:
            out.append(glob_escape(c))
    return "".join(out)


class RedisKv:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_connections: int = 64,
        timeout_s: float = 5.0,
    ) -> None:
        """`max_connections` bounds the pool; a caller beyond it waits up to `timeout_s`
        for a free connection, as a command waits up to `timeout_s` for Redis to answer."""
        self.prefix = prefix
        # One retry, on connection errors only: it recovers a pooled connection that Redis
        # (or a proxy) closed while idle. A timeout is never retried: the command may have
        # run, and running INCRBY twice would count twice.
        retry = Retry(
            ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(RedisConnectionError,)
        )
        self._pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=min(timeout_s, 2.0),
            health_check_interval=30,
            retry=retry,
        )
        self._redis = redis.Redis(connection_pool=self._pool)

    def _name(self, scope: str, key: str) -> str:
        return f"{self.prefix}{len(scope.encode())}:{scope}:{key}"

    def _scan(self, scope: str, glob: str) -> set[bytes]:
        """Redis names of the scope whose remainder after `<prefix><scope>:` matches `glob`
        (a set: SCAN may return a name more than once)."""
        head = glob_escape(self._name(scope, ""))
        return {bytes(n) for n in self._redis.scan_iter(match=head + glob, count=_SCAN_COUNT)}

    # -- KvStore -----------------------------------------------------------------------------

    def get(self, scope: str, key: str) -> bytes | None:
        value = self._redis.get(self._name(scope, key))
        if value is None:
            return None
        assert isinstance(value, bytes)  # decode_responses is off: Redis answers bytes
        return value

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
        done = self._redis.set(self._name(scope, key), bytes(value), px=ttl_ms, nx=only_if_absent)
        return bool(done)

    def delete(self, scope: str, key: str) -> bool:
        return int(self._redis.unlink(self._name(scope, key))) > 0

    def keys(self, scope: str, pattern: str = "*", limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        head = len(self._name(scope, "").encode())
        candidates = (
            n[head:].decode("utf-8", "replace") for n in self._scan(scope, redis_prefilter(pattern))
        )
        return sorted(k for k in candidates if fnmatch.fnmatchcase(k, pattern))[:limit]

    def incr(self, scope: str, key: str, delta: int) -> int:
        try:
            return int(self._redis.incrby(self._name(scope, key), delta))
        except ResponseError as exc:
            # "value is not an integer or out of range", "increment or decrement would
            # overflow": Redis refused, the store is fine.
            raise KvError(f"cannot increment {key!r}: {exc}") from None

    def pttl(self, scope: str, key: str) -> int:
        return int(self._redis.pttl(self._name(scope, key)))

    def expire(self, scope: str, key: str, ttl_ms: int) -> bool:
        """A TTL of 0 or less removes the key at once (Redis PEXPIRE's own rule)."""
        return bool(self._redis.pexpire(self._name(scope, key), ttl_ms))

    def drop_scope(self, scope: str) -> int:
        names = list(self._scan(scope, "*"))
        removed = 0
        for start in range(0, len(names), _UNLINK_BATCH):
            removed += int(self._redis.unlink(*names[start : start + _UNLINK_BATCH]))
        return removed

    def usage(self, namespace: str) -> tuple[int, int]:
        """Live keys of the namespace's scopes and their bytes (keys plus values). SCAN
        walks the whole keyspace whatever MATCH says: this is for an occasional count
        (host/kv/quota.py), never per write."""
        globs = [glob_escape(self._name(global_scope_of(namespace), "")) + "*"]
        prefix = tenant_fn_prefix(namespace)
        fns = glob_escape(prefix) if prefix is not None else "fn:"
        globs.append(glob_escape(self.prefix) + "[0-9]*:" + fns + "*")
        names = {
            bytes(n)
            for glob in globs
            for n in self._redis.scan_iter(match=glob, count=_SCAN_COUNT)
            if self._namespace_of(bytes(n)) == namespace
        }
        keys = size = 0
        ordered = list(names)
        for start in range(0, len(ordered), _UNLINK_BATCH):
            batch = ordered[start : start + _UNLINK_BATCH]
            pipe = self._redis.pipeline(transaction=False)
            for name in batch:
                pipe.strlen(name)
            for name, length in zip(batch, pipe.execute(), strict=True):
                if length:  # 0: gone (or expired) since the scan
                    keys += 1
                    size += int(length) + len(name) - self._head_length(name)
        return keys, size

    def _split(self, name: bytes) -> tuple[str, int] | None:
        """(scope, length of `<prefix><n>:<scope>:`) of a Redis name of this layout."""
        head = self.prefix.encode()
        if not name.startswith(head):
            return None
        digits, sep, rest = name[len(head) :].partition(b":")
        if not sep or not digits.isdigit():
            return None
        n = int(digits)
        if rest[n : n + 1] != b":":
            return None
        return rest[:n].decode("utf-8", "replace"), len(head) + len(digits) + 1 + n + 1

    def _namespace_of(self, name: bytes) -> str | None:
        parts = self._split(name)
        return scope_namespace(parts[0]) if parts else None

    def _head_length(self, name: bytes) -> int:
        parts = self._split(name)
        return parts[1] if parts else 0

    def close(self) -> None:
        self._pool.disconnect()
