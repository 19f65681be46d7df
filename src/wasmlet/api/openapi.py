"""OpenAPI for the raw-ASGI invocation routes, which FastAPI cannot see (api/hotpath.py)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "Error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        "required": ["code", "message"],
                    }
                },
                "required": ["error"],
            }
        }
    },
}
_ERRORS = {str(s): _ERROR for s in (400, 401, 403, 404, 405, 408, 413, 422, 429, 500, 503, 504)}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_RAW = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
_INVOKE_BODY = {
    "description": 'For core functions: {"args": [..]} or {"args": {name: value}}. '
    "For other ABIs: the raw request body handed to the guest.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"args": {"oneOf": [{"type": "array"}, {"type": "object"}]}},
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_RESULT = {
    "description": "The function's answer: {\"result\": ...} for core functions, the guest's "
    "own response otherwise",
    "content": {
        "application/json": {"schema": {}},
        "*/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _invoke(summary: str, extra_params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["invoke"],
            "summary": summary,
            "parameters": [_NAME, *extra_params],
            "requestBody": _INVOKE_BODY,
            "responses": {"200": _RESULT, **_ERRORS},
        }
    }


def _gateway() -> dict[str, Any]:
    op = {
        "tags": ["gateway"],
        "summary": "The full HTTP request goes to the function; its response comes back",
        "parameters": [
            _NAME,
            {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "responses": {"200": _RESULT, **_ERRORS},
    }
    return {m: dict(op, operationId=f"gateway_{m}") for m in ("get", "post", "put", "delete")}


HOT_PATHS: dict[str, Any] = {
    "/api/v1/functions/{name}/invoke": _invoke("Invoke a function's default export", []),
    "/api/v1/functions/{name}/invoke/{export}": _invoke(
        "Invoke a named export",
        [{"name": "export", "in": "path", "required": True, "schema": {"type": "string"}}],
    ),
    "/fn/{name}/{path}": _gateway(),
    "/function/invoke": {
        "post": {
            "tags": ["wasmengine-compat"],
            "summary": "WasmEngine: invoke",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "function_name": {"type": "string"},
                                "args": {"oneOf": [{"type": "array"}, {"type": "object"}]},
                            },
                            "required": ["function_name"],
                        }
                    }
                }
            },
            "responses": {"200": _RESULT, **_ERRORS},
        }
    },
}
