"""Host assignments (scope `admin`): which namespace may route which host names.

The operator gives a tenant exact names and `*.domain` patterns; a tenant's admin key may
list its own. The rules they feed are in registry/hosts.py. Every change bumps the
registry generation: each worker rebuilds its route table, which checks every route
against the assignments again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from wasmlet.api.access import caller
from wasmlet.api.deps import get_state
from wasmlet.api.state import AppState
from wasmlet.auth.keys import Principal, check_namespace
from wasmlet.errors import Forbidden, InvalidRequest
from wasmlet.hostnames import normalize_pattern, platform_hosts
from wasmlet.registry.hosts import HostStore, HostView

router = APIRouter(prefix="/api/v1/namespaces", tags=["access"])
State = Annotated[AppState, Depends(get_state)]
Caller = Annotated[Principal, Depends(caller)]

_MAX_PATTERNS = 256


def _patterns(values: list[str]) -> list[str]:
    try:
        return list(dict.fromkeys(normalize_pattern(v) for v in values))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


class HostsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patterns: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        min_length=1,
        max_length=_MAX_PATTERNS,
        description='Host names and "*.example.com" patterns (its sub-domains); no port',
        examples=[["shop.example.com", "*.shop.example.com"]],
    )

    @field_validator("patterns")
    @classmethod
    def _normalised(cls, values: list[str]) -> list[str]:
        return [normalize_pattern(v) for v in values]


class HostList(BaseModel):
    hosts: list[HostView]


class HostsRemoved(BaseModel):
    namespace: str
    removed: list[str]
    routes_deleted: list[int] = Field(
        description="The namespace's routes for hosts it no longer has, deleted with them"
    )


def _store(state: AppState) -> HostStore:
    return HostStore(state.repo.sessions)


def _operator(principal: Principal) -> None:
    if not principal.operator:
        raise Forbidden("only the operator's admin key assigns hosts")


@router.get("/hosts", response_model=HostList, summary="Host assignments of every namespace")
def list_all_hosts(state: State, principal: Caller) -> HostList:
    """The operator sees every namespace's hosts; a tenant its own."""
    namespace = None if principal.operator else principal.namespace
    return HostList(hosts=_store(state).list_hosts(namespace))


@router.get("/{namespace}/hosts", response_model=HostList, summary="A namespace's hosts")
def list_hosts(state: State, principal: Caller, namespace: str) -> HostList:
    namespace = check_namespace(namespace)
    if namespace != principal.namespace and not principal.operator:
        raise Forbidden("only the operator's admin key manages other namespaces")
    return HostList(hosts=_store(state).list_hosts(namespace))


@router.post(
    "/{namespace}/hosts",
    response_model=HostList,
    summary="Assign host names or patterns to a namespace (operator only)",
    responses={409: {"description": "A pattern overlaps another namespace's hosts or routes"}},
)
def add_hosts(state: State, principal: Caller, namespace: str, body: HostsIn) -> HostList:
    _operator(principal)
    namespace = check_namespace(namespace)
    platform = platform_hosts(state.settings.api_hosts, state.settings.host)
    hosts = _store(state).assign(namespace, _patterns(body.patterns), platform)
    state.changes.bump()
    return HostList(hosts=hosts)


@router.delete(
    "/{namespace}/hosts",
    response_model=HostsRemoved,
    summary="Take host patterns from a namespace, with its routes for them (operator only)",
)
def remove_hosts(
    state: State,
    principal: Caller,
    namespace: str,
    pattern: Annotated[list[str], Query(min_length=1, max_length=_MAX_PATTERNS)],
) -> HostsRemoved:
    _operator(principal)
    namespace = check_namespace(namespace)
    removed, routes = _store(state).unassign(namespace, _patterns(pattern))
    state.changes.bump()
    return HostsRemoved(namespace=namespace, removed=removed, routes_deleted=routes)
