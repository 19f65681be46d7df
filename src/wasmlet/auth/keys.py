"""API keys in the database, and the process's cache of keys it has verified.

Scopes: `read` (list and inspect), `deploy` (change functions, routes, KV, secrets),
`invoke` (call private functions), `metrics` (scrape /metrics, which names every tenant's
functions: only keys of the `default` namespace may hold it), `admin` (everything, and
keys; `metrics` only in `default`). A key acts only inside its namespace; an `admin` key
of the `default` namespace (the operator's) may also create and revoke keys of other
namespaces, which is how tenants are made.
"""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from wasmlet.auth import tokens
from wasmlet.errors import InvalidRequest, NotFound
from wasmlet.names import DEFAULT_NAMESPACE, NAMESPACE_RE
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.db import rowcount
from wasmlet.registry.models import ApiKey, utcnow
from wasmlet.registry.views import UtcDatetime

SCOPES = ("admin", "deploy", "invoke", "metrics", "read")
OPERATOR_SCOPES = frozenset({"metrics"})  # only for keys of the default namespace
ADMIN_KEY_FILE = "admin.key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: the key's namespace and what it may do."""

    key_id: str
    namespace: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def scrapes_metrics(self) -> bool:
        """May read /metrics: every tenant's function names, so the operator's keys only."""
        return self.namespace == DEFAULT_NAMESPACE and self.allows("metrics")

    @property
    def operator(self) -> bool:
        return self.namespace == DEFAULT_NAMESPACE and "admin" in self.scopes


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    namespace: str
    name: str
    scopes: list[str]
    created_at: UtcDatetime
    revoked_at: datetime | None = None


def check_namespace(namespace: str) -> str:
    if not NAMESPACE_RE.fullmatch(namespace):
        raise InvalidRequest(
            f"invalid namespace {namespace!r}: 1-32 of a-z, 0-9 and '-', starting alphanumeric"
        )
    return namespace


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidRequest(f"scopes must be some of {', '.join(SCOPES)}; got {scopes}")
    return sorted(set(scopes))


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        key_id=row.key_id,
        namespace=row.namespace,
        name=row.name,
        scopes=row.scopes.split(","),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@dataclass
class _Cache:
    generation: int = -1
    verified: dict[str, tuple[bytes, Principal]] = field(default_factory=dict)


class KeyStore:
    def __init__(self, sessions: sessionmaker[Session], data_dir: Path) -> None:
        self.sessions = sessions
        self.changes = ChangeSignal(data_dir)
        self._cache = _Cache()
        self._lock = threading.Lock()

    # -- management ------------------------------------------------------------------------

    def create(self, namespace: str, scopes: list[str], name: str = "") -> tuple[KeyInfo, str]:
        """A new key; the token is returned here and never again."""
        check_namespace(namespace)
        scopes = check_scopes(scopes)
        if namespace != DEFAULT_NAMESPACE and OPERATOR_SCOPES.intersection(scopes):
            raise InvalidRequest(
                f"scope {sorted(OPERATOR_SCOPES.intersection(scopes))[0]!r} is only for "
                f"keys of the {DEFAULT_NAMESPACE!r} namespace"
            )
        token = tokens.new_token()
        row = ApiKey(
            key_id=token.key_id,
            namespace=namespace,
            name=name[:100],
            scopes=",".join(scopes),
            secret_hash=tokens.hash_secret(token.secret),
            created_at=utcnow(),
        )
        with self.sessions.begin() as s:
            s.add(row)
            s.flush()
            info = _info(row)
        return info, str(token)

    def list(self, namespace: str | None = None) -> list[KeyInfo]:
        with self.sessions() as s:
            query = select(ApiKey).order_by(ApiKey.id)
            if namespace is not None:
                query = query.where(ApiKey.namespace == namespace)
            return [_info(r) for r in s.scalars(query)]

    def get(self, key_id: str) -> KeyInfo:
        with self.sessions() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
            if row is None:
                raise NotFound(f"key {key_id!r} not found")
            return _info(row)

    def revoke(self, key_id: str) -> bool:
        """Revoke a key everywhere at once (every worker reloads on the change signal)."""
        with self.sessions.begin() as s:
            done = rowcount(
                s.execute(
                    update(ApiKey)
                    .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
            )
        self.changes.bump()
        return bool(done)

    def count(self) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(ApiKey)) or 0

    # -- authentication ----------------------------------------------------------------------

    def cached(self, raw: str) -> Principal | None:
        """The principal of a token this process has verified before (constant-time check),
        or None: then call `authenticate` (slow, off the event loop)."""
        token = tokens.parse(raw)
        if token is None:
            return None
        self._expire_if_changed()
        hit = self._cache.verified.get(token.key_id)
        if hit is None:
            return None
        return hit[1] if hmac.compare_digest(hit[0], tokens.fingerprint(token.secret)) else None

    def authenticate(self, raw: str) -> Principal | None:
        """Check a token against the database (argon2); None when it is not a live key."""
        token = tokens.parse(raw)
        if token is None:
            return None
        self._expire_if_changed()
        with self.sessions() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_id == token.key_id))
            if row is None or row.revoked_at is not None:
                return None
            if not tokens.verify_secret(row.secret_hash, token.secret):
                return None
            principal = Principal(row.key_id, row.namespace, frozenset(row.scopes.split(",")))
        with self._lock:
            self._cache.verified[token.key_id] = (tokens.fingerprint(token.secret), principal)
        return principal

    def _expire_if_changed(self) -> None:
        generation = self.changes.generation
        if generation != self._cache.generation:
            with self._lock:
                self._cache = _Cache(generation)

    # -- first start -----------------------------------------------------------------------------

    def bootstrap(self, data_dir: Path) -> str | None:
        """On first start, create the operator's admin key and write it to a 0600 file.
        Returns the token when it was created now (to print once), else None."""
        path = data_dir / ADMIN_KEY_FILE
        if self.count():
            return None
        _, token = self.create(DEFAULT_NAMESPACE, ["admin"], "bootstrap admin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (token + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, 0o600)
        return token
