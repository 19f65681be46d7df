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
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from wasmlet.abi import Invocation, Outcome
from wasmlet.abi.base import is_json
from wasmlet.api.access import without_keys
from wasmlet.api.responses import send_error, send_json, send_outcome
from wasmlet.api.router import Match, Router, request_host
from wasmlet.api.state import AppState
from wasmlet.errors import InvalidRequest, NotFound, PayloadTooLarge, WasmletError
from wasmlet.names import is_valid_name
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.routes import RouteStore
from wasmlet.runtime.pool import VersionRef

Scope = dict[str, Any]
_FUNCTIONS = "/api/v1/functions/"
_UPLOADS = frozenset({"/api/v1/functions", "/api/v1/blobs", "/function/deploy"})
_UPLOAD_MODULES = 4  # a main module and linked ones (Extism multi-module manifests)


@dataclass(slots=True)
class Admitted:
    ref: VersionRef  # the version resolved for the request (name: qualified)
    namespace: str
    counted: bool  # holds one of its namespace's concurrent-invocation places


class HotPath:
    def __init__(self, app: Any, state: AppState) -> None:
        self.app = app
        self.state = state
        self.invoker = state.invoker
        self.max_body = state.settings.max_body_bytes
        self.deadlines = BodyDeadlines(state.settings.body_timeout_ms)
        self.access = state.access
        self.limiter = state.limiter
        # Its own ChangeSignal: each instance remembers which generation its owner has seen.
        self.router = Router(
            RouteStore(state.repo.sessions).list_routes,
            ChangeSignal(state.settings.data_dir),
            state.runtime.executor,
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            if _has_body(scope):  # every route's body, the management app's uploads too
                body = self.deadlines.reader(receive, send)
                receive, send = body.receive, body.send
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
                # Everything else is the management app: a key with the right scope.
                await self.access.management(scope)
                if path in _UPLOADS:
                    self._check_upload_size(scope)
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
        admitted = await self._admit(scope, found.route.function, qualified=True)
        body = await self._body(scope, receive)
        inv = self._invocation(scope, body, path=found.path, via="route", export=None)
        # A stripped prefix is where the function is mounted; otherwise it sees the root.
        route = found.route
        inv.script_name = route.path.rstrip("/") if route.strip_prefix else ""
        await send_outcome(send, await self._run(admitted, inv))

    async def _invoke(self, scope: Scope, receive: Any, send: Any, parts: list[str]) -> None:
        if scope["method"] != "POST":
            raise InvalidRequest("use POST to invoke a function", status=405)
        admitted = await self._admit(scope, _name(parts[0]))
        export = unquote(parts[2]) if len(parts) == 3 and parts[2] else None
        body = await self._body(scope, receive)
        inv = self._invocation(scope, body, path="/", via="api", export=export)
        await send_outcome(send, await self._run(admitted, inv))

    async def _gateway(self, scope: Scope, receive: Any, send: Any) -> None:
        rest = scope["path"][4:]
        name, _, sub = rest.partition("/")
        admitted = await self._admit(scope, _name(name))
        body = await self._body(scope, receive)
        query = scope.get("query_string", b"").decode("latin-1")
        export = None
        if "export=" in query:
            export = dict(parse_qsl(query)).get("export")
        inv = self._invocation(scope, body, path="/" + sub, via="gateway", export=export)
        await send_outcome(send, await self._run(admitted, inv))

    async def _compat_invoke(self, scope: Scope, receive: Any, send: Any) -> None:
        """WasmEngine's `POST /function/invoke {function_name, args}`."""
        if scope["method"] != "POST":
            raise InvalidRequest("use POST", status=405)
        body = await self._body(scope, receive)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to decode
            raise InvalidRequest("request body is not valid JSON", status=400) from None
        if not isinstance(data, dict) or not isinstance(data.get("function_name"), str):
            raise InvalidRequest("expected {function_name: string, args: {...}}")
        admitted = await self._admit(scope, _name(data["function_name"]))
        args = data.get("args", [])
        inv = self._invocation(scope, b"", path="/", via="compat", export=data.get("export"))
        inv.args = args
        outcome = await self._run(admitted, inv)
        if (
            outcome.status == 200
            and outcome.headers[:1] == [(b"content-type", b"application/json")]
            and is_json(outcome.body)  # the WasmEngine route promises JSON
        ):
            await send_outcome(send, outcome)
        else:
            await send_json(
                send, outcome.status, {"result": outcome.body.decode("utf-8", "replace")}
            )

    # -- access ----------------------------------------------------------------------------

    async def _admit(self, scope: Scope, raw: str, *, qualified: bool = False) -> Admitted:
        """Resolve the function a request names and check the caller may invoke it, before
        its body is read (api/access.py)."""
        access = self.access
        name = raw if qualified else await access.invocation_name(scope, raw)
        ref = await self.invoker.resolve(name)
        public = ref.spec.visibility == "public"
        namespace, quota = await access.admit_invocation(scope, name, public)
        return Admitted(ref, namespace, self.limiter.enter(namespace, quota))

    async def _run(self, admitted: Admitted, inv: Invocation) -> Outcome:
        try:
            return await self.invoker.invoke(admitted.ref.name, inv, admitted.ref)
        finally:
            if admitted.counted:
                self.limiter.leave(admitted.namespace)

    # -- helpers ---------------------------------------------------------------------------

    def _check_upload_size(self, scope: Scope) -> None:
        """Refuse an upload whose declared size cannot be valid before FastAPI spools it to
        disk: a main module and a few linked ones, each within max_module_bytes."""
        limit = self.state.settings.max_module_bytes * _UPLOAD_MODULES + 1024 * 1024
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise PayloadTooLarge(f"upload exceeds the {limit}-byte limit")

    def _invocation(
        self, scope: Scope, body: bytes, *, path: str, via: str, export: str | None
    ) -> Invocation:
        headers = scope["headers"]
        state = scope.get("state")
        if state and "principal" in state:  # the caller sent a wasmlet key: not for the guest
            headers = without_keys(headers)
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


class BodyDeadlines:
    """A request body must be complete `timeout_ms` after the request started.

    A client trickling its body (slowloris) would otherwise hold a connection, and the
    handler waiting for the body, for as long as it likes. Past the deadline the client gets
    408 `invalid_request` with `Connection: close`, whichever code was reading (the hot path,
    or FastAPI parsing an upload or a JSON body), and the reader gets the same error, so it
    unwinds; what it answers then is dropped.

    One timer watches every waiting read, ticking only while there are some: a timer per
    request (asyncio.timeout) costs ~4 us on uvloop, this ~1.5 us (measured on an idle
    2-core machine). Deadlines are kept to within a tick.
    """

    TICK = 0.1

    def __init__(self, timeout_ms: int) -> None:
        self.ms = timeout_ms
        self.waiting: set[BodyReader] = set()
        self._timer: asyncio.TimerHandle | None = None

    def reader(self, receive: Any, send: Any) -> BodyReader:
        return BodyReader(self, receive, send)

    def watch(self, reader: BodyReader) -> None:
        self.waiting.add(reader)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.TICK, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        for reader in [r for r in self.waiting if r.deadline <= now]:
            reader.expire()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.TICK, self._sweep) if self.waiting else None


class BodyReader:
    """`receive` and `send` of one request under its body deadline. Once the body is
    complete, `receive` is the server's own again (Starlette waits on it for a disconnect
    while streaming a response)."""

    __slots__ = (
        "_answered",
        "_receive",
        "_send",
        "_started",
        "deadline",
        "expired",
        "owner",
        "reading",
        "task",
    )

    def __init__(self, owner: BodyDeadlines, receive: Any, send: Any) -> None:
        self.owner = owner
        self._receive = receive
        self._send = send
        self.deadline = time.monotonic() + owner.ms / 1000
        self.task: asyncio.Task[Any] | None = None
        self.reading = True
        self.expired = False
        self._started = False  # the app began its response
        self._answered = False  # the 408 went out instead

    def expire(self) -> None:
        self.owner.waiting.discard(self)
        self.expired = True
        if self.task is not None:
            self.task.cancel()

    async def receive(self) -> dict[str, Any]:
        if not self.reading:
            return await self._receive()
        if self.expired:
            raise self._too_slow()
        self.task = asyncio.current_task()
        self.owner.watch(self)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self.expired:
                raise
            self.task.uncancel()  # type: ignore[union-attr]
            exc = self._too_slow()
            if not self._started:
                self._answered = True
                await send_error(self._send, exc)
            raise exc from None
        finally:
            self.owner.waiting.discard(self)
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.reading = False
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if self._answered:
            return
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)

    def _too_slow(self) -> InvalidRequest:
        return InvalidRequest(
            f"the request body did not arrive within {self.owner.ms} ms (body_timeout_ms)",
            status=408,
            headers={"Connection": "close"},
        )


def _has_body(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return value != b"0"
        if key == b"transfer-encoding":
            return True
    return False


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
