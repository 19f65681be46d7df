"""Management API for gateway routes: host and/or path prefix and methods -> a function.

Everything a route holds is validated and normalised here, at the edge, so the route table
(api/router.py) can compare plain strings: hosts lower-case, paths decoded and without a
trailing slash, methods upper-case and sorted. Every change bumps the registry generation,
which makes every worker process reload its table before its next request.

Who may route what: a route belongs to its function's namespace. A tenant's route names a
host assigned to the tenant (`wasmlet namespace hosts`, registry/hosts.py); the operator's
names a host no tenant has, or no host. No route claims wasmlet's own paths (RESERVED) for
any host or for a host the API answers on (`api_hosts`, the bind address). Refusals say
what the caller may not do, never which other namespace or route is in the way.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from wasmlet.api.access import caller, own_name, shown, visible
from wasmlet.api.deps import get_state
from wasmlet.api.router import METHODS, RESERVED, is_reserved
from wasmlet.api.state import AppState
from wasmlet.auth.keys import Principal
from wasmlet.errors import Conflict, Forbidden, InvalidRequest, NotFound
from wasmlet.hostnames import normalize_pattern, platform_hosts
from wasmlet.names import DEFAULT_NAMESPACE, is_valid_name, namespace_of
from wasmlet.registry.hosts import owners
from wasmlet.registry.routes import RouteStore, RouteView

router = APIRouter(prefix="/api/v1/routes", tags=["routes"])
State = Annotated[AppState, Depends(get_state)]
Caller = Annotated[Principal, Depends(caller)]

_MAX_PATH = 1024


def normalize_host(value: str | None) -> str:
    """Empty (any host), a DNS name, or `*.` and a DNS name; canonical (hostnames.py)."""
    host = (value or "").strip()
    return normalize_pattern(host) if host else ""


def normalize_path(value: str) -> str:
    """A path prefix as the route table compares it: percent-decoded (request paths arrive
    decoded), no trailing slash except for `/` itself."""
    path = unquote(value)
    if not path.startswith("/"):
        raise ValueError(f"path {value!r} must start with /")
    if len(path) > _MAX_PATH:
        raise ValueError(f"path is longer than {_MAX_PATH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise ValueError("path must not contain control characters")
    if ".." in path:
        raise ValueError(f"path {value!r} must not contain '..'")
    if "?" in path or "#" in path:
        raise ValueError(f"path {value!r} is a prefix of the path only: no '?' or '#'")
    path = path.rstrip("/") or "/"
    if "//" in path or "/./" in path + "/":
        raise ValueError(f"path {value!r} has an empty or '.' segment")
    return path


def normalize_methods(values: list[str]) -> list[str]:
    methods = sorted({m.strip().upper() for m in values})
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; use {', '.join(METHODS)}")
    return methods


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(
        default=None,
        max_length=300,
        description='Host name, or "*.example.com" for its sub-domains; empty: any host',
        examples=["geo.localhost"],
    )
    path: str = Field(
        default="/",
        max_length=3 * _MAX_PATH,  # room for percent-escapes; checked again once decoded
        description="Path prefix, matched at segment boundaries",
        examples=["/geo"],
    )
    methods: list[str] = Field(
        default_factory=list, description=f"Any of {', '.join(METHODS)}; empty: any method"
    )
    function: str = Field(description="The function to invoke; it need not exist yet")
    strip_prefix: bool = Field(
        default=False, description="Hand the function the path without the prefix"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str:
        return normalize_host(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return normalize_path(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return normalize_methods(value)

    @field_validator("function")
    @classmethod
    def _function(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(f"invalid function name {value!r}")
        return value


class RouteList(BaseModel):
    routes: list[RouteView]


class RouteDeleted(BaseModel):
    deleted: int


def _store(state: AppState) -> RouteStore:
    return RouteStore(state.repo.sessions)


def _own(state: AppState, principal: Principal, route_id: int) -> RouteView:
    """A route of the caller's namespace; others' routes do not exist for it. The operator
    reaches any route by id: a host assignment refused for a tenant's route names it."""
    route = _store(state).get(route_id)
    if not visible(principal, route.function) and not principal.operator:
        raise NotFound(f"route {route_id} not found")
    return route


def _shown(route: RouteView) -> RouteView:
    return route.model_copy(update={"function": shown(route.function)})


@router.get("", response_model=RouteList, summary="List gateway routes")
def list_routes(state: State, principal: Caller) -> RouteList:
    return RouteList(
        routes=[_shown(r) for r in _store(state).list_routes() if visible(principal, r.function)]
    )


@router.post(
    "",
    response_model=RouteView,
    status_code=201,
    summary="Add a gateway route",
    responses={
        403: {"description": "The host is not assigned to the route's namespace"},
        409: {"description": "A route already matches the same requests"},
    },
)
def add_route(state: State, principal: Caller, body: RouteIn) -> RouteView:
    host = body.host or ""
    function = own_name(principal, body.function)
    namespace = namespace_of(function)
    platform = platform_hosts(state.settings.api_hosts, state.settings.host)
    if is_reserved(body.path) and (not host or platform.touches(host)):
        raise InvalidRequest(
            f"path {body.path} is wasmlet's own ({', '.join(RESERVED)}): no route may claim "
            "it for any host, nor for a host the API answers on"
        )

    def may_route(s: Session) -> None:
        if owners(s).may_route(namespace, host):
            return
        if namespace == DEFAULT_NAMESPACE:
            # Only the operator gets here; which tenant has the host is theirs to look up.
            raise Conflict(
                f"host {host} (or a host it covers) is assigned to a tenant namespace; "
                "see wasmlet namespace hosts ls"
            )
        raise Forbidden(
            f"host {host} is not assigned to namespace {namespace}"
            if host
            else f"a route of namespace {namespace} must name a host assigned to it"
        )

    route = _store(state).add(
        host=host,
        path=body.path,
        methods=body.methods,
        function=function,
        strip_prefix=body.strip_prefix,
        check=may_route,
    )
    state.changes.bump()
    return _shown(route)


@router.get("/{route_id}", response_model=RouteView, summary="Describe a gateway route")
def get_route(state: State, principal: Caller, route_id: int) -> RouteView:
    route = _own(state, principal, route_id)
    # The operator sees another namespace's route with its function's full name.
    return _shown(route) if visible(principal, route.function) else route


@router.delete("/{route_id}", response_model=RouteDeleted, summary="Delete a gateway route")
def delete_route(state: State, principal: Caller, route_id: int) -> RouteDeleted:
    _own(state, principal, route_id)
    _store(state).delete(route_id)
    state.changes.bump()
    return RouteDeleted(deleted=route_id)
