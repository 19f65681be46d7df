"""The ASGI application: the raw hot path in front of the FastAPI management app."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from wasmlet import __version__
from wasmlet.api import compat, functions, hosts, keys, kv, routes, secrets, system
from wasmlet.api.hotpath import HotPath
from wasmlet.api.openapi import HOT_PATHS
from wasmlet.api.state import AppState, build_state
from wasmlet.config import Settings, load_settings
from wasmlet.errors import WasmletError

log = logging.getLogger("wasmlet")

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "invalid_request",
    413: "payload_too_large",
    415: "invalid_request",
    422: "invalid_request",
}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WasmletError)
    async def wasmlet_error(_: Request, exc: WasmletError) -> Any:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        status = 400 if first.get("type") == "json_invalid" else 422
        return _error(status, "invalid_request", f"{where}: {first.get('msg')}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Any:
        code = _STATUS_CODES.get(exc.status_code, "internal")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> Any:
        log.exception("unhandled error")
        return _error(500, "internal", f"internal error: {type(exc).__name__}")


def build_app(state: AppState) -> HotPath:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.invoker.refresh()
        state.meter.attach(asyncio.get_running_loop())  # count records on the loop
        # Everything loaded so far (frameworks, ORM, the registry) lives as long as the
        # process: out of the collector's sight, a full collection scans what requests
        # leave behind instead of ~500k objects (~80 ms, stalling every request meanwhile).
        gc.freeze()
        s = state.settings
        # The line newcomers and scripts wait for: printed once the app can serve.
        print(
            f"wasmlet ready on http://{s.host}:{s.port} (pid {os.getpid()}, data dir {s.data_dir})",
            file=sys.stderr,
            flush=True,
        )
        yield
        state.close()

    api = FastAPI(
        title="wasmlet",
        version=__version__,
        description="Functions-as-a-Service for WebAssembly",
        lifespan=lifespan,
    )
    api.state.wasmlet = state
    _install_error_handlers(api)
    api.include_router(functions.router)
    api.include_router(compat.router)
    api.include_router(system.router)
    api.include_router(routes.router)
    api.include_router(kv.router)
    api.include_router(secrets.router)
    api.include_router(keys.router)
    api.include_router(hosts.router)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=api.title,
                version=api.version,
                description=api.description,
                routes=api.routes,
            )
            schema["paths"].update(HOT_PATHS)
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    if state.settings.cors_origins:  # off unless origins are configured
        from fastapi.middleware.cors import CORSMiddleware

        api.add_middleware(
            CORSMiddleware,
            allow_origins=state.settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return HotPath(api, state)


def create_app(settings: Settings | None = None) -> HotPath:
    """ASGI factory, also used by uvicorn in each worker process (settings from env)."""
    return build_app(build_state(settings or load_settings()))
