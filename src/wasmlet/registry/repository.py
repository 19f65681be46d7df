"""SQL operations on functions, versions and invocation records. No wasm in here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from wasmlet.errors import InvalidRequest, NotFound
from wasmlet.names import DEFAULT_NAMESPACE, SEPARATOR, namespace_of
from wasmlet.registry.db import rowcount
from wasmlet.registry.models import (
    BlobGrant,
    Function,
    InvocationRecord,
    Version,
    table_of,
    utcnow,
)
from wasmlet.registry.views import FunctionView, InvocationView, VersionView


def version_digest(module_digest: str, spec: dict[str, Any]) -> str:
    """A version is its module plus its resolved spec: same bytes, same spec, same digest."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(f"{module_digest}\n{canonical}".encode()).hexdigest()


def _version_view(v: Version, active_id: int | None) -> VersionView:
    return VersionView(
        digest=v.digest,
        module_digest=v.module_digest,
        seq=v.seq,
        abi=v.abi,
        size=v.size,
        spec=v.spec,
        exports=v.exports.get("functions", {}),
        wasi=bool(v.exports.get("wasi")),
        created_at=v.created_at,
        active=v.id == active_id,
    )


def _function_view(f: Function) -> FunctionView:
    active = next((v for v in f.versions if v.id == f.active_version_id), None)
    return FunctionView(
        name=f.name,
        active_version=_version_view(active, f.active_version_id) if active else None,
        version_count=len(f.versions),
        created_at=f.created_at,
        updated_at=f.updated_at,
    )


def _lock_for_write(s: Session) -> None:
    """Take the database write lock now, before reading what the write depends on.

    PostgreSQL honours the SELECT ... FOR UPDATE that follows; SQLite ignores it, but any
    write statement at the start of a transaction takes its (database-wide) RESERVED lock,
    so concurrent writers queue here instead of reading the same max(seq).
    """
    if s.get_bind().dialect.name == "sqlite":
        s.execute(text("UPDATE functions SET name = name WHERE 0 = 1"))


class Repository:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # -- functions and versions ------------------------------------------------------------

    def _load(self, s: Session, name: str) -> Function:
        f = s.scalar(
            select(Function).where(Function.name == name).options(selectinload(Function.versions))
        )
        if f is None:
            raise NotFound(f"function {name!r} not found")
        return f

    # -- blobs by digest ---------------------------------------------------------------------

    def grant_blob(self, namespace: str, digest: str) -> None:
        """`namespace` uploaded these bytes: it may deploy them by digest."""
        with self.sessions.begin() as s:
            found = s.get(BlobGrant, (namespace, digest))
            if found is None:
                s.add(BlobGrant(namespace=namespace, digest=digest))

    def may_use_blob(self, namespace: str, digest: str) -> bool:
        """Whether `namespace` holds these module bytes: it uploaded them, or one of its
        versions is made of them. Knowing a digest is not enough: another tenant's module
        must not be deployable (or even confirmed to exist) by naming it."""
        with self.sessions() as s:
            if s.get(BlobGrant, (namespace, digest)) is not None:
                return True
            names = s.scalars(
                select(Function.name)
                .join(Version, Version.function_id == Function.id)
                .where(Version.module_digest == digest)
            )
            return any(namespace_of(name) == namespace for name in names)

    def namespace_usage(self, namespace: str) -> tuple[set[str], int]:
        """Names of a namespace's functions and the bytes of all their versions' modules."""
        mine = (
            ~Function.name.contains(SEPARATOR)
            if namespace == DEFAULT_NAMESPACE
            else Function.name.startswith(namespace + SEPARATOR, autoescape=True)
        )
        with self.sessions() as s:
            rows = s.execute(
                select(Function.name, func.coalesce(func.sum(Version.size), 0))
                .join(Version, Version.function_id == Function.id, isouter=True)
                .where(mine)
                .group_by(Function.name)
            ).all()
        names = {n for n, _ in rows if namespace_of(n) == namespace}
        return names, sum(int(size) for n, size in rows if n in names)

    def list_functions(self) -> list[FunctionView]:
        with self.sessions() as s:
            rows = s.scalars(
                select(Function).options(selectinload(Function.versions)).order_by(Function.name)
            )
            return [_function_view(f) for f in rows]

    def get_function(self, name: str) -> FunctionView:
        with self.sessions() as s:
            return _function_view(self._load(s, name))

    def active_version(self, name: str) -> VersionView:
        view = self.get_function(name)
        if view.active_version is None:
            raise NotFound(f"function {name!r} has no active version")
        return view.active_version

    def versions(self, name: str) -> list[VersionView]:
        with self.sessions() as s:
            f = self._load(s, name)
            return [_version_view(v, f.active_version_id) for v in reversed(f.versions)]

    def add_version(
        self,
        name: str,
        *,
        module_digest: str,
        size: int,
        abi: str,
        spec: dict[str, Any],
        exports: dict[str, Any],
    ) -> tuple[FunctionView, bool]:
        """Record a version and make it active. Returns (function, created a new version)."""
        digest = version_digest(module_digest, spec)
        for attempt in range(3):
            try:
                with self.sessions.begin() as s:
                    _lock_for_write(s)
                    f = s.scalar(
                        select(Function)
                        .where(Function.name == name)
                        .options(selectinload(Function.versions))
                        .with_for_update()
                    )
                    if f is None:
                        f = Function(name=name, created_at=utcnow(), updated_at=utcnow())
                        s.add(f)
                        s.flush()
                    existing = next((v for v in f.versions if v.digest == digest), None)
                    created = existing is None
                    if existing is None:
                        existing = Version(
                            function_id=f.id,
                            seq=max((v.seq for v in f.versions), default=0) + 1,
                            digest=digest,
                            module_digest=module_digest,
                            size=size,
                            abi=abi,
                            spec=spec,
                            exports=exports,
                            created_at=utcnow(),
                        )
                        s.add(existing)
                        s.flush()
                        f.versions.append(existing)
                    if f.active_version_id != existing.id:
                        f.active_version_id = existing.id
                        f.updated_at = utcnow()
                    s.flush()
                    return _function_view(f), created
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def activate(self, name: str, digest: str) -> FunctionView:
        """Point a name at one of its versions, by full digest or unique prefix."""
        wanted = digest if digest.startswith("sha256:") else f"sha256:{digest}"
        with self.sessions.begin() as s:
            f = self._load(s, name)
            matches = [v for v in f.versions if v.digest.startswith(wanted)]
            if not matches:
                raise NotFound(f"function {name!r} has no version {digest!r}")
            if len(matches) > 1:
                raise InvalidRequest(f"version prefix {digest!r} is ambiguous", status=422)
            f.active_version_id = matches[0].id
            f.updated_at = utcnow()
            s.flush()
            return _function_view(f)

    def delete_function(self, name: str) -> None:
        with self.sessions.begin() as s:
            f = self._load(s, name)
            s.execute(delete(InvocationRecord).where(InvocationRecord.function == name))
            s.delete(f)  # its versions go with it (ORM cascade)

    def active_versions(self) -> list[tuple[str, str, VersionView]]:
        """(name, identity, active version) of every function. The identity tells a function
        apart from an earlier one deleted under the same name (SQLite may reuse its id, so
        the creation time is part of it)."""
        with self.sessions() as s:
            rows = s.execute(
                select(Function.name, Function.id, Function.created_at, Version).join(
                    Version, Version.id == Function.active_version_id
                )
            )
            return [
                (name, f"{fid}@{created.timestamp()}", _version_view(v, v.id))
                for name, fid, created, v in rows
            ]

    def referenced_modules(self) -> set[str]:
        """Every module digest a version uses: its main module and any linked ones."""
        with self.sessions() as s:
            used = set(s.scalars(select(Version.module_digest).distinct()))
            for spec in s.scalars(select(Version.spec)):
                used.update((spec or {}).get("modules", {}).values())
            return used

    # -- invocation records ----------------------------------------------------------------

    def insert_invocations(self, records: Iterable[dict[str, Any]]) -> None:
        """Write records as multi-row INSERTs of up to 500 rows.

        Written against the DB-API directly: an ORM/Core executemany steps once per row,
        and the sqlite3 driver gives up the GIL at every step, so under load each row would
        cost the event-loop thread a forced thread switch; SQLAlchemy's compiler is too slow
        for thousand-parameter statements. One statement per chunk avoids both.
        """
        rows = list(records)
        if not rows:
            return
        table = table_of(InvocationRecord)
        columns = [c for c in table.columns if c.name != "id"]
        engine = self.sessions.kw["bind"]
        dialect = engine.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        convert = [(c.name, c.type.bind_processor(dialect)) for c in columns]
        one = "(" + ",".join([mark] * len(columns)) + ")"
        head = f"INSERT INTO {table.name} ({','.join(c.name for c in columns)}) VALUES "
        with engine.begin() as conn:
            for i in range(0, len(rows), 500):
                chunk = rows[i : i + 500]
                params: list[Any] = []
                for row in chunk:
                    for name, proc in convert:
                        value = row.get(name)
                        params.append(proc(value) if proc and value is not None else value)
                conn.exec_driver_sql(head + ",".join([one] * len(chunk)), tuple(params))

    def invocations(self, name: str, limit: int = 50) -> list[InvocationView]:
        with self.sessions() as s:
            rows = s.scalars(
                select(InvocationRecord)
                .where(InvocationRecord.function == name)
                .order_by(InvocationRecord.id.desc())
                .limit(limit)
            )
            return [InvocationView.model_validate(r, from_attributes=True) for r in rows]

    def prune_invocations(self, keep: int) -> int:
        """Keep the newest `keep` records of each function."""
        removed = 0
        with self.sessions.begin() as s:
            counts = s.execute(
                select(InvocationRecord.function, func.count())
                .group_by(InvocationRecord.function)
                .having(func.count() > keep)
            ).all()
            for name, _count in counts:
                cutoff = s.scalar(
                    select(InvocationRecord.id)
                    .where(InvocationRecord.function == name)
                    .order_by(InvocationRecord.id.desc())
                    .offset(keep)
                    .limit(1)
                )
                if cutoff is not None:
                    result = s.execute(
                        delete(InvocationRecord).where(
                            InvocationRecord.function == name, InvocationRecord.id <= cutoff
                        )
                    )
                    removed += rowcount(result)
        return removed
