"""The persistent key-value store on the platform's database (SQLite or PostgreSQL).

One row per key in `kv_entries` (registry/models.py: KvEntry). Expiry is a Unix time in
seconds, compared against the clock of whichever process runs the statement; an expired
row is absent for every operation and is deleted when an operation comes across it, plus
in an occasional sweep so keys nobody reads again do not pile up.

Every operation is one short transaction on a pooled connection, so the store is safe to
call from many executor threads (and many worker processes) at once:

- writes that depend only on the row itself are single upserts (`INSERT .. ON CONFLICT`),
  atomic on both dialects; whether one wrote is read from RETURNING, because an INSERT's
  rowcount is not reliable across drivers (psycopg 3 under SQLAlchemy 2.1 reports -1);
- `incr` reads before it writes, so it first inserts a placeholder row (which takes
  SQLite's database write lock, and on PostgreSQL waits for any concurrent inserter),
  then locks the row with SELECT .. FOR UPDATE (PostgreSQL; SQLite ignores it and relies
  on the write lock it already holds) and reads it.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from wasmlet.host.kv.base import KvError
from wasmlet.host.kv.memory import check_ttl, counter_value
from wasmlet.host.kv.scopes import global_scope_of, tenant_fn_prefix
from wasmlet.names import SEPARATOR
from wasmlet.registry.models import KvEntry, table_of

_T = table_of(KvEntry)
_MAX_KEY_CHARS = 1024  # the width of kv_entries.key
_LIKE_ESCAPE = "\\"
_KEYS_BATCH = 500


def glob_to_like(pattern: str) -> str:
    """A LIKE pattern (escape character `\\`) matching at least what the glob matches.

    `*` becomes `%`, `?` and a whole `[...]` class become `_` (one character), and the
    characters LIKE treats specially are escaped. It is only a pre-filter: a class is
    wider than the glob, and SQLite's LIKE ignores ASCII case, so callers still check
    each candidate with fnmatch. Brackets are parsed the way fnmatch parses them: `[!`
    negates, a `]` right after `[` or `[!` is a member, and a `[` with no closing `]` is
    a literal character.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != "%":
                out.append("%")
        elif c == "?":
            out.append("_")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("[")
            else:
                out.append("_")
                i = j + 1
        elif c in ("%", "_", _LIKE_ESCAPE):
            out.append(_LIKE_ESCAPE + c)
        else:
            out.append(c)
    return "".join(out)


def _pk(scope: str, key: str) -> ColumnElement[bool]:
    return and_(_T.c.scope == scope, _T.c.key == key)


def _namespace_rows(namespace: str) -> ColumnElement[bool]:
    """The rows of a namespace's scopes (host/kv/scopes.py)."""
    own_global = _T.c.scope == global_scope_of(namespace)
    prefix = tenant_fn_prefix(namespace)
    if prefix is not None:  # names hold no LIKE wildcard, but escape anyway
        return or_(own_global, _T.c.scope.like(glob_to_like(prefix) + "%", escape=_LIKE_ESCAPE))
    operator_fns = and_(_T.c.scope.like("fn:%"), _T.c.scope.not_like(f"%{SEPARATOR}%"))
    return or_(own_global, operator_fns)


def _live(now: float) -> ColumnElement[bool]:
    return or_(_T.c.expires_at.is_(None), _T.c.expires_at > now)


def _expired(now: float) -> ColumnElement[bool]:
    return and_(_T.c.expires_at.is_not(None), _T.c.expires_at <= now)


class SqlKv:
    def __init__(self, engine: Engine, *, purge_interval_s: float | None = 300.0) -> None:
        """`purge_interval_s`: how often (at most) a write also sweeps every expired row
        out of the table; None leaves expired rows to be deleted when they are touched."""
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(
                f"the SQL key-value store supports SQLite and PostgreSQL, not {dialect}"
            )
        self._engine = engine
        self._insert: Callable[..., Any] = (
            postgresql.insert if dialect == "postgresql" else sqlite.insert
        )
        # Keys sort by code point, as Python sorts them: UTF-8 byte order, which is SQLite's
        # default (BINARY) and PostgreSQL's "C" collation, whatever the database's locale.
        self._key_order = _T.c.key.collate("C") if dialect == "postgresql" else _T.c.key
        self._purge_interval = purge_interval_s
        self._next_purge = time.monotonic() + (purge_interval_s or 0)
        self._purge_lock = threading.Lock()

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _check_key(key: str) -> None:
        if len(key) > _MAX_KEY_CHARS:
            raise KvError(f"key is longer than {_MAX_KEY_CHARS} characters")
        if "\x00" in key:  # PostgreSQL text cannot hold NUL
            raise KvError("key contains a NUL character")

    def _reap(self, scope: str, key: str, now: float) -> None:
        """Delete the row if it is (still) expired: a concurrent set may have revived it."""
        with self._engine.begin() as conn:
            conn.execute(delete(_T).where(_pk(scope, key), _expired(now)))

    def _row(self, scope: str, key: str) -> tuple[bytes, float | None] | None:
        """The live row's (value, expires_at), reaping it when expired."""
        if "\x00" in key:
            return None  # never stored (see _check_key); PostgreSQL would refuse the query
        now = time.time()
        with self._engine.connect() as conn:
            row = conn.execute(select(_T.c.value, _T.c.expires_at).where(_pk(scope, key))).first()
        if row is None:
            return None
        if row.expires_at is not None and row.expires_at <= now:
            self._reap(scope, key, now)
            return None
        return bytes(row.value), row.expires_at

    def _after_write(self) -> None:
        if self._purge_interval is None or time.monotonic() < self._next_purge:
            return
        with self._purge_lock:
            if time.monotonic() < self._next_purge:
                return
            self._next_purge = time.monotonic() + self._purge_interval
        self.purge_expired()

    def purge_expired(self) -> int:
        """Delete every expired row of every scope; returns how many."""
        with self._engine.begin() as conn:
            return conn.execute(delete(_T).where(_expired(time.time()))).rowcount

    # -- KvStore -----------------------------------------------------------------------------

    def get(self, scope: str, key: str) -> bytes | None:
        row = self._row(scope, key)
        return row[0] if row else None

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
        self._check_key(key)
        now = time.time()
        expires = None if ttl_ms is None else now + ttl_ms / 1000
        stmt = self._insert(_T).values(scope=scope, key=key, value=bytes(value), expires_at=expires)
        # With only_if_absent, an existing row is replaced only when it has expired: the
        # condition is evaluated on the row under the conflict, atomically.
        stmt = stmt.on_conflict_do_update(
            index_elements=[_T.c.scope, _T.c.key],
            set_={"value": stmt.excluded.value, "expires_at": stmt.excluded.expires_at},
            where=_expired(now) if only_if_absent else None,
        )
        with self._engine.begin() as conn:
            written = conn.execute(stmt.returning(_T.c.scope)).first() is not None
        self._after_write()
        return written

    def delete(self, scope: str, key: str) -> bool:
        if "\x00" in key:
            return False
        now = time.time()
        with self._engine.begin() as conn:
            existed = conn.execute(delete(_T).where(_pk(scope, key), _live(now))).rowcount > 0
            if not existed:  # an expired row may still be there: it goes too
                conn.execute(delete(_T).where(_pk(scope, key)))
        return existed

    def keys(self, scope: str, pattern: str = "*", limit: int = 1000) -> list[str]:
        if limit <= 0 or "\x00" in pattern:
            return []  # no key holds NUL
        like = glob_to_like(pattern)
        now = time.time()
        found: list[str] = []
        after: str | None = None
        # LIKE only narrows the candidates, so page through them in key order until
        # `limit` keys pass the exact glob test (or the candidates run out).
        with self._engine.connect() as conn:
            while len(found) < limit:
                query = (
                    select(_T.c.key)
                    .where(
                        _T.c.scope == scope,
                        _T.c.key.like(like, escape=_LIKE_ESCAPE),
                        _live(now),
                    )
                    .order_by(self._key_order)
                    .limit(_KEYS_BATCH)
                )
                if after is not None:
                    query = query.where(self._key_order > after)
                batch = list(conn.scalars(query))
                found.extend(k for k in batch if fnmatch.fnmatchcase(k, pattern))
                if len(batch) < _KEYS_BATCH:
                    break
                after = batch[-1]
        return sorted(found)[:limit]

    def incr(self, scope: str, key: str, delta: int) -> int:
        self._check_key(key)
        counter_value(None, delta, key)  # refuse an out-of-range delta before writing
        now = time.time()
        with self._engine.begin() as conn:
            placeholder = (
                self._insert(_T)
                .values(scope=scope, key=key, value=b"0", expires_at=None)
                .on_conflict_do_nothing(index_elements=[_T.c.scope, _T.c.key])
                .returning(_T.c.scope)
            )
            was_absent = conn.execute(placeholder).first() is not None
            row = conn.execute(
                select(_T.c.value, _T.c.expires_at).where(_pk(scope, key)).with_for_update()
            ).one()
            if was_absent or (row.expires_at is not None and row.expires_at <= now):
                current, expires = None, None  # absent, or expired (= absent, TTL gone too)
            else:
                current, expires = bytes(row.value), row.expires_at
            number = counter_value(current, delta, key)  # KvError rolls the placeholder back
            conn.execute(
                update(_T)
                .where(_pk(scope, key))
                .values(value=str(number).encode(), expires_at=expires)
            )
        self._after_write()
        return number

    def pttl(self, scope: str, key: str) -> int:
        row = self._row(scope, key)
        if row is None:
            return -2
        if row[1] is None:
            return -1
        # Never 0 or less for a key that is still there: those read as "gone".
        return max(1, round((row[1] - time.time()) * 1000))

    def expire(self, scope: str, key: str, ttl_ms: int) -> bool:
        """A TTL of 0 or less removes the key at once (as Redis PEXPIRE does)."""
        if ttl_ms <= 0:
            return self.delete(scope, key)
        if "\x00" in key:
            return False
        now = time.time()
        with self._engine.begin() as conn:
            result = conn.execute(
                update(_T).where(_pk(scope, key), _live(now)).values(expires_at=now + ttl_ms / 1000)
            )
        return result.rowcount > 0

    def drop_scope(self, scope: str) -> int:
        """Counts the live keys removed (expired ones were already absent)."""
        now = time.time()
        with self._engine.begin() as conn:
            live = conn.execute(delete(_T).where(_T.c.scope == scope, _live(now))).rowcount
            conn.execute(delete(_T).where(_T.c.scope == scope))
        return live

    def usage(self, namespace: str) -> tuple[int, int]:
        """Live keys of the namespace's scopes and their bytes (key characters plus value
        bytes): one pass over the namespace's rows, on the primary key's order."""
        scopes = _namespace_rows(namespace)
        total = func.coalesce(func.sum(func.length(_T.c.key) + func.length(_T.c.value)), 0)
        query = select(func.count(), total).where(scopes, _live(time.time()))
        with self._engine.connect() as conn:
            keys, size = conn.execute(query).one()
        return int(keys), int(size)

    def close(self) -> None:
        """Nothing to release: the engine belongs to whoever built it (the app state)."""
