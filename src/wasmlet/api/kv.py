"""Operator access to the persistent key-value store: list, read, write, delete, increment.

The store is the one functions reach through the kv capability (SQL, or Redis when
configured). A namespace in the URL picks the scope: `global` is the shared scope, and a
function name (or `fn:<name>`, for a function that is itself called `global`) is that
function's own scope. The function need not exist: an operator may seed keys before the
first deploy.

Routing, since keys may contain `/` (the key is the rest of the path):

- `GET  /api/v1/kv/{ns}/keys` always lists; every other GET path reads a key. So a key
  named exactly `keys` cannot be read here (list it, write it, delete it: those work).
- `POST /api/v1/kv/{ns}/{key}/incr` always increments: the final `/incr` is the action
  and everything before it is the key (`.../a/incr/incr` increments the key `a/incr`).
  POST does nothing else, so no key is hidden by it.
- `PUT` and `DELETE` take the whole rest of the path as the key, `keys` and `x/incr` too.

Handlers are plain `def`s where they can be (FastAPI runs those on its thread pool, where
blocking store calls belong); `PUT` is async only to read its body with a size cap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import redis
import sqlalchemy.exc
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from wasmlet.api.deps import get_state
from wasmlet.api.state import AppState
from wasmlet.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    QuotaExceeded,
    WasmletError,
)
from wasmlet.host.kv.base import KvError, KvStore
from wasmlet.host.kv.memory import INT64_MAX, INT64_MIN
from wasmlet.host.kv.quota import KvQuotaExceeded
from wasmlet.names import is_valid_name

log = logging.getLogger("wasmlet.kv")

from wasmlet.api.access import caller, own_name  # noqa: E402
from wasmlet.auth.keys import Principal  # noqa: E402
from wasmlet.host.kv_capability import global_scope  # noqa: E402

router = APIRouter(prefix="/api/v1/kv", tags=["kv"])
State = Annotated[AppState, Depends(get_state)]
Caller = Annotated[Principal, Depends(caller)]
Namespace = Annotated[
    str,
    Path(description="`global`, or a function name (also as `fn:<name>`) for its own keys"),
]
Key = Annotated[str, Path(description="The key: UTF-8 text, may contain `/`")]

TTL_HEADER = "X-Wasmlet-TTL-Ms"
_MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000  # a century: far beyond any use, within Redis's range

# Failures of the backend itself (Redis down, database unreachable or locked too long):
# the store is unavailable, which is the server's problem, not the request's.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.RedisError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)

T = TypeVar("T")


class KeyList(BaseModel):
    namespace: str
    keys: list[str] = Field(description="Live keys matching the pattern, sorted")


class Stored(BaseModel):
    namespace: str
    key: str
    size: int = Field(description="Bytes stored")
    ttl_ms: int | None = Field(description="Time to live given, null for no expiry")


class Deleted(BaseModel):
    deleted: bool = Field(description="False when there was no such key")


class IncrBody(BaseModel):
    by: int = Field(1, strict=True, ge=INT64_MIN, le=INT64_MAX, description="May be negative")


class Counter(BaseModel):
    value: int = Field(description="The value after the increment")


# -- helpers ---------------------------------------------------------------------------------


def scope_of(namespace: str, principal: Principal) -> str:
    """The store scope a URL namespace names, inside the caller's tenant (its own global
    namespace, its own functions); InvalidRequest for anything else."""
    if namespace == "global":
        return global_scope(principal.namespace)
    name = namespace.removeprefix("fn:")
    if is_valid_name(name):
        return f"fn:{own_name(principal, name)}"
    raise InvalidRequest(
        f"invalid namespace {namespace!r}: use 'global' or a function name "
        "(1-63 characters of a-z 0-9 - _ . starting with a letter or digit)",
        status=422,
    )


def check_key(key: str, state: AppState) -> str:
    limit = state.settings.kv_max_key_bytes
    if not key:
        raise InvalidRequest("the key must not be empty", status=422)
    if "\x00" in key:
        raise InvalidRequest("the key must not contain NUL characters", status=422)
    if len(key.encode()) > limit:
        raise InvalidRequest(f"the key exceeds the {limit}-byte limit", status=422)
    return key


@contextmanager
def _store_errors(refused: type[WasmletError] = InvalidRequest) -> Iterator[None]:
    """Store exceptions as API errors: a refusal (KvError) as `refused`, an unreachable
    backend as 503 with Retry-After."""
    try:
        yield
    except KvQuotaExceeded as exc:
        raise QuotaExceeded(str(exc)) from None
    except KvError as exc:
        raise refused(str(exc)) from None
    except _UNAVAILABLE as exc:
        reason = _reason(exc)
        log.warning("key-value store unavailable: %s", reason)
        raise Overloaded(
            f"the key-value store is unavailable ({reason}); try again later", retry_after=5
        ) from None


def _reason(exc: Exception) -> str:
    """A short cause: the driver's own error, without SQLAlchemy's statement and parameters
    (which would echo stored values back)."""
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:200] if lines else 'no detail'}"


def _call(call: Callable[[], T], refused: type[WasmletError] = InvalidRequest) -> T:
    with _store_errors(refused):
        return call()


def _store(state: AppState) -> KvStore:
    return state.services.kv_persistent


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit`."""
    too_large = PayloadTooLarge(f"the value exceeds the {limit}-byte limit")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


# -- routes ----------------------------------------------------------------------------------
# Order matters: the listing and increment routes come before the catch-all key routes.


@router.get("/{namespace}/keys", response_model=KeyList, summary="List keys")
def list_keys(
    state: State,
    principal: Caller,
    namespace: Namespace,
    pattern: Annotated[
        str, Query(max_length=2048, description="Glob: `*`, `?`, `[abc]`, `[!abc]`")
    ] = "*",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> KeyList:
    scope = scope_of(namespace, principal)
    keys = _call(lambda: _store(state).keys(scope, pattern, limit))
    return KeyList(namespace=namespace, keys=keys)


@router.post(
    "/{namespace}/{key:path}/incr",
    response_model=Counter,
    summary="Add to an integer value (absent counts as 0)",
    responses={409: {"description": "The value is not a 64-bit decimal integer"}},
)
def increment(
    state: State,
    principal: Caller,
    namespace: Namespace,
    key: Key,
    body: Annotated[IncrBody | None, Body()] = None,
) -> Counter:
    scope = scope_of(namespace, principal)
    check_key(key, state)
    by = body.by if body else 1
    value = _call(lambda: _store(state).incr(scope, key, by), refused=Conflict)
    return Counter(value=value)


@router.get(
    "/{namespace}/{key:path}",
    response_class=Response,
    summary="Read a value (raw bytes)",
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "headers": {
                TTL_HEADER: {
                    "description": "Milliseconds left to live, -1 for no expiry",
                    "schema": {"type": "integer"},
                }
            },
        },
        404: {"description": "No such key (or it expired)"},
    },
)
def read_value(state: State, principal: Caller, namespace: Namespace, key: Key) -> Response:
    scope = scope_of(namespace, principal)
    check_key(key, state)
    store = _store(state)
    value = _call(lambda: store.get(scope, key))
    if value is None:
        raise NotFound(f"no key {key!r} in namespace {namespace!r}")
    ttl = _call(lambda: store.pttl(scope, key))
    if ttl == -2:
        ttl = 0  # it expired between the two reads; the value read was still live
    return Response(value, media_type="application/octet-stream", headers={TTL_HEADER: str(ttl)})


_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The value, as raw bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put(
    "/{namespace}/{key:path}",
    response_model=Stored,
    summary="Write a value (the raw request body)",
    openapi_extra=_RAW_BODY,
    responses={
        409: {"description": "if_absent was set and the key exists"},
        413: {"description": "The value exceeds kv_max_value_bytes"},
        429: {"description": "quota_exceeded: the namespace is at its KV key or byte quota"},
    },
)
async def write_value(
    request: Request,
    state: State,
    principal: Caller,
    namespace: Namespace,
    key: Key,
    ttl_ms: Annotated[
        int | None, Query(ge=1, le=_MAX_TTL_MS, description="Expire after this long")
    ] = None,
    if_absent: Annotated[
        bool, Query(description="Only write when the key does not exist (else 409)")
    ] = False,
) -> Stored:
    scope = scope_of(namespace, principal)
    check_key(key, state)
    value = await _read_body(request, state.settings.kv_max_value_bytes)
    store = _store(state)
    with _store_errors():
        written = await run_in_threadpool(
            store.set, scope, key, value, ttl_ms, only_if_absent=if_absent
        )
    if not written:
        raise Conflict(f"key {key!r} already exists in namespace {namespace!r}")
    return Stored(namespace=namespace, key=key, size=len(value), ttl_ms=ttl_ms)


@router.delete("/{namespace}/{key:path}", response_model=Deleted, summary="Delete a key")
def delete_value(state: State, principal: Caller, namespace: Namespace, key: Key) -> Deleted:
    scope = scope_of(namespace, principal)
    check_key(key, state)
    return Deleted(deleted=_call(lambda: _store(state).delete(scope, key)))
