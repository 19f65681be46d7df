"""The secret store on a real database: encryption at rest, the key, the cache, redaction."""

from __future__ import annotations

import multiprocessing
import sqlite3
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from wasmlet.config import Settings
from wasmlet.errors import InvalidRequest
from wasmlet.host.secrets import (
    KEY_FILE,
    MAX_VALUE_BYTES,
    SecretKeyError,
    SecretStore,
    SecretUnreadable,
    load_key,
    redact,
)
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.db import make_engine, upgrade

PLAIN = "correct-horse-battery-staple"


def settings(data_dir: Path, db_url: str | None = None, key: str | None = None) -> Settings:
    return Settings(data_dir=data_dir, database_url=db_url, secret_key=key)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def engine(data_dir: Path) -> Iterator[sa.Engine]:
    engine = make_engine(settings(data_dir).db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def unique(prefix: str = "fn") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the key -------------------------------------------------------------------------------


def test_key_file_is_private_and_reused_across_restarts(engine: sa.Engine, data_dir: Path) -> None:
    first = SecretStore(engine, settings(data_dir))
    path = data_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    first.set("app", "TOKEN", PLAIN)

    again = SecretStore(engine, settings(data_dir))  # a restart: same file, same key
    assert path.read_bytes() == key
    assert again.get("app", "TOKEN") == PLAIN
    assert [p.name for p in data_dir.iterdir() if p.name.endswith(".tmp")] == []


def _load_after(barrier: Any, data_dir: str, out: Any) -> None:
    barrier.wait()
    out.put(load_key(settings(Path(data_dir))).encrypt(b"probe"))


def test_workers_starting_together_agree_on_one_key(data_dir: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_load_after, args=(barrier, str(data_dir), out)) for _ in range(6)]
    for p in procs:
        p.start()
    tokens = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    key = Fernet((data_dir / KEY_FILE).read_bytes())
    # Every worker encrypted with the key that ended up in the file.
    assert [key.decrypt(t) for t in tokens] == [b"probe"] * 6
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE]


def test_configured_key_is_used_and_no_key_file_written(engine: sa.Engine, data_dir: Path) -> None:
    key = Fernet.generate_key().decode()
    store = SecretStore(engine, settings(data_dir, key=key))
    store.set("app", "TOKEN", PLAIN)
    assert not (data_dir / KEY_FILE).exists()
    assert SecretStore(engine, settings(data_dir, key=key)).get("app", "TOKEN") == PLAIN


def test_configured_key_from_environment(
    engine: sa.Engine, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("WASMLET_SECRET_KEY", key)
    from_env = Settings(data_dir=data_dir, database_url=None)
    assert from_env.secret_key is not None
    assert from_env.secret_key.get_secret_value() == key
    assert key not in repr(from_env)  # a printed settings object does not show it
    SecretStore(engine, from_env).set("app", "TOKEN", PLAIN)
    assert not (data_dir / KEY_FILE).exists()
    assert SecretStore(engine, settings(data_dir, key=key)).get("app", "TOKEN") == PLAIN


def test_configured_key_may_be_a_secret_str(engine: sa.Engine, data_dir: Path) -> None:
    key = Fernet.generate_key().decode()
    hidden = settings(data_dir).model_copy(update={"secret_key": SecretStr(key)})
    SecretStore(engine, hidden).set("app", "TOKEN", PLAIN)
    assert SecretStore(engine, settings(data_dir, key=key)).get("app", "TOKEN") == PLAIN
    assert not (data_dir / KEY_FILE).exists()


@pytest.mark.parametrize("bad", ["hunter2-not-a-key", "", Fernet.generate_key().decode()[:-4]])
def test_invalid_configured_key_is_a_clear_error_that_hides_the_key(
    engine: sa.Engine, data_dir: Path, bad: str
) -> None:
    with pytest.raises(SecretKeyError) as caught:
        SecretStore(engine, settings(data_dir, key=bad))
    message = str(caught.value)
    assert "secret_key" in message and "WASMLET_SECRET_KEY" in message
    assert "Fernet" in message
    if bad:
        assert bad not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_corrupt_key_file_names_the_file(engine: sa.Engine, data_dir: Path) -> None:
    (data_dir / KEY_FILE).write_text("hunter2-garbage\n")
    with pytest.raises(SecretKeyError) as caught:
        SecretStore(engine, settings(data_dir))
    assert str(data_dir / KEY_FILE) in str(caught.value)
    assert "hunter2" not in str(caught.value)


# -- at rest -------------------------------------------------------------------------------


def test_database_holds_only_ciphertext_that_needs_the_right_key(
    engine: sa.Engine, data_dir: Path
) -> None:
    store = SecretStore(engine, settings(data_dir))
    store.set("app", "TOKEN", PLAIN)
    engine.dispose()  # nothing cached in a pool connection: read the file as another process

    with sqlite3.connect(data_dir / "wasmlet.db") as db:
        rows = db.execute("SELECT function, key, ciphertext FROM secrets").fetchall()
    assert [(f, k) for f, k, _ in rows] == [("app", "TOKEN")]
    token = bytes(rows[0][2])
    assert PLAIN.encode() not in token
    # Not in the database files at all (main file and write-ahead log).
    for path in data_dir.glob("wasmlet.db*"):
        assert PLAIN.encode() not in path.read_bytes(), path.name

    right = Fernet((data_dir / KEY_FILE).read_bytes())
    assert right.decrypt(token).endswith(PLAIN.encode())
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(token)


def test_wrong_key_reads_fail_clearly_and_listing_still_works(
    engine: sa.Engine, data_dir: Path
) -> None:
    SecretStore(engine, settings(data_dir)).set("app", "TOKEN", PLAIN)
    other = SecretStore(engine, settings(data_dir, key=Fernet.generate_key().decode()))

    with pytest.raises(SecretUnreadable) as caught:
        other.get("app", "TOKEN")
    assert caught.value.status == 500
    assert "'TOKEN'" in caught.value.message and "'app'" in caught.value.message
    assert "key" in caught.value.message and PLAIN not in caught.value.message
    assert other.values("app") == []  # nothing was handed out, so nothing to redact
    assert other.get("app", "MISSING") is None
    assert [i.key for i in other.list_keys("app")] == ["TOKEN"]


def test_a_token_moved_to_another_function_does_not_decrypt(
    engine: sa.Engine, data_dir: Path
) -> None:
    store = SecretStore(engine, settings(data_dir))
    store.set("victim", "TOKEN", PLAIN)
    store.set("thief", "TOKEN", "placeholder")
    with engine.begin() as conn:  # someone with database access but not the key
        conn.execute(
            sa.text(
                "UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets "
                "WHERE function = 'victim') WHERE function = 'thief'"
            )
        )
    ChangeSignal(data_dir).bump()
    with pytest.raises(SecretUnreadable):
        store.get("thief", "TOKEN")
    assert store.get("victim", "TOKEN") == PLAIN


# -- operations (SQLite and PostgreSQL) ----------------------------------------------------


def test_set_replace_list_delete_drop(db_url: str, data_dir: Path) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    try:
        store = SecretStore(engine, settings(data_dir, db_url=db_url))
        fn = unique()
        first = store.set(fn, "B_KEY", "value-one")
        store.set(fn, "a.key-2", "value-two")
        replaced = store.set(fn, "B_KEY", "value-three")  # an upsert, not a second row
        assert replaced.updated_at >= first.updated_at
        assert replaced.updated_at.tzinfo is not None

        listed = store.list_keys(fn)
        assert [i.key for i in listed] == ["B_KEY", "a.key-2"]
        assert listed[0].updated_at == replaced.updated_at
        assert store.get(fn, "B_KEY") == "value-three"
        assert sorted(store.values(fn)) == ["value-three", "value-two"]
        assert store.list_keys(unique()) == []

        assert store.delete(fn, "B_KEY") is True
        assert store.delete(fn, "B_KEY") is False
        assert store.get(fn, "B_KEY") is None
        store.set(fn, "C", "value-four")
        assert store.drop_function(fn) == 2
        assert store.drop_function(fn) == 0
        assert store.list_keys(fn) == [] and store.values(fn) == []
    finally:
        engine.dispose()


def test_values_are_unicode_up_to_the_byte_limit(engine: sa.Engine, data_dir: Path) -> None:
    store = SecretStore(engine, settings(data_dir))
    biggest = "é" * (MAX_VALUE_BYTES // 2)  # two bytes each
    store.set("app", "BIG", biggest)
    assert store.get("app", "BIG") == biggest
    with pytest.raises(InvalidRequest) as caught:
        store.set("app", "BIG", biggest + "x")
    assert str(MAX_VALUE_BYTES) in caught.value.message
    assert "é" not in caught.value.message


@pytest.mark.parametrize(
    ("function", "key"),
    [("app", "TOKEN=hunter2-sekret"), ("app", "9starts-with-digit"), ("app", "x" * 129),
     ("app", ""), ("Bad_Name", "TOKEN"), ("../etc", "TOKEN")],
)  # fmt: skip
def test_invalid_names_and_keys_are_rejected(
    engine: sa.Engine, data_dir: Path, function: str, key: str
) -> None:
    store = SecretStore(engine, settings(data_dir))
    with pytest.raises(InvalidRequest) as caught:
        store.set(function, key, "hunter2-value")
    assert caught.value.status == 422
    assert "hunter2" not in caught.value.message
    assert store.list_keys(function) == []


def test_longest_valid_key(engine: sa.Engine, data_dir: Path) -> None:
    store = SecretStore(engine, settings(data_dir))
    key = "_" + "a" * 127
    store.set("app", key, PLAIN)
    assert store.get("app", key) == PLAIN


# -- the per-process cache -----------------------------------------------------------------


def test_cache_serves_reads_until_the_change_counter_moves(
    engine: sa.Engine, data_dir: Path
) -> None:
    reader = SecretStore(engine, settings(data_dir))
    writer = SecretStore(engine, settings(data_dir))  # as in another worker process
    assert reader.get("app", "TOKEN") is None  # cached: no secrets

    writer.set("app", "TOKEN", "first-value")
    assert reader.get("app", "TOKEN") == "first-value"

    # A write behind the store's back (no bump) is not seen: reads come from the cache...
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM secrets"))
    assert reader.get("app", "TOKEN") == "first-value"
    # ...until anything bumps the node's counter.
    ChangeSignal(data_dir).bump()
    assert reader.get("app", "TOKEN") is None

    writer.set("app", "TOKEN", "second-value")
    assert reader.get("app", "TOKEN") == "second-value"
    assert writer.delete("app", "TOKEN")
    assert reader.get("app", "TOKEN") is None
    writer.set("app", "OTHER", "third-value")
    assert writer.drop_function("app") == 1
    assert reader.values("app") == []


def test_concurrent_readers_and_writers_settle_on_the_last_value(
    engine: sa.Engine, data_dir: Path
) -> None:
    reader = SecretStore(engine, settings(data_dir))
    writer = SecretStore(engine, settings(data_dir))
    writer.set("app", "TOKEN", "value-0")
    written = {f"value-{i}" for i in range(40)}
    seen: list[str | None] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(200):
                seen.append(reader.get("app", "TOKEN"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 40):
        writer.set("app", "TOKEN", f"value-{i}")
    for t in threads:
        t.join()
    assert errors == []
    assert set(seen) <= written
    assert reader.get("app", "TOKEN") == "value-39"


# -- redaction -----------------------------------------------------------------------------


def test_redact_replaces_every_occurrence() -> None:
    text = f"token={PLAIN}; again {PLAIN}, other=s3cr3t!"
    expected = "token=[redacted]; again [redacted], other=[redacted]"
    assert redact(text, [PLAIN, "s3cr3t!"]) == expected


def test_redact_leaves_short_values_alone() -> None:
    assert redact("a=1 b=ab c=abc", ["1", "ab", "abc"]) == "a=1 b=ab c=abc"
    assert redact("code abcd!", ["abcd"]) == "code [redacted]!"


def test_redact_prefers_the_longest_overlapping_secret() -> None:
    # "pass" is inside "password123": the whole longer value must go, not leave "word123".
    assert redact("x password123 y pass", ["pass", "password123"]) == "x [redacted] y [redacted]"


def test_redact_treats_values_literally() -> None:
    assert redact("a.*b and a+b", ["a.*b"]) == "[redacted] and a+b"
    assert redact("line1\nline2 end", ["line1\nline2"]) == "[redacted] end"


def test_redact_with_nothing_to_do() -> None:
    assert redact("", [PLAIN]) == ""
    assert redact("no secrets here", []) == "no secrets here"
    assert redact("no secrets here", iter(["absent-value"])) == "no secrets here"
