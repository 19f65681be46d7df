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
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Function(Base):
    __tablename__ = "functions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
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
    function: Mapped[str] = mapped_column(String(63))
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
