"""Management routes: deploy, list, inspect, patch, roll back, delete, invocation records.

Handlers are plain `def`s: FastAPI runs them on its thread pool, which is where blocking
SQL and compilation belong.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile
from pydantic import BaseModel

from wasmlet.api.access import caller, function_name, own_name, shown, visible
from wasmlet.api.deps import get_state
from wasmlet.api.state import AppState
from wasmlet.auth.keys import Principal
from wasmlet.errors import InvalidRequest, PayloadTooLarge
from wasmlet.names import check_name
from wasmlet.registry.views import FunctionView, InvocationView, VersionView
from wasmlet.spec import parse_update

router = APIRouter(prefix="/api/v1/functions", tags=["functions"])
State = Annotated[AppState, Depends(get_state)]
Caller = Annotated[Principal, Depends(caller)]
FnName = Annotated[str, Depends(function_name)]


class FunctionList(BaseModel):
    functions: list[FunctionView]


class VersionList(BaseModel):
    versions: list[VersionView]


class InvocationList(BaseModel):
    invocations: list[InvocationView]


class Deleted(BaseModel):
    deleted: str
    blobs_removed: int


class RollbackBody(BaseModel):
    digest: str


def pairs(values: list[str] | None, what: str) -> dict[str, str] | None:
    """Turn repeated `K=V` form fields into a dict."""
    if not values:
        return None
    out = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidRequest(f"{what} entries must look like KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def paths(values: list[str] | None) -> dict[str, str] | None:
    """Turn repeated `SUBDIR:GUEST` fields (SUBDIR may start with `ro:`) into a dict."""
    if not values:
        return None
    out = {}
    for item in values:
        read_only = item.startswith("ro:")
        host, colon, guest = item.removeprefix("ro:").partition(":")
        if not colon or not host or not guest:
            raise InvalidRequest(f"allowed_path entries look like SUBDIR:/guest, got {item!r}")
        key = ("ro:" if read_only else "") + host
        if key in out:  # a dict would keep the last silently
            raise InvalidRequest(f"allowed_path {host!r} is given twice")
        out[key] = guest
    return out


@router.post(
    "",
    response_model=FunctionView,
    status_code=201,
    summary="Deploy a function (a new version, or the same version again)",
    responses={200: {"description": "These bytes and spec were already deployed"}},
)
def deploy(
    state: State,
    principal: Caller,
    response: Response,
    name: Annotated[str, Form(max_length=200)],
    file: Annotated[UploadFile, File(description=".wasm or .wat module")],
    spec: Annotated[str | None, Form(description="JSON object of spec fields")] = None,
    abi: Annotated[str | None, Form()] = None,
    export: Annotated[str | None, Form()] = None,
    timeout_ms: Annotated[int | None, Form()] = None,
    memory_mb: Annotated[int | None, Form()] = None,
    fuel: Annotated[int | None, Form()] = None,
    reuse: Annotated[bool | None, Form()] = None,
    pool_size: Annotated[int | None, Form()] = None,
    config: Annotated[list[str] | None, Form(description="KEY=VALUE, repeatable")] = None,
    env: Annotated[list[str] | None, Form(description="KEY=VALUE, repeatable")] = None,
    allowed_host: Annotated[list[str] | None, Form(description="repeatable")] = None,
    wasi: Annotated[bool | None, Form(description="extism: grant WASI")] = None,
    max_var_bytes: Annotated[int | None, Form(description="extism: var store cap")] = None,
    max_http_response_bytes: Annotated[int | None, Form()] = None,
    content_type: Annotated[str | None, Form(description="content type of the output")] = None,
    error_status: Annotated[int | None, Form(description="status of guest errors")] = None,
    allowed_path: Annotated[
        list[str] | None, Form(description="SUBDIR:GUEST_PATH (ro:SUBDIR read-only), repeatable")
    ] = None,
    visibility: Annotated[
        str | None, Form(description="public (no key needed to invoke) or private")
    ] = None,
    capability: Annotated[
        list[str] | None,
        Form(description="grant a host capability: kv, kv:global, http, call:NAME; repeatable"),
    ] = None,
    allowed_method: Annotated[
        list[str] | None, Form(description="outbound HTTP methods allowed; repeatable")
    ] = None,
    http_timeout_ms: Annotated[int | None, Form(description="outbound HTTP timeout")] = None,
    module: Annotated[
        list[UploadFile] | None,
        File(description="extism: further modules linked by name, repeatable"),
    ] = None,
    module_name: Annotated[
        list[str] | None, Form(description="the name of each `module` part, in order")
    ] = None,
) -> FunctionView:
    name = own_name(principal, check_name(name))
    fields: dict[str, Any] = {}
    if spec:
        try:
            fields = json.loads(spec)
        except ValueError:
            raise InvalidRequest("spec is not valid JSON", status=400) from None
        if not isinstance(fields, dict):
            raise InvalidRequest("spec must be a JSON object")
    for key, value in {
        "abi": abi,
        "export": export,
        "timeout_ms": timeout_ms,
        "memory_mb": memory_mb,
        "fuel": fuel,
        "reuse": reuse,
        "pool_size": pool_size,
        "config": pairs(config, "config"),
        "env": pairs(env, "env"),
        "allowed_hosts": allowed_host,
        "wasi": wasi,
        "max_var_bytes": max_var_bytes,
        "max_http_response_bytes": max_http_response_bytes,
        "content_type": content_type,
        "error_status": error_status,
        "allowed_paths": paths(allowed_path),
        "capabilities": capability,
        "visibility": visibility,
        "allowed_methods": allowed_method,
        "http_timeout_ms": http_timeout_ms,
    }.items():
        if value is not None:
            fields[key] = value
    update = parse_update(fields)
    limit = state.settings.max_module_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"module exceeds the {limit}-byte limit")
    extras: dict[str, bytes] = {}
    if module or module_name:
        if len(module or []) != len(module_name or []):
            raise InvalidRequest("give one module_name per module part")
        for part, part_name in zip(module or [], module_name or [], strict=True):
            if part_name in extras:
                raise InvalidRequest(f"module name {part_name!r} given twice")
            extras[part_name] = part.file.read(limit + 1)
            if len(extras[part_name]) > limit:
                raise PayloadTooLarge(f"module {part_name!r} exceeds the {limit}-byte limit")
    view, created = state.deployer.deploy(name, data, update, extras)
    response.status_code = 201 if created else 200
    return _shown(view)


@router.get("", response_model=FunctionList, summary="List functions")
def list_functions(state: State, principal: Caller) -> FunctionList:
    return FunctionList(
        functions=[_shown(v) for v in state.repo.list_functions() if visible(principal, v.name)]
    )


@router.get("/{name}", response_model=FunctionView, summary="Describe a function")
def get_function(state: State, name: FnName) -> FunctionView:
    return _shown(state.repo.get_function(name))


@router.patch(
    "/{name}",
    response_model=FunctionView,
    summary="Change limits or config: a new version of the same module, no re-upload",
)
def patch_function(state: State, name: FnName, body: dict[str, Any]) -> FunctionView:
    return _shown(state.deployer.patch(name, parse_update(body)))


@router.delete("/{name}", response_model=Deleted, summary="Delete a function and its versions")
def delete_function(state: State, name: FnName) -> Deleted:
    removed = state.deployer.delete(name)
    return Deleted(deleted=shown(name), blobs_removed=removed)


@router.get("/{name}/versions", response_model=VersionList, summary="Version history")
def list_versions(state: State, name: FnName) -> VersionList:
    return VersionList(versions=state.repo.versions(name))


@router.post(
    "/{name}/rollback", response_model=FunctionView, summary="Make an earlier version active"
)
def rollback(state: State, name: FnName, body: RollbackBody) -> FunctionView:
    return _shown(state.deployer.rollback(name, body.digest))


@router.get(
    "/{name}/invocations", response_model=InvocationList, summary="Recent invocation records"
)
def invocations(
    state: State, name: FnName, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> InvocationList:
    state.meter.flush()
    state.repo.get_function(name)
    records = state.repo.invocations(name, limit)
    return InvocationList(
        invocations=[r.model_copy(update={"function": shown(name)}) for r in records]
    )


def _shown(view: FunctionView) -> FunctionView:
    return view.model_copy(update={"name": shown(view.name)})
