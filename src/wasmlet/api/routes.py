"""Management API for gateway routes: host and/or path prefix and methods -> a function.

Everything a route holds is validated and normalised here, at the edge, so the route table
(api/router.py) can compare plain strings: hosts lower-case, paths decoded and without a
trailing slash, methods upper-case and sorted. Every change bumps the registry generation,
which makes every worker process reload its table before its next request.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import unquote

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from wasmlet.api.access import caller, own_name, shown, visible
from wasmlet.api.deps import get_state
from wasmlet.api.router import METHODS, RESERVED, is_reserved
from wasmlet.api.state import AppState
from wasmlet.auth.keys import Principal
from wasmlet.errors import InvalidRequest, NotFound
from wasmlet.names import is_valid_name
from wasmlet.registry.routes import RouteStore, RouteView

router = APIRouter(prefix="/api/v1/routes", tags=["routes"])
State = Annotated[AppState, Depends(get_state)]
Caller = Annotated[Principal, Depends(caller)]

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
_MAX_PATH = 1024


def normalize_host(value: str | None) -> str:
    """Empty (any host), a DNS name, or `*.` and a DNS name; lower-cased."""
    host = (value or "").strip().lower()
    if not host:
        return ""
    if "://" in host or "/" in host:
        raise ValueError(f"host {host!r} must be a bare host name, without scheme or path")
    if ":" in host:
        raise ValueError(f"host {host!r} must not have a port: routes match any port")
    if len(host) > 253 or not _HOST_RE.fullmatch(host):
        raise ValueError(
            f"host {host!r} is not a DNS name (labels of a-z 0-9 -, optionally after '*.')"
        )
    return host


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
    """A route of the caller's namespace; others' routes do not exist for it."""
    route = _store(state).get(route_id)
    if not visible(principal, route.function):
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
    responses={409: {"description": "A route already matches the same requests"}},
)
def add_route(state: State, principal: Caller, body: RouteIn) -> RouteView:
    host = body.host or ""
    if not host and is_reserved(body.path):
        raise InvalidRequest(
            f"path {body.path} is wasmlet's own ({', '.join(RESERVED)}); "
            "only a route for a host may claim it"
        )
    route = _store(state).add(
        host=host,
        path=body.path,
        methods=body.methods,
        function=own_name(principal, body.function),
        strip_prefix=body.strip_prefix,
    )
    state.changes.bump()
    return _shown(route)


@router.get("/{route_id}", response_model=RouteView, summary="Describe a gateway route")
def get_route(state: State, principal: Caller, route_id: int) -> RouteView:
    return _shown(_own(state, principal, route_id))


@router.delete("/{route_id}", response_model=RouteDeleted, summary="Delete a gateway route")
def delete_route(state: State, principal: Caller, route_id: int) -> RouteDeleted:
    _own(state, principal, route_id)
    _store(state).delete(route_id)
    state.changes.bump()
    return RouteDeleted(deleted=route_id)
