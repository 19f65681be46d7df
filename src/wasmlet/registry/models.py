"""SQLAlchemy models. Schema changes go through Alembic (registry/migrations)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The Table a model is mapped to (declarative types `__table__` as any FromClause)."""
    table = model.__table__
    assert isinstance(table, Table)  # every model here is a plain mapped table
    return table


class Function(Base):
    __tablename__ = "functions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)  # qualified (names.py)
    # Not a foreign key: functions and versions would reference each other, which makes
    # creation order and deletes awkward on both SQLite and PostgreSQL. The repository keeps
    # it pointing at one of the function's own versions.
    active_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    versions: Mapped[list[Version]] = relationship(
        back_populates="function",
        foreign_keys="Version.function_id",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Version.seq",
    )
    active_version: Mapped[Version | None] = relationship(
        primaryjoin="foreign(Function.active_version_id) == Version.id", viewonly=True
    )


class Version(Base):
    """An immutable version: module bytes (by digest) plus the resolved spec."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("function_id", "digest", name="uq_versions_function_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(71))
    module_digest: Mapped[str] = mapped_column(String(71), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    abi: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    exports: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    function: Mapped[Function] = relationship(back_populates="versions", foreign_keys=[function_id])


class InvocationRecord(Base):
    __tablename__ = "invocations"
    __table_args__ = (Index("ix_invocations_function_id", "function", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(71))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    peak_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    fuel_used: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    instantiated: Mapped[bool] = mapped_column(default=False)
    via: Mapped[str] = mapped_column(String(16), default="api")
    logs: Mapped[str] = mapped_column(Text, default="")
    # Outbound HTTP calls the guest made: [{method, host, status, duration_ms}] or NULL.
    http_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)


class KvEntry(Base):
    """A key of the persistent key-value capability (SQL backend).

    `scope` is `global` or `fn:<function name>`; `expires_at` is Unix time in seconds (a
    float, so expiry compares the same way on every dialect), or NULL for no expiry.
    """

    __tablename__ = "kv_entries"

    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Secret(Base):
    """A function's secret, encrypted with the server's key (host/secrets.py)."""

    __tablename__ = "secrets"

    function: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Route(Base):
    """A gateway route: host and/or path prefix (and methods) -> a function."""

    __tablename__ = "routes"
    __table_args__ = (UniqueConstraint("host", "path_prefix", "methods", name="uq_routes_match"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(253), default="")  # "" = any host
    path_prefix: Mapped[str] = mapped_column(String(1024), default="/")
    methods: Mapped[str] = mapped_column(String(200), default="")  # "GET,POST"; "" = any
    function: Mapped[str] = mapped_column(String(100))
    strip_prefix: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key: only the argon2 hash of its secret is stored (auth/keys.py)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)  # public part of the token
    namespace: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    scopes: Mapped[str] = mapped_column(String(100))  # "admin" or e.g. "deploy,read"
    secret_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class NamespaceQuota(Base):
    """Per-namespace overrides of the default quotas (NULL: the server default)."""

    __tablename__ = "namespace_quotas"

    namespace: Mapped[str] = mapped_column(String(32), primary_key=True)
    requests_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_functions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_module_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Ceilings on what a function of the namespace may ask for in its spec.
    max_memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_timeout_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_fuel: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_pool_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Persistent and in-memory key-value use of the whole namespace.
    kv_max_keys: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kv_max_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Outbound HTTP destinations allowed beyond the public internet: comma-separated CIDRs
    # and host names (NULL: the node's egress_allow setting).
    egress_allow: Mapped[str | None] = mapped_column(Text, nullable=True)


class BlobGrant(Base):
    """Module bytes a namespace uploaded (POST /api/v1/blobs): it may deploy them by digest.
    Blobs are shared by content; naming one by digest is not proof of holding its bytes."""

    __tablename__ = "blob_grants"

    namespace: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NamespaceHost(Base):
    """A host name or pattern (`shop.example.com`, `*.shop.example.com`) the operator gave
    to a namespace: only that namespace may route it."""

    __tablename__ = "namespace_hosts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(32), index=True)
    pattern: Mapped[str] = mapped_column(String(253), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
