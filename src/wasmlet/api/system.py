"""Health, metrics and raw blob upload."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel

from wasmlet import __version__
from wasmlet.api.access import caller
from wasmlet.api.deps import get_state
from wasmlet.api.state import AppState
from wasmlet.errors import InvalidRequest, PayloadTooLarge
from wasmlet.registry.locks import registry_lock

router = APIRouter(tags=["system"])
State = Annotated[AppState, Depends(get_state)]


class Health(BaseModel):
    status: str
    # Only for a key that may read /metrics: without one, a probe learns that the node is
    # up and nothing about its software or tenants.
    version: str | None = None
    functions: int | None = None


class BlobOut(BaseModel):
    digest: str
    size: int


@router.get(
    "/healthz",
    response_model=Health,
    response_model_exclude_none=True,
    summary="Liveness and readiness (details for the operator's keys)",
)
def healthz(state: State, request: Request) -> Health:
    principal = request.scope.get("state", {}).get("principal")
    if principal is None or not principal.scrapes_metrics:
        return Health(status="ok")
    return Health(status="ok", version=__version__, functions=len(state.repo.list_functions()))


@router.get(
    "/metrics",
    summary="Prometheus metrics (a 'metrics' key of the default namespace, or metrics_port)",
    response_class=Response,
)
def metrics(state: State) -> Response:
    state.meter.flush()
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/api/v1/blobs",
    response_model=BlobOut,
    status_code=201,
    summary="Store module bytes (validated) and return their digest, for /function/deploy",
)
async def upload_blob(state: State, request: Request) -> BlobOut:
    limit = state.settings.max_module_bytes
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"module exceeds the {limit}-byte limit")
    if not data:
        raise InvalidRequest("empty body")
    candidate = await run_in_threadpool(state.deployer.parse, bytes(data))
    digest = await run_in_threadpool(_put_blob, state, candidate.wasm)
    await run_in_threadpool(state.repo.grant_blob, caller(request).namespace, digest)
    return BlobOut(digest=digest, size=len(candidate.wasm))


def _put_blob(state: AppState, data: bytes) -> str:
    # Under the registry lock, like deploys: garbage collection and `wasmlet doctor` never
    # see a blob half-way in.
    with registry_lock(state.settings.data_dir):
        return state.blobs.put(data)
