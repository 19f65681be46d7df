"""The invocation routes as raw ASGI, in front of the management app.

Invocations are the request path that must be fast: routing them through a framework
(request objects, dependency resolution, response classes) costs more per request than
running a small guest. Here they are matched by prefix and answered with two `send`
calls. Everything else falls through to the FastAPI app. The OpenAPI description of these
routes lives in api/openapi.py.

Gateway routes (api/router.py) are matched here too: routes naming a host before anything
else, when any exist; host-less routes after the invocation paths, which they may not
claim. A request no route matches pays one generation read and two attribute tests.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl, unquote

from wasmlet.abi import Invocation
from wasmlet.api.responses import send_error, send_json, send_outcome
from wasmlet.api.router import Match, Router, request_host
from wasmlet.api.state import AppState
from wasmlet.errors import InvalidRequest, NotFound, PayloadTooLarge, WasmletError
from wasmlet.names import is_valid_name
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.routes import RouteStore

Scope = dict[str, Any]
_FUNCTIONS = "/api/v1/functions/"


class HotPath:
    def __init__(self, app: Any, state: AppState) -> None:
        self.app = app
        self.state = state
        self.invoker = state.invoker
        self.max_body = state.settings.max_body_bytes
        # Its own ChangeSignal: each instance remembers which generation its owner has seen.
        self.router = Router(
            RouteStore(state.repo.sessions).list_routes,
            ChangeSignal(state.settings.data_dir),
            state.runtime.executor,
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            reloading = self.router.pending()
            if reloading is not None:
                await asyncio.shield(reloading)
            table = self.router.table
            try:
                if table.has_hosts:
                    found = table.match_host(_host(scope), path, scope["method"])
                    if found is not None:
                        return await self._route(scope, receive, send, found)
                if path.startswith(_FUNCTIONS):
                    parts = path[len(_FUNCTIONS) :].split("/")
                    if len(parts) in (2, 3) and parts[1] == "invoke":
                        return await self._invoke(scope, receive, send, parts)
                elif path.startswith("/fn/"):
                    return await self._gateway(scope, receive, send)
                elif path == "/function/invoke":
                    return await self._compat_invoke(scope, receive, send)
                elif table.has_default:
                    found = table.match_default(path, scope["method"])
                    if found is not None:
                        return await self._route(scope, receive, send, found)
            except WasmletError as exc:
                return await send_error(send, exc)
        elif kind == "lifespan":
            receive = self._loading_routes(receive)
        await self.app(scope, receive, send)

    def _loading_routes(self, receive: Any) -> Any:
        """Load the route table when the server starts, before it reports ready."""

        async def wrapped() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.router.refresh()
            return message

        return wrapped

    # -- routes ----------------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Any, send: Any, found: Match) -> None:
        """A gateway route: the whole request goes to the route's function."""
        body = await self._body(scope, receive)
        inv = self._invocation(scope, body, path=found.path, via="route", export=None)
        # A stripped prefix is where the function is mounted; otherwise it sees the root.
        route = found.route
        inv.script_name = route.path.rstrip("/") if route.strip_prefix else ""
        await send_outcome(send, await self.invoker.invoke(found.route.function, inv))

    async def _invoke(self, scope: Scope, receive: Any, send: Any, parts: list[str]) -> None:
        if scope["method"] != "POST":
            raise InvalidRequest("use POST to invoke a function", status=405)
        name = _name(parts[0])
        export = unquote(parts[2]) if len(parts) == 3 and parts[2] else None
        body = await self._body(scope, receive)
        inv = self._invocation(scope, body, path="/", via="api", export=export)
        await send_outcome(send, await self.invoker.invoke(name, inv))

    async def _gateway(self, scope: Scope, receive: Any, send: Any) -> None:
        rest = scope["path"][4:]
        name, _, sub = rest.partition("/")
        name = _name(name)
        body = await self._body(scope, receive)
        query = scope.get("query_string", b"").decode("latin-1")
        export = None
        if "export=" in query:
            export = dict(parse_qsl(query)).get("export")
        inv = self._invocation(scope, body, path="/" + sub, via="gateway", export=export)
        await send_outcome(send, await self.invoker.invoke(name, inv))

    async def _compat_invoke(self, scope: Scope, receive: Any, send: Any) -> None:
        """WasmEngine's `POST /function/invoke {function_name, args}`."""
        if scope["method"] != "POST":
            raise InvalidRequest("use POST", status=405)
        body = await self._body(scope, receive)
        try:
            data = json.loads(body)
        except ValueError:
            raise InvalidRequest("request body is not valid JSON", status=400) from None
        if not isinstance(data, dict) or not isinstance(data.get("function_name"), str):
            raise InvalidRequest("expected {function_name: string, args: {...}}")
        name = _name(data["function_name"])
        args = data.get("args", [])
        inv = self._invocation(scope, b"", path="/", via="compat", export=data.get("export"))
        inv.args = args
        outcome = await self.invoker.invoke(name, inv)
        if outcome.status == 200 and outcome.headers[:1] == [
            (b"content-type", b"application/json")
        ]:
            await send_outcome(send, outcome)
        else:
            await send_json(
                send, outcome.status, {"result": outcome.body.decode("utf-8", "replace")}
            )

    # -- helpers ---------------------------------------------------------------------------

    def _invocation(
        self, scope: Scope, body: bytes, *, path: str, via: str, export: str | None
    ) -> Invocation:
        headers = scope["headers"]
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client") or ("", 0)
        host = next((v.decode("latin-1") for k, v in headers if k == b"host"), server[0])
        return Invocation(
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            export=export,
            via=via,
            server_name=host.rsplit(":", 1)[0] if host.count(":") == 1 else host,
            server_port=server[1] or 80,
            remote_addr=client[0],
            scheme=scope.get("scheme", "http"),
        )

    async def _body(self, scope: Scope, receive: Any) -> bytes:
        limit = self.max_body
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise InvalidRequest("invalid Content-Length", status=400) from None
                if declared > limit:
                    raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequest("client disconnected", status=400)
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _host(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"host":
            return request_host(value.decode("latin-1"))
    return ""


def _name(raw: str) -> str:
    name = unquote(raw) if "%" in raw else raw
    if not is_valid_name(name):
        raise NotFound(f"function {name!r} not found")
    return name
