"""API keys and namespace quotas (scope `admin`).

An admin key manages the keys of its own namespace. The operator (an admin key of the
`default` namespace) also creates keys for other namespaces, which is how a tenant comes
to exist, and sets namespace quotas.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from wasmlet.api.access import caller
from wasmlet.api.deps import get_state
from wasmlet.api.state import AppState
from wasmlet.auth.keys import KeyInfo, Principal, check_namespace, check_scopes
from wasmlet.errors import Forbidden, NotFound
from wasmlet.host.egress import check_egress_entries
from wasmlet.registry.models import NamespaceQuota
from wasmlet.registry.views import UtcDatetime

router = APIRouter(prefix="/api/v1", tags=["access"])
State = Annotated[AppState, Depends(get_state)]
Caller = Annotated[Principal, Depends(caller)]


class KeyOut(BaseModel):
    key_id: str
    namespace: str
    name: str
    scopes: list[str]
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[str] = Field(min_length=1, max_length=4)
    namespace: str | None = Field(None, max_length=32)
    name: str = Field("", max_length=100)


class CreatedKey(KeyOut):
    token: str = Field(description="the key itself: shown only in this response")


class ApiKeyList(BaseModel):
    keys: list[KeyOut]


class Revoked(BaseModel):
    revoked: bool


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_second: float | None = Field(None, ge=0, le=1e9)
    burst: int | None = Field(None, ge=0, le=2**31 - 1)
    max_concurrency: int | None = Field(None, ge=0, le=2**31 - 1)
    max_functions: int | None = Field(None, ge=0, le=2**31 - 1)
    max_module_bytes: int | None = Field(None, ge=0, le=2**62)
    max_memory_mb: int | None = Field(None, ge=0, le=2**31 - 1)
    max_timeout_ms: int | None = Field(None, ge=0, le=2**31 - 1)
    max_fuel: int | None = Field(None, ge=0, le=2**62)
    max_pool_size: int | None = Field(None, ge=0, le=2**31 - 1)
    kv_max_keys: int | None = Field(None, ge=0, le=2**31 - 1)
    kv_max_bytes: int | None = Field(None, ge=0, le=2**62)
    egress_allow: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        None,
        max_length=256,
        description="CIDRs and host names the namespace's guests may reach besides public "
        "addresses (null: the node's egress_allow)",
    )

    @field_validator("egress_allow")
    @classmethod
    def _egress(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            check_egress_entries(v)
        return v


class QuotaOut(QuotaBody):
    namespace: str


def _out(info: KeyInfo) -> KeyOut:
    return KeyOut(**asdict(info))


def _target(principal: Principal, namespace: str | None) -> str:
    namespace = check_namespace(namespace or principal.namespace)
    if namespace != principal.namespace and not principal.operator:
        raise Forbidden("only the operator's admin key manages other namespaces")
    return namespace


@router.post("/keys", response_model=CreatedKey, status_code=201, summary="Create an API key")
def create_key(state: State, principal: Caller, body: NewKey) -> CreatedKey:
    namespace = _target(principal, body.namespace)
    info, token = state.keys.create(namespace, check_scopes(body.scopes), body.name)
    return CreatedKey(**_out(info).model_dump(), token=token)


@router.get("/keys", response_model=ApiKeyList, summary="List API keys (never their secrets)")
def list_keys(state: State, principal: Caller, namespace: str | None = None) -> ApiKeyList:
    if namespace is None and principal.operator:
        return ApiKeyList(keys=[_out(k) for k in state.keys.list()])
    return ApiKeyList(keys=[_out(k) for k in state.keys.list(_target(principal, namespace))])


@router.delete("/keys/{key_id}", response_model=Revoked, summary="Revoke an API key")
def revoke_key(state: State, principal: Caller, key_id: str) -> Revoked:
    info = state.keys.get(key_id[:32])
    if info.namespace != principal.namespace and not principal.operator:
        raise NotFound(f"key {key_id!r} not found")
    return Revoked(revoked=state.keys.revoke(info.key_id))


def _operator(principal: Principal) -> None:
    if not principal.operator:
        raise Forbidden("only the operator's admin key sets quotas")


@router.get("/namespaces/{namespace}/quota", response_model=QuotaOut, summary="A namespace's quota")
def get_quota(state: State, principal: Caller, namespace: str) -> QuotaOut:
    namespace = _target(principal, namespace)
    return QuotaOut(namespace=namespace, **asdict(state.limiter.quota(namespace)))


@router.put(
    "/namespaces/{namespace}/quota",
    response_model=QuotaOut,
    summary="Override a namespace's quota (null fields: the server default)",
)
def set_quota(state: State, principal: Caller, namespace: str, body: QuotaBody) -> QuotaOut:
    _operator(principal)
    namespace = check_namespace(namespace)
    with state.repo.sessions.begin() as s:
        row = s.scalar(select(NamespaceQuota).where(NamespaceQuota.namespace == namespace))
        if row is None:
            row = NamespaceQuota(namespace=namespace)
            s.add(row)
        for field, value in body.model_dump().items():
            if field == "egress_allow" and value is not None:
                value = ",".join(value)
            setattr(row, field, value)
    state.changes.bump()
    state.limiter.reload()
    return QuotaOut(namespace=namespace, **asdict(state.limiter.quota(namespace)))
