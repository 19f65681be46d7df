"""What the registry hands out: plain pydantic values, detached from any SQL session."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time wasmlet stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class VersionView(BaseModel):
    digest: str
    module_digest: str
    seq: int
    abi: str
    size: int
    spec: dict[str, Any]
    exports: dict[str, Any]
    wasi: bool
    created_at: UtcDatetime
    active: bool


class FunctionView(BaseModel):
    name: str
    active_version: VersionView | None
    version_count: int
    created_at: UtcDatetime
    updated_at: UtcDatetime


class InvocationView(BaseModel):
    id: int
    function: str
    version: str
    started_at: UtcDatetime
    duration_ms: float
    status: int
    error_code: str | None
    error_message: str | None
    peak_memory: int
    fuel_used: int | None
    instantiated: bool
    via: str
    logs: str
    http_calls: list[dict[str, Any]] | None = None
