"""Function secrets: encrypted at rest with the server's key, decrypted only in memory.

A secret is a (function, key) -> text value. The database holds a Fernet token (AES-128-CBC
plus HMAC-SHA256, from the `cryptography` package) of `function NUL key NUL value`: binding
the name and key into the authenticated plaintext means a token copied to another row, by
someone with write access to the database but not the key, fails to decrypt instead of
handing one function another's secret.

The key comes from the `secret_key` setting (`WASMLET_SECRET_KEY`), else from
`<data_dir>/secret.key`, generated once with mode 0600. Losing that file loses every secret,
so it is written completely under a temporary name and then hard-linked into place: the
link either succeeds or finds another worker's key already there, so workers that start
together agree on one key and none ever reads a half-written file.

Values never leave through the API and never appear in messages: errors name the function
and key, never the value. Each process keeps the decrypted values of the functions it runs
in a cache, dropped whenever the node's change counter moves (`registry/changes.py`), so a
secret set through any worker is seen by the next invocation in every worker.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import sqlalchemy
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from wasmlet.config import Settings
from wasmlet.errors import InvalidRequest, WasmletError
from wasmlet.names import is_valid_name
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.db import make_sessionmaker, rowcount
from wasmlet.registry.models import Secret, utcnow

log = logging.getLogger("wasmlet.secrets")

KEY_FILE = "secret.key"
KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
MAX_VALUE_BYTES = 64 * 1024
REDACTED = "[redacted]"
MIN_REDACT_LENGTH = 4
# Functions whose decrypted secrets one process keeps at a time (oldest dropped first).
_MAX_CACHED_FUNCTIONS = 4096
_GENERATE_HINT = (
    "generate one with: python -c "
    "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


class SecretKeyError(RuntimeError):
    """The configured or stored encryption key is unusable. Raised at startup; the message
    names where the key came from and never contains the key itself."""


class SecretUnreadable(WasmletError):
    """A stored secret does not decrypt with the current key (the key was changed or the
    row was tampered with). A server-side fault, not the caller's."""

    code = "internal"
    status = 500


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a secret: never its value."""

    key: str
    updated_at: datetime


# -- validation ----------------------------------------------------------------------------


def is_valid_key(key: str) -> bool:
    return isinstance(key, str) and KEY_RE.fullmatch(key) is not None


def check_function(function: str) -> str:
    if not isinstance(function, str) or not is_valid_name(function):
        raise InvalidRequest(
            f"invalid function name {function!r}: use 1-63 characters of a-z 0-9 - _ . "
            "starting with a letter or digit"
        )
    return function


def check_key(key: str) -> str:
    # The rejected key is not echoed: `secret set fn TOKEN=abc123` is an easy slip, and
    # then the "key" is the secret.
    if not is_valid_key(key):
        raise InvalidRequest(
            "invalid secret key: use 1-128 characters of A-Z a-z 0-9 _ . - "
            "starting with a letter or underscore"
        )
    return key


def encode_value(value: str) -> bytes:
    """The value as UTF-8, within the size limit. Messages describe it, never quote it."""
    if not isinstance(value, str):
        raise InvalidRequest("secret value must be a string")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("secret value is not valid UTF-8 text") from None
    if len(data) > MAX_VALUE_BYTES:
        raise InvalidRequest(f"secret value exceeds the {MAX_VALUE_BYTES}-byte limit")
    return data


# -- the encryption key --------------------------------------------------------------------


def _fernet(raw: str | bytes, where: str) -> Fernet:
    try:
        return Fernet(raw.strip())
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        raise SecretKeyError(
            f"{where} is not a valid Fernet key (32 bytes in url-safe base64, "
            f"44 characters); {_GENERATE_HINT}"
        ) from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_key_file(path: Path) -> bytes:
    """Write a new key under a private name, then link it into place (never replacing one).
    Returns whichever key ended up at `path`."""
    key = Fernet.generate_key() + b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        _fsync_dir(path.parent)
        log.info("generated a new secret key in %s", path)
    except FileExistsError:  # another process got there first: its key is the key
        key = path.read_bytes()
    finally:
        os.unlink(tmp)
    return key


def _key_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _create_key_file(path)
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key file {path}: {exc.strerror}") from None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        log.warning("secret key file %s is readable by other users; chmod 600 it", path)
    return data


def load_key(settings: Settings) -> Fernet:
    """The Fernet that encrypts this node's secrets: the configured key, else the key file."""
    configured = settings.secret_key
    if configured is not None:
        # Also accepts a pydantic SecretStr, should the setting become one (hidden in reprs).
        raw = configured.get_secret_value() if isinstance(configured, SecretStr) else configured
        return _fernet(raw, "the secret_key setting (WASMLET_SECRET_KEY)")
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_FILE
    return _fernet(_key_file(path), f"the secret key file {path}")


# -- encryption of one value ---------------------------------------------------------------


def _binding(function: str, key: str) -> bytes:
    return f"{function}\0{key}\0".encode()


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time wasmlet stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class _Loaded:
    """One function's secrets as this process last read them."""

    values: dict[str, str]
    unreadable: frozenset[str]


def _upsert(s: Session, row: dict[str, object]) -> None:
    """Insert or replace in one statement, so two concurrent sets cannot collide."""
    dialect = s.get_bind().dialect.name
    stmt: sqlite.Insert | postgresql.Insert
    if dialect == "sqlite":
        stmt = sqlite.insert(Secret).values(**row)
    elif dialect == "postgresql":
        stmt = postgresql.insert(Secret).values(**row)
    else:  # a dialect without ON CONFLICT: read-then-write inside the transaction
        s.merge(Secret(**row))
        return
    excluded = stmt.excluded
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=[Secret.function, Secret.key],
            set_={"ciphertext": excluded.ciphertext, "updated_at": excluded.updated_at},
        )
    )


class SecretStore:
    """Secrets of every function on this node. Safe to share between threads."""

    def __init__(self, engine: sqlalchemy.Engine, settings: Settings) -> None:
        self._fernet = load_key(settings)
        self._sessions = make_sessionmaker(engine)
        # An instance of our own: another watcher's `changed()` must not consume ours.
        self._signal = ChangeSignal(settings.data_dir)
        self._lock = threading.Lock()
        self._cache: dict[str, _Loaded] = {}
        self._generation = self._signal.generation

    # -- management ------------------------------------------------------------------------

    def set(self, function: str, key: str, value: str) -> SecretInfo:
        """Create or replace a secret."""
        check_function(function)
        check_key(key)
        token = self._fernet.encrypt(_binding(function, key) + encode_value(value))
        now = utcnow()
        with self._sessions.begin() as s:
            _upsert(s, {"function": function, "key": key, "ciphertext": token, "updated_at": now})
        self._signal.bump()
        return SecretInfo(key, now)

    def delete(self, function: str, key: str) -> bool:
        """Remove a secret; False when there was none."""
        with self._sessions.begin() as s:
            gone = rowcount(
                s.execute(delete(Secret).where(Secret.function == function, Secret.key == key))
            )
        if gone:
            self._signal.bump()
        return bool(gone)

    def drop_function(self, function: str) -> int:
        """Remove every secret of a function (when it is deleted for good); how many."""
        with self._sessions.begin() as s:
            gone = rowcount(s.execute(delete(Secret).where(Secret.function == function)))
        if gone:
            self._signal.bump()
        return gone

    def list_keys(self, function: str) -> list[SecretInfo]:
        """Keys and update times, by key. Nothing is decrypted."""
        with self._sessions() as s:
            rows = s.execute(
                select(Secret.key, Secret.updated_at)
                .where(Secret.function == function)
                .order_by(Secret.key)
            )
            return [SecretInfo(key, _utc(updated)) for key, updated in rows]

    # -- reading (the runtime's SecretSource) ----------------------------------------------

    def get(self, function: str, key: str) -> str | None:
        """The decrypted value, or None. Raises SecretUnreadable when it exists but does not
        decrypt with this server's key."""
        loaded = self._loaded(function)
        if key in loaded.unreadable:
            raise SecretUnreadable(
                f"secret {key!r} of function {function!r} cannot be decrypted with this "
                "server's key (was secret_key or the secret.key file changed?)"
            )
        return loaded.values.get(key)

    def values(self, function: str) -> list[str]:
        """Every value of a function that decrypts, for redaction. One that does not
        decrypt was never handed to the guest, so there is nothing of it to redact."""
        return list(self._loaded(function).values.values())

    # -- cache -----------------------------------------------------------------------------

    def _sync(self) -> int:
        """Drop the cache if anything changed on the node since it was filled (under lock)."""
        generation = self._signal.generation
        if generation != self._generation:
            self._cache.clear()
            self._generation = generation
        return generation

    def _loaded(self, function: str) -> _Loaded:
        with self._lock:
            generation = self._sync()
            hit = self._cache.get(function)
        if hit is not None:
            return hit
        # Read and decrypt outside the lock. A change committed during the read bumps the
        # counter, so what was read is cached only if the counter did not move meanwhile.
        loaded = self._load(function)
        with self._lock:
            if self._sync() == generation:
                if len(self._cache) >= _MAX_CACHED_FUNCTIONS:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[function] = loaded
        return loaded

    def _load(self, function: str) -> _Loaded:
        with self._sessions() as s:
            rows = s.execute(
                select(Secret.key, Secret.ciphertext).where(Secret.function == function)
            ).all()
        values: dict[str, str] = {}
        unreadable: set[str] = set()
        for key, token in rows:
            value = self._decrypt(function, key, token)
            if value is None:
                unreadable.add(key)
            else:
                values[key] = value
        return _Loaded(values, frozenset(unreadable))

    def _decrypt(self, function: str, key: str, token: bytes) -> str | None:
        binding = _binding(function, key)
        try:
            plain = self._fernet.decrypt(token)
        except InvalidToken:
            plain = b""
        if not plain.startswith(binding):
            log.warning(
                "secret %r of function %r does not decrypt with this server's key", key, function
            )
            return None
        return plain[len(binding) :].decode("utf-8")


# -- redaction -----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _pattern(values: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so a secret that contains another is replaced whole.
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of every secret value replaced by `[redacted]`.

    Values shorter than 4 characters are left alone: a secret like "1" or "ab" occurs by
    chance in almost any text, so replacing it would mangle logs while hiding nothing an
    attacker could not guess. Literal and URL-encoded occurrences are found; a guest that
    transforms a secret otherwise (splits, reverses it) before printing it is not caught.
    """
    values = tuple(sorted({f for v in secrets for f in _forms(v) if len(f) >= MIN_REDACT_LENGTH}))
    if not values or not text:
        return text
    return _pattern(values).sub(REDACTED, text)


def _forms(value: str) -> set[str]:
    """A secret as it may appear in a record: as is, and URL-encoded the ways a URL or a
    query string carries it (a guest that puts its secret in a URL gets it encoded)."""
    return {
        value,
        quote(value, safe=""),
        quote(value),
        quote(value, safe=_URL_SAFE),
        quote_plus(value),
        quote_plus(value, safe=_URL_SAFE),
        quote(value, safe="").lower(),
    }


# What httpx and browsers leave unencoded in a URL path or query.
_URL_SAFE = "/:@!$&'()*+,;=-._~"


def redact_all(value: Any, secrets: Iterable[str]) -> Any:
    """`value` (a string, or lists and dicts of them, as a record holds) with every secret
    redacted from every string in it, keys included."""
    found = tuple(secrets)
    if not found:
        return value
    if isinstance(value, str):
        return redact(value, found)
    if isinstance(value, dict):
        return {redact_all(k, found): redact_all(v, found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_all(v, found) for v in value]
    return value
