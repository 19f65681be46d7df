"""Management API for function secrets: set, list keys, delete. Values go in, never out.

No response carries a value, and no error message quotes one: the request model puts no
constraint of its own on `value` (size and encoding are checked by the store, whose
messages describe the value without quoting it), and the app's validation handler prints
only `loc: msg` of pydantic's error, never its `input`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from wasmlet.api.access import function_name, shown
from wasmlet.api.deps import get_state
from wasmlet.api.state import AppState
from wasmlet.errors import NotFound, WasmletError
from wasmlet.host.secrets import SecretStore, check_function, check_key
from wasmlet.registry.views import UtcDatetime

router = APIRouter(prefix="/api/v1/functions", tags=["secrets"])
State = Annotated[AppState, Depends(get_state)]
FnName = Annotated[str, Depends(function_name)]


class SecretValue(BaseModel):
    value: str = Field(description="UTF-8 text, at most 64 KiB; never returned")


class SecretSet(BaseModel):
    function: str
    key: str
    updated_at: UtcDatetime


class SecretEntry(BaseModel):
    key: str
    updated_at: UtcDatetime


class SecretList(BaseModel):
    function: str
    secrets: list[SecretEntry]


class SecretDeleted(BaseModel):
    deleted: bool


def _store(state: AppState) -> SecretStore:
    store = state.services.secrets
    if not isinstance(store, SecretStore):
        raise WasmletError("secrets are not available on this server")
    return store


@router.put(
    "/{name}/secrets/{key}",
    response_model=SecretSet,
    summary="Create or replace a secret (the function need not be deployed yet)",
)
def set_secret(state: State, name: FnName, key: str, body: SecretValue) -> SecretSet:
    info = _store(state).set(check_function(name), check_key(key), body.value)
    return SecretSet(function=shown(name), key=info.key, updated_at=info.updated_at)


@router.get("/{name}/secrets", response_model=SecretList, summary="List a function's secret keys")
def list_secrets(state: State, name: FnName) -> SecretList:
    infos = _store(state).list_keys(check_function(name))
    return SecretList(
        function=shown(name),
        secrets=[SecretEntry(key=i.key, updated_at=i.updated_at) for i in infos],
    )


@router.delete("/{name}/secrets/{key}", response_model=SecretDeleted, summary="Delete a secret")
def delete_secret(state: State, name: FnName, key: str) -> SecretDeleted:
    if not _store(state).delete(check_function(name), check_key(key)):
        raise NotFound(f"function {shown(name)!r} has no secret {key!r}")
    return SecretDeleted(deleted=True)
