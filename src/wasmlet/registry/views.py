"""What the registry hands out: plain pydantic values, detached from any SQL session."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class VersionView(BaseModel):
    digest: str
    module_digest: str
    seq: int
    abi: str
    size: int
    spec: dict[str, Any]
    exports: dict[str, Any]
    wasi: bool
    created_at: datetime
    active: bool


class FunctionView(BaseModel):
    name: str
    active_version: VersionView | None
    version_count: int
    created_at: datetime
    updated_at: datetime


class InvocationView(BaseModel):
    id: int
    function: str
    version: str
    started_at: datetime
    duration_ms: float
    status: int
    error_code: str | None
    error_message: str | None
    peak_memory: int
    fuel_used: int | None
    instantiated: bool
    via: str
    logs: str
