"""What a function version is allowed and expected to do: its ABI, export, limits, grants.

A spec is validated at the edge (pydantic), resolved against platform defaults at deploy,
and stored in full with the version, so a version keeps behaving the same when platform
defaults change later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from wasmlet.config import Settings
from wasmlet.errors import InvalidRequest
from wasmlet.host.preopens import check_paths

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
_HOST_RE = re.compile(r"[A-Za-z0-9*.\-]{1,253}(:[0-9]{1,5})?")
_EXPORT_RE = re.compile(r"[^\x00-\x1f/]{1,256}")
# Capability grants: kv, kv:global, http, call:<function name>.
_GRANT_RE = re.compile(r"kv|kv:global|http|call:[a-z0-9][a-z0-9\-_.]{0,62}")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class SpecUpdate(BaseModel):
    """Fields a deploy or PATCH may set; None means "keep / use the default"."""

    model_config = ConfigDict(extra="forbid")

    abi: str | None = None
    export: str | None = None
    timeout_ms: int | None = Field(None, ge=1)
    memory_mb: int | None = Field(None, ge=1)
    fuel: int | None = Field(None, ge=0)
    config: dict[str, str] | None = None
    env: dict[str, str] | None = None
    allowed_hosts: list[str] | None = None
    reuse: bool | None = None
    pool_size: int | None = Field(None, ge=1, le=1024)
    wasi: bool | None = None
    max_var_bytes: int | None = Field(None, ge=0)
    max_http_response_bytes: int | None = Field(None, ge=0)
    content_type: str | None = Field(None, max_length=200)
    error_status: int | None = Field(None, ge=400, le=599)
    allowed_paths: dict[str, str] | None = None
    capabilities: list[str] | None = None
    visibility: Literal["public", "private"] | None = None
    allowed_methods: list[str] | None = None
    http_timeout_ms: int | None = Field(None, ge=1)

    @field_validator("capabilities")
    @classmethod
    def _grants(cls, v: list[str] | None) -> list[str] | None:
        for grant in v or []:
            if not _GRANT_RE.fullmatch(grant):
                raise ValueError(
                    f"unknown capability {grant!r}; grant kv, kv:global, http or call:<function>"
                )
        return sorted(set(v)) if v is not None else None

    @field_validator("allowed_methods")
    @classmethod
    def _methods(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        upper = sorted({m.upper() for m in v})
        bad = [m for m in upper if m not in _METHODS]
        if bad:
            raise ValueError(f"unknown HTTP method(s) {bad}")
        return upper

    @field_validator("allowed_paths")
    @classmethod
    def _paths(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        # Normalised; nested, overlapping or repeated folders refused (host/preopens.py).
        return check_paths(v) if v is not None else None

    @field_validator("export")
    @classmethod
    def _export(cls, v: str | None) -> str | None:
        if v is not None and not _EXPORT_RE.fullmatch(v):
            raise ValueError("export must be 1-256 printable characters without '/'")
        return v

    @field_validator("config", "env")
    @classmethod
    def _keys(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            if not _KEY_RE.fullmatch(key):
                raise ValueError(f"invalid key {key!r}")
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str] | None) -> list[str] | None:
        for host in v or []:
            if not _HOST_RE.fullmatch(host):
                raise ValueError(f"invalid host pattern {host!r}")
        return v


class FunctionSpec(BaseModel):
    """A fully resolved spec, as stored with a version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    abi: str
    export: str
    timeout_ms: int
    memory_mb: int
    fuel: int | None = None
    config: dict[str, str] = {}
    env: dict[str, str] = {}
    allowed_hosts: list[str] = []
    reuse: bool
    pool_size: int
    # Extism plugins: WASI grant, var store cap (0 disables vars), HTTP response cap, and
    # the content type of their output (default: JSON when it parses, else octet-stream).
    wasi: bool = False
    max_var_bytes: int = 1024 * 1024
    max_http_response_bytes: int = 50 * 1024 * 1024
    content_type: str | None = None
    # Status for a failure the guest reports itself (`guest_error`), e.g. 400 or 422.
    error_status: int = 500
    # WASI preopens (extism with wasi): folder under the function's own data folder ->
    # guest path; a `ro:` prefix makes it read-only.
    allowed_paths: dict[str, str] = {}
    # Extra modules linked by name (extism multi-module manifests): name -> module digest.
    modules: dict[str, str] = {}
    # Host capabilities granted (host/): kv, kv:global, http, call:<name>. None by default.
    capabilities: list[str] = []
    # Outbound HTTP: methods allowed (empty = any) and the per-request timeout (capped by
    # the time left in the call).
    allowed_methods: list[str] = []
    http_timeout_ms: int = 10_000
    # `public`: anyone may invoke it; `private`: only keys with the invoke scope of its
    # namespace (api/access.py).
    visibility: Literal["public", "private"] = "private"

    def grants(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_update(data: dict[str, Any]) -> SpecUpdate:
    try:
        return SpecUpdate.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise InvalidRequest(f"invalid spec field {where}: {first['msg']}") from None


# Spec fields a namespace's quota puts a ceiling on (auth/quotas.py `ceilings_of`).
CEILING_FIELDS = ("memory_mb", "timeout_ms", "fuel", "pool_size")


def check_limits(
    update: SpecUpdate, settings: Settings, ceilings: Mapping[str, int] | None = None
) -> None:
    """Refuse (422) a field asked above the node's maximum or the namespace's ceiling
    (`ceilings`: field -> ceiling, 0 or absent = none)."""
    if update.timeout_ms is not None and update.timeout_ms > settings.max_timeout_ms:
        raise InvalidRequest(f"timeout_ms may be at most {settings.max_timeout_ms}")
    if update.memory_mb is not None and update.memory_mb > settings.max_memory_mb:
        raise InvalidRequest(f"memory_mb may be at most {settings.max_memory_mb}")
    for field in ("max_var_bytes", "max_http_response_bytes"):
        value, most = getattr(update, field), getattr(settings, field)
        if value is not None and value > most:
            raise InvalidRequest(f"{field} may be at most {most}")
    for field in CEILING_FIELDS:
        ceiling = (ceilings or {}).get(field, 0)
        value = getattr(update, field)
        if ceiling and value is not None and value > ceiling:
            raise InvalidRequest(
                f"{field} may be at most {ceiling} in this namespace (its quota's ceiling)"
            )


def within_ceilings(values: dict[str, Any], ceilings: Mapping[str, int]) -> dict[str, Any]:
    """`values` (a spec's fields) with every limit over its ceiling lowered to it; a spec
    without fuel gets the fuel ceiling as its fuel. A version stored before a ceiling was
    lowered runs this way, and a new version's defaults are cut so."""
    for field in CEILING_FIELDS:
        ceiling = ceilings.get(field, 0)
        value = values.get(field)
        if ceiling and (value is None or value > ceiling):
            values[field] = ceiling
    return values


def clamp(spec: FunctionSpec, ceilings: Mapping[str, int]) -> FunctionSpec:
    """`spec` held to `ceilings` (the same object when it is within them)."""
    values = within_ceilings({f: getattr(spec, f) for f in CEILING_FIELDS}, ceilings)
    changed = {f: v for f, v in values.items() if getattr(spec, f) != v}
    return spec.model_copy(update=changed) if changed else spec


def merge(base: FunctionSpec, update: SpecUpdate) -> dict[str, Any]:
    """Apply the fields an update sets on top of an existing spec."""
    merged = base.canonical()
    merged.update(update.model_dump(exclude_none=True))
    return merged
