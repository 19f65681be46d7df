"""The KvStore contract, run against every store: memory, SQL (SQLite and PostgreSQL), Redis.

Each store must behave the same for the capability and the operator API: scopes never
leak, expired keys are absent for every operation, `incr` is atomic under threads, and
`keys` applies glob patterns exactly, even to keys holding SQL LIKE or Redis glob
metacharacters.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, delete, func, select

from wasmlet.host.kv.base import KvError, KvStore
from wasmlet.host.kv.memory import MemoryKv
from wasmlet.host.kv.quota import KvQuotaExceeded, QuotaKv
from wasmlet.host.kv.redis_store import RedisKv, glob_escape, redis_prefilter
from wasmlet.host.kv.sql import SqlKv, glob_to_like
from wasmlet.registry.db import make_engine, upgrade
from wasmlet.registry.models import KvEntry

REDIS_URL = os.environ.get("WASMLET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STORES = ["memory", "sql-sqlite", "sql-postgresql", "redis"]


def _redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        problem = f"Redis not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem} (CI requires Redis)")
        pytest.skip(problem)
    return client


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('kv') / 'kv.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _empty(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(delete(KvEntry))
    return engine


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = _redis_or_skip()
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards."""
    prefix = f"wasmlet:test:{uuid.uuid4().hex}:"
    yield prefix
    leftovers = list(redis_client.scan_iter(match=glob_escape(prefix) + "*"))
    if leftovers:
        redis_client.delete(*leftovers)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[KvStore]:
    kind = request.param
    made: KvStore
    if kind == "memory":
        made = MemoryKv(max_entries=10_000, max_bytes=64 * 1024 * 1024)
    elif kind == "sql-sqlite":
        made = SqlKv(_empty(request.getfixturevalue("sqlite_engine")))
    elif kind == "sql-postgresql":
        made = SqlKv(_empty(request.getfixturevalue("pg_engine")))
    else:
        made = RedisKv(REDIS_URL, prefix=request.getfixturevalue("redis_prefix"))
    yield made
    made.close()


def wait_until_absent(store: KvStore, scope: str, key: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while store.pttl(scope, key) != -2:
        assert time.monotonic() < deadline, f"{key!r} never expired"
        time.sleep(0.01)


def in_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(i) in n threads started together; re-raise the first failure."""
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


# -- get / set / delete ----------------------------------------------------------------------


def test_get_set_delete(store: KvStore) -> None:
    assert store.get("global", "k") is None
    assert store.set("global", "k", b"v1") is True
    assert store.get("global", "k") == b"v1"
    assert store.set("global", "k", b"v2") is True
    assert store.get("global", "k") == b"v2"
    assert store.delete("global", "k") is True
    assert store.get("global", "k") is None
    assert store.delete("global", "k") is False


def test_values_are_arbitrary_bytes(store: KvStore) -> None:
    value = bytes(range(256)) * 1000
    store.set("fn:a", "blob", value)
    assert store.get("fn:a", "blob") == value
    store.set("fn:a", "empty", b"")
    assert store.get("fn:a", "empty") == b""
    assert store.pttl("fn:a", "empty") == -1  # empty is a value, not absence


def test_keys_with_any_text(store: KvStore) -> None:
    odd = ["a/b/c", "sp ace", "quo'te\"", "naïve-ключ-键", "x:y:z", "\\back\\", "%_*?[]"]
    for i, key in enumerate(odd):
        store.set("global", key, str(i).encode())
    for i, key in enumerate(odd):
        assert store.get("global", key) == str(i).encode()
    assert store.keys("global") == sorted(odd)


def test_scopes_are_isolated(store: KvStore) -> None:
    store.set("fn:a", "shared", b"a")
    store.set("fn:b", "shared", b"b")
    store.set("global", "shared", b"g")
    assert store.get("fn:a", "shared") == b"a"
    assert store.get("fn:b", "shared") == b"b"
    assert store.get("global", "shared") == b"g"
    assert store.get("fn:c", "shared") is None
    assert store.delete("fn:a", "shared") is True
    assert store.get("fn:b", "shared") == b"b"
    assert store.get("global", "shared") == b"g"
    assert store.incr("fn:b", "n", 1) == 1
    assert store.get("fn:a", "n") is None
    assert store.keys("fn:b") == ["n", "shared"]
    assert store.keys("global") == ["shared"]
    assert store.keys("fn:a") == []


def test_scope_prefix_does_not_leak(store: KvStore) -> None:
    """A scope's keys are not another scope's keys even when one name prefixes the other."""
    store.set("fn:ab", "k", b"1")
    store.set("fn:a", "b:k", b"2")
    assert store.keys("fn:a") == ["b:k"]
    assert store.keys("fn:ab") == ["k"]
    assert store.drop_scope("fn:a") == 1
    assert store.get("fn:ab", "k") == b"1"


def test_scope_and_key_never_collide(store: KvStore) -> None:
    """Every (scope, key) pair is its own key: the operator's global `b:cfg` is not tenant
    b's global `cfg`, nor a scope with a colon-laden key another scope's key (break 5)."""
    pairs = [("global", "b:cfg"), ("global:b", "cfg"), ("global:b:", "cfg"), ("global", "b::cfg")]
    pairs += [("fn:x", "y:z"), ("fn:x:y", "z"), ("g", "lobal:b:cfg")]
    for i, (scope, key) in enumerate(pairs):
        store.set(scope, key, str(i).encode())
    for i, (scope, key) in enumerate(pairs):
        assert store.get(scope, key) == str(i).encode(), (scope, key)
    assert store.keys("global:b") == ["cfg"]
    assert store.incr("global:b", "n", 1) == 1 and store.get("global", "b:n") is None
    assert store.drop_scope("global:b") == 2
    assert store.get("global", "b:cfg") == b"0" and store.get("global:b:", "cfg") == b"2"


# -- TTLs ------------------------------------------------------------------------------------


def test_ttl_expiry_and_pttl(store: KvStore) -> None:
    assert store.pttl("global", "t") == -2
    store.set("global", "forever", b"x")
    assert store.pttl("global", "forever") == -1
    store.set("global", "t", b"x", ttl_ms=150)
    left = store.pttl("global", "t")
    assert 0 < left <= 150
    assert store.get("global", "t") == b"x"
    wait_until_absent(store, "global", "t")
    assert store.get("global", "t") is None
    assert store.keys("global") == ["forever"]
    assert store.delete("global", "t") is False


def test_set_replaces_the_ttl(store: KvStore) -> None:
    store.set("global", "k", b"1", ttl_ms=60_000)
    assert store.pttl("global", "k") > 50_000
    store.set("global", "k", b"2")
    assert store.pttl("global", "k") == -1
    store.set("global", "k", b"3", ttl_ms=5_000)
    assert 0 < store.pttl("global", "k") <= 5_000


def test_set_refuses_a_non_positive_ttl(store: KvStore) -> None:
    with pytest.raises(KvError):
        store.set("global", "k", b"x", ttl_ms=0)
    with pytest.raises(KvError):
        store.set("global", "k", b"x", ttl_ms=-5)
    assert store.get("global", "k") is None


def test_expire(store: KvStore) -> None:
    assert store.expire("global", "missing", 1000) is False
    assert store.pttl("global", "missing") == -2  # expire does not create
    store.set("global", "k", b"x")
    assert store.expire("global", "k", 60_000) is True
    assert 50_000 < store.pttl("global", "k") <= 60_000
    assert store.expire("global", "k", 100) is True
    wait_until_absent(store, "global", "k")
    assert store.expire("global", "k", 1000) is False  # an expired key is absent
    store.set("global", "now", b"x")
    assert store.expire("global", "now", 0) is True
    assert store.get("global", "now") is None


# -- set NX ----------------------------------------------------------------------------------


def test_set_only_if_absent(store: KvStore) -> None:
    assert store.set("fn:a", "lock", b"first", only_if_absent=True) is True
    assert store.set("fn:a", "lock", b"second", only_if_absent=True) is False
    assert store.get("fn:a", "lock") == b"first"
    assert store.set("fn:b", "lock", b"other", only_if_absent=True) is True  # other scope


def test_set_only_if_absent_over_an_expired_key(store: KvStore) -> None:
    store.set("fn:a", "lease", b"old", ttl_ms=50)
    time.sleep(0.12)  # expired, and not read since: a SQL row is still in the table
    assert store.set("fn:a", "lease", b"new", only_if_absent=True, ttl_ms=60_000) is True
    assert store.get("fn:a", "lease") == b"new"
    assert store.pttl("fn:a", "lease") > 50_000


def test_set_only_if_absent_has_one_winner(store: KvStore) -> None:
    won = in_threads(
        8, lambda i: store.set("global", "leader", str(i).encode(), only_if_absent=True)
    )
    assert sorted(won) == [False] * 7 + [True]
    assert store.get("global", "leader") == str(won.index(True)).encode()


# -- incr ------------------------------------------------------------------------------------


def test_incr(store: KvStore) -> None:
    assert store.incr("fn:a", "n", 5) == 5  # absent counts as 0
    assert store.get("fn:a", "n") == b"5"
    assert store.incr("fn:a", "n", 1) == 6
    assert store.incr("fn:a", "n", -10) == -4
    assert store.get("fn:a", "n") == b"-4"
    store.set("fn:a", "m", b"41")
    assert store.incr("fn:a", "m", 1) == 42
    assert store.incr("fn:a", "zero", 0) == 0
    assert store.get("fn:a", "zero") == b"0"


@pytest.mark.parametrize(
    "value",
    [b"abc", b"1.5", b" 1", b"1 ", b"+1", b"1_000", b"", b"\xff", b"01", b"-0", b"\xd9\xa1"],
)
def test_incr_refuses_a_non_integer(store: KvStore, value: bytes) -> None:
    store.set("fn:a", "s", value)
    with pytest.raises(KvError):
        store.incr("fn:a", "s", 1)
    assert store.get("fn:a", "s") == value  # untouched


def test_incr_stays_in_64_bits(store: KvStore) -> None:
    store.set("global", "big", str(2**63 - 2).encode())
    assert store.incr("global", "big", 1) == 2**63 - 1
    with pytest.raises(KvError):
        store.incr("global", "big", 1)
    assert store.get("global", "big") == str(2**63 - 1).encode()
    with pytest.raises(KvError):
        store.incr("global", "huge", 2**64)
    assert store.get("global", "huge") is None


def test_incr_keeps_the_ttl(store: KvStore) -> None:
    store.set("global", "c", b"1", ttl_ms=60_000)
    assert store.incr("global", "c", 1) == 2
    assert 50_000 < store.pttl("global", "c") <= 60_000


def test_incr_of_an_expired_key_starts_over(store: KvStore) -> None:
    store.set("global", "c", b"100", ttl_ms=50)
    time.sleep(0.12)
    assert store.incr("global", "c", 3) == 3
    assert store.pttl("global", "c") == -1  # the expired key's TTL went with it


def test_concurrent_incr_is_exact(store: KvStore) -> None:
    threads, rounds = 8, 50

    def work(_: int) -> list[int]:
        return [store.incr("fn:a", "hits", 1) for _ in range(rounds)]

    seen = [v for values in in_threads(threads, work) for v in values]
    assert store.get("fn:a", "hits") == str(threads * rounds).encode()
    # Atomic means every increment saw a distinct value.
    assert sorted(seen) == list(range(1, threads * rounds + 1))


# -- keys ------------------------------------------------------------------------------------

ODD_KEYS = [
    "100%",
    "100x",
    "a_b",
    "axb",
    "a/b",
    "star*",
    "starry",
    "br[ck",
    "brick",
    "back\\slash",
    "caf\u00e9",
    "Upper",
    "upper",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", sorted(ODD_KEYS)),
        ("100%", ["100%"]),  # % is literal, not LIKE's "anything"
        ("*%", ["100%"]),
        ("a_b", ["a_b"]),  # _ is literal, not LIKE's "one character"
        ("a?b", ["a/b", "a_b", "axb"]),
        ("star*", ["star*", "starry"]),
        ("star[*]", ["star*"]),  # a class holding *: only the literal star
        ("br[[]ck", ["br[ck"]),
        ("br[ic]ck", ["brick"]),
        ("br[!i]ck", ["br[ck"]),
        ("br[ck", ["br[ck"]),  # an unclosed [ is a literal character
        ("back\\slash", ["back\\slash"]),  # backslash is literal (fnmatch), not an escape
        ("caf?", ["caf\u00e9"]),  # ? is one character, even a multi-byte one
        ("U*", ["Upper"]),  # case-sensitive
        ("u*", ["upper"]),
        ("nothing*", []),
    ],
)
def test_keys_glob(store: KvStore, pattern: str, expected: list[str]) -> None:
    for key in ODD_KEYS:
        store.set("fn:a", key, b"1")
    store.set("fn:b", "100%", b"other scope")
    assert store.keys("fn:a", pattern) == expected


def test_keys_limit_expiry_and_order(store: KvStore) -> None:
    for key in ["d", "b", "a", "c", "e"]:
        store.set("global", key, b"1")
    store.set("global", "gone", b"1", ttl_ms=30)
    time.sleep(0.08)
    assert store.keys("global") == ["a", "b", "c", "d", "e"]
    assert store.keys("global", "*", limit=3) == ["a", "b", "c"]
    assert store.keys("global", "*", limit=0) == []


def test_keys_finds_matches_beyond_the_first_candidates(
    store: KvStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[b]*` can only be pre-filtered as "anything": the store must keep looking past
    the many candidates that fail the exact test (the SQL store reads candidates in
    pages, made small here so a few dozen keys span several)."""
    monkeypatch.setattr("wasmlet.host.kv.sql._KEYS_BATCH", 16)
    for i in range(100):
        store.set("fn:a", f"a{i:04d}", b"")
    for i in range(3):
        store.set("fn:a", f"b{i}", b"")
    assert store.keys("fn:a", "[b]*") == ["b0", "b1", "b2"]
    assert store.keys("fn:a", "a0[0-9]9[0-9]", limit=4) == ["a0090", "a0091", "a0092", "a0093"]


# -- drop_scope ------------------------------------------------------------------------------


def test_drop_scope(store: KvStore) -> None:
    for i in range(7):
        store.set("fn:a", f"k{i}", b"x")
    store.set("fn:a", "dead", b"x", ttl_ms=20)
    store.set("fn:b", "k0", b"keep")
    store.set("global", "k0", b"keep")
    time.sleep(0.06)
    assert store.drop_scope("fn:a") == 7  # the expired key was absent already
    assert store.keys("fn:a") == []
    assert store.get("fn:a", "k0") is None
    assert store.get("fn:b", "k0") == b"keep"
    assert store.get("global", "k0") == b"keep"
    assert store.drop_scope("fn:a") == 0


# -- the glob translations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "like"),
    [
        ("*", "%"),
        ("**a*", "%a%"),
        ("a?c", "a_c"),
        ("100%", "100\\%"),
        ("a_b", "a\\_b"),
        ("x\\y", "x\\\\y"),
        ("br[ic]k", "br_k"),
        ("[]]x", "_x"),
        ("[!]]x", "_x"),
        ("a[bc", "a[bc"),
    ],
)
def test_glob_to_like(glob: str, like: str) -> None:
    assert glob_to_like(glob) == like


@pytest.mark.parametrize(
    ("glob", "match"),
    [
        ("*", "*"),
        ("a?c", "a*c"),
        ("star[*]", "star*"),
        ("lit\\*", "lit\\\\*"),
        ("br[ck", "br\\[ck"),
        ("x]y", "x\\]y"),
        ("??", "*"),
    ],
)
def test_redis_prefilter(glob: str, match: str) -> None:
    assert redis_prefilter(glob) == match


# -- store-specific --------------------------------------------------------------------------


def test_memory_lru_bounded_by_entries() -> None:
    kv = MemoryKv(max_entries=3, max_bytes=1 << 20)
    for key in ["a", "b", "c"]:
        kv.set("global", key, b"1")
    assert kv.get("global", "a") == b"1"  # a is now the most recently used
    kv.keys("global")  # listing is not a use
    kv.set("global", "d", b"1")  # evicts b, the least recently used
    assert kv.keys("global") == ["a", "c", "d"]
    kv.incr("global", "e", 1)
    assert kv.keys("global") == ["a", "d", "e"]


def test_memory_lru_bounded_by_bytes() -> None:
    # Each entry costs scope + key + value + 64 bytes of overhead: 6 + 1 + 100 + 64 = 171.
    kv = MemoryKv(max_entries=1000, max_bytes=171 * 3)
    for key in "abc":
        kv.set("global", key, b"x" * 100)
    assert kv.keys("global") == ["a", "b", "c"]
    kv.set("global", "d", b"x" * 100)
    assert kv.keys("global") == ["b", "c", "d"]
    kv.set("global", "e", b"x" * 250)  # needs the room of two entries
    assert kv.keys("global") == ["d", "e"]
    kv.set("global", "e", b"")  # shrinking frees room: nothing else goes
    kv.set("global", "f", b"x" * 100)
    assert kv.keys("global") == ["d", "e", "f"]


def test_memory_refuses_an_entry_larger_than_the_whole_store() -> None:
    kv = MemoryKv(max_entries=10, max_bytes=500)
    kv.set("global", "small", b"x")
    with pytest.raises(KvError):
        kv.set("global", "big", b"x" * 500)
    assert kv.keys("global") == ["small"]  # nothing was evicted for it


def test_sql_deletes_expired_rows_lazily(sqlite_engine: Engine) -> None:
    kv = SqlKv(_empty(sqlite_engine), purge_interval_s=None)

    def rows() -> int:
        with sqlite_engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(KvEntry)) or 0

    kv.set("global", "a", b"1", ttl_ms=30)
    kv.set("global", "b", b"1", ttl_ms=30)
    kv.set("global", "c", b"1")
    time.sleep(0.08)
    assert rows() == 3
    assert kv.get("global", "a") is None
    assert rows() == 2  # the read removed the expired row
    assert kv.purge_expired() == 1
    assert rows() == 1


def test_sql_sweeps_expired_rows_on_writes(sqlite_engine: Engine) -> None:
    kv = SqlKv(_empty(sqlite_engine), purge_interval_s=0.05)
    kv.set("fn:x", "old", b"1", ttl_ms=20)
    time.sleep(0.1)
    kv.set("fn:x", "new", b"1")  # this write is due a sweep
    with sqlite_engine.connect() as conn:
        assert list(conn.scalars(select(KvEntry.key))) == ["new"]


@pytest.mark.parametrize("engine_fixture", ["sqlite_engine", "pg_engine"])
def test_sql_refuses_nul_in_keys(request: pytest.FixtureRequest, engine_fixture: str) -> None:
    """PostgreSQL text cannot hold NUL: such a key is refused on write, absent on read."""
    kv = SqlKv(_empty(request.getfixturevalue(engine_fixture)))
    with pytest.raises(KvError):
        kv.set("global", "a\x00b", b"x")
    with pytest.raises(KvError):
        kv.incr("global", "a\x00b", 1)
    assert kv.get("global", "a\x00b") is None
    assert kv.pttl("global", "a\x00b") == -2
    assert kv.delete("global", "a\x00b") is False
    assert kv.expire("global", "a\x00b", 1000) is False
    assert kv.keys("global", "a\x00*") == []


def test_two_sql_stores_share_one_database(tmp_path: Path) -> None:
    """Worker processes each build their own store over the same database."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = make_engine(url), make_engine(url)
    upgrade(first)
    try:
        a, b = SqlKv(first), SqlKv(second)
        in_threads(4, lambda i: [(a if i % 2 else b).incr("global", "n", 1) for _ in range(25)])
        assert a.get("global", "n") == b"100"
        assert b.set("global", "n", b"x", only_if_absent=True) is False
    finally:
        first.dispose()
        second.dispose()


def test_redis_layout(redis_client: redis.Redis, redis_prefix: str) -> None:
    kv = RedisKv(REDIS_URL, prefix=redis_prefix)
    try:
        kv.set("fn:a", "k/1", b"v", ttl_ms=60_000)
        # <prefix><scope length in bytes>:<scope>:<key>
        assert redis_client.get(f"{redis_prefix}4:fn:a:k/1") == b"v"
        assert 50_000 < redis_client.pttl(f"{redis_prefix}4:fn:a:k/1") <= 60_000
        redis_client.set(f"{redis_prefix}6:global:made-outside", b"7")
        assert kv.incr("global", "made-outside", 1) == 8
        # The scope's length keeps `global` + `b:cfg` apart from `global:b` + `cfg`.
        kv.set("global", "b:cfg", b"operator")
        kv.set("global:b", "cfg", b"tenant")
        assert redis_client.get(f"{redis_prefix}6:global:b:cfg") == b"operator"
        assert redis_client.get(f"{redis_prefix}8:global:b:cfg") == b"tenant"
        assert (kv.get("global", "b:cfg"), kv.get("global:b", "cfg")) == (b"operator", b"tenant")
        assert kv.keys("global", "b*") == ["b:cfg"] and kv.keys("global:b") == ["cfg"]
        assert kv.drop_scope("global:b") == 1
        assert kv.get("global", "b:cfg") == b"operator"
    finally:
        kv.close()


def test_redis_unavailable_is_not_a_kv_error() -> None:
    """A store that cannot be reached raises the client's error, not KvError: callers must
    be able to tell "Redis is down" from "this value is not a counter"."""
    kv = RedisKv("redis://127.0.0.1:1/0", timeout_s=1)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            kv.get("global", "k")
        with pytest.raises(redis.exceptions.ConnectionError):
            kv.incr("global", "k", 1)
    finally:
        kv.close()


# -- usage and quotas per namespace (host/kv/quota.py) ------------------------------------------


def test_usage_counts_one_namespace_over_its_scopes(store: KvStore) -> None:
    for scope, key in [("fn:b~x", "k1"), ("fn:b~y", "k2"), ("global:b", "cfg")]:
        store.set(scope, key, b"12345")
    for scope, key in [("fn:c~x", "k"), ("global:c", "k"), ("global", "b:cfg"), ("fn:x", "k")]:
        store.set(scope, key, b"1")
    store.set("fn:b~x", "gone", b"1", ttl_ms=50)
    time.sleep(0.1)
    assert store.usage("b") == (3, 2 + 2 + 3 + 3 * 5)  # type: ignore[attr-defined]
    assert store.usage("c") == (2, 4)  # type: ignore[attr-defined]
    assert store.usage("default") == (2, len("b:cfg") + 1 + 2)  # type: ignore[attr-defined]
    assert store.usage("nobody") == (0, 0)  # type: ignore[attr-defined]


def _quota(store: KvStore, keys: int, size: int = 0, refresh_s: float = 0.0) -> QuotaKv:
    held = QuotaKv(store, refresh_s=refresh_s)  # type: ignore[arg-type]
    held.limits = lambda ns: (keys, size) if ns == "b" else (0, 0)
    return held


@pytest.mark.parametrize("refresh_s", [0.0, 3600.0])
def test_key_quota_counts_every_scope_of_the_namespace(store: KvStore, refresh_s: float) -> None:
    kv = _quota(store, 4, refresh_s=refresh_s)
    kv.set("fn:b~x", "a", b"1")
    kv.set("fn:b~y", "b", b"1")
    kv.set("global:b", "c", b"1")
    kv.incr("global:b", "n", 1)
    with pytest.raises(KvQuotaExceeded, match="quota of 4 keys"):
        kv.set("fn:b~x", "new", b"1")
    with pytest.raises(KvQuotaExceeded):
        kv.incr("fn:b~z", "n", 1)
    # Rewriting a key it has is not a new key; other namespaces are not held.
    kv.set("fn:b~x", "a", b"2")
    assert kv.incr("global:b", "n", 1) == 2
    kv.set("global", "b:new", b"operator")
    kv.set("fn:c~x", "new", b"c")
    assert kv.get("fn:b~x", "new") is None and store.usage("b")[0] == 4  # type: ignore[attr-defined]
    if refresh_s == 0.0:  # a delete frees a key as soon as the namespace is counted again
        assert kv.delete("fn:b~y", "b")
        kv.set("fn:b~x", "new", b"1")


def test_byte_quota(store: KvStore) -> None:
    kv = _quota(store, 0, size=20)
    kv.set("fn:b~x", "k", b"v" * 9)  # 10 bytes
    with pytest.raises(KvQuotaExceeded, match="quota of 20 bytes"):
        kv.set("global:b", "k2", b"v" * 9)  # 11 more
    kv.set("fn:b~x", "k", b"v" * 19)  # a rewrite that still fits
    with pytest.raises(KvQuotaExceeded):
        kv.set("fn:b~x", "k", b"v" * 20)
    assert kv.get("fn:b~x", "k") == b"v" * 19


def test_key_quota_holds_under_threads(store: KvStore) -> None:
    kv = _quota(store, 25, refresh_s=0.005)
    refused = []

    def writer(i: int) -> None:
        for j in range(40):
            try:
                kv.set(f"fn:b~f{i % 3}", f"k{i}-{j}", b"x")
            except KvQuotaExceeded:
                refused.append(1)

    in_threads(6, writer)
    assert store.usage("b")[0] == 25  # type: ignore[attr-defined]
    assert len(refused) == 6 * 40 - 25
