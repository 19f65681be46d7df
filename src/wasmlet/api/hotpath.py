"""The invocation routes as raw ASGI, in front of the management app.

Invocations are the request path that must be fast: routing them through a framework
(request objects, dependency resolution, response classes) costs more per request than
running a small guest. Here they are matched by prefix and answered with two `send`
calls. Everything else falls through to the FastAPI app. The OpenAPI description of these
routes lives in api/openapi.py.

Gateway routes (api/router.py) are matched here too: routes naming a host before anything
else, when any exist; host-less routes after the invocation paths, which they may not
claim. A request no route matches pays one generation read and two attribute tests.

The same matching and admission also serve the HTTP fast lane (http_protocol.py), which
runs invocations without an ASGI cycle: `fast` admits a request from its head, `fast_run`
runs it once the body is in. Admission is written as plain functions that raise `Pending`
(pending.py) when they would have to wait, so both paths share one version of every check.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, unquote

from sqlalchemy.orm import Session, sessionmaker

from wasmlet.abi import Invocation, Outcome
from wasmlet.abi.base import is_json
from wasmlet.api.access import unknown_function, without_keys
from wasmlet.api.responses import error_outcome, send_error, send_json, send_outcome
from wasmlet.api.router import Match, Router, Snapshot, request_host
from wasmlet.api.state import AppState
from wasmlet.deadlines import Deadlines
from wasmlet.errors import InvalidRequest, NotFound, PayloadTooLarge, WasmletError
from wasmlet.hostnames import platform_hosts
from wasmlet.metering import ASGI_LANE, FAST_LANE
from wasmlet.names import is_valid_name
from wasmlet.pending import Pending, settled
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.hosts import owners
from wasmlet.registry.routes import list_routes
from wasmlet.runtime.pool import VersionRef

Scope = dict[str, Any]
_FUNCTIONS = "/api/v1/functions/"
_UPLOADS = frozenset({"/api/v1/functions", "/api/v1/blobs", "/function/deploy"})
_UPLOAD_MODULES = 4  # a main module and linked ones (Extism multi-module manifests)


@dataclass(slots=True)
class Target:
    """The function an invocation request names and what it hands it, read from the head."""

    name: str  # as the caller gave it, or qualified already (a route's function)
    qualified: bool
    path: str  # the path the function sees
    via: str
    export: str | None
    script_name: str | None = None  # a route's mount point; None: /fn/{name}


# `/function/invoke` (WasmEngine's API) names its function in the body, not the head.
_COMPAT = Target("", True, "/", "compat", None)


@dataclass(slots=True)
class Admitted:
    ref: VersionRef  # the version resolved for the request (name: qualified)
    namespace: str
    counted: bool  # holds one of its namespace's concurrent-invocation places


@dataclass(slots=True)
class FastCall:
    """A request admitted from its head by the HTTP fast lane (http_protocol.py), its body
    still to come. Holds its namespace's concurrency place until run or abandoned."""

    scope: Scope
    target: Target
    admitted: Admitted


class HotPath:
    def __init__(self, app: Any, state: AppState) -> None:
        self.app = app
        self.state = state
        self.invoker = state.invoker
        self.max_body = state.settings.max_body_bytes
        self.fast_lane = state.settings.fast_lane
        self.deadlines = BodyDeadlines(state.settings.body_timeout_ms)
        self.access = state.access
        self.limiter = state.limiter
        # The metrics listener (server.py): same app, its own port, /metrics without a key.
        self.metrics_port = state.settings.metrics_port
        # Its own ChangeSignal: each instance remembers which generation its owner has seen.
        self.router = Router(
            partial(_load_routes, state.repo.sessions),
            ChangeSignal(state.settings.data_dir),
            state.runtime.executor,
            platform=platform_hosts(state.settings.api_hosts, state.settings.host),
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http" and self.metrics_port is not None and self._on_metrics_port(scope):
            return await self._metrics_listener(scope, receive, send)
        if kind == "http":
            if _has_body(scope):  # every route's body, the management app's uploads too
                body = self.deadlines.reader(receive, send)
                receive, send = body.receive, body.send
            reloading = self.router.pending()
            if reloading is not None:
                await asyncio.shield(reloading)
            try:
                target = self._target(scope)
                if target is _COMPAT:
                    return await self._compat_invoke(scope, receive, send)
                if target is not None:
                    return await self._invoke(scope, receive, send, target)
                # Everything else is the management app: a key with the right scope.
                await self.access.management(scope)
                if scope["path"] in _UPLOADS:
                    self._check_upload_size(scope)
            except WasmletError as exc:
                return await send_error(send, exc)
        elif kind == "lifespan":
            receive = self._loading_routes(receive)
        await self.app(scope, receive, send)

    def _on_metrics_port(self, scope: Scope) -> bool:
        server = scope.get("server")
        return server is not None and server[1] == self.metrics_port

    async def _metrics_listener(self, scope: Scope, receive: Any, send: Any) -> None:
        """The metrics port serves the scrape and the health probe, nothing else: no
        invocation, route or management request, with or without a key."""
        if scope["path"] in ("/metrics", "/healthz") and scope["method"] == "GET":
            await self.app(scope, receive, send)
            return
        await send_error(send, NotFound("the metrics port serves only /metrics and /healthz"))

    def _loading_routes(self, receive: Any) -> Any:
        """Load the route table when the server starts, before it reports ready."""

        async def wrapped() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "lifespan.startup":
                await self.router.refresh()
            return message

        return wrapped

    # -- which function ----------------------------------------------------------------------

    def _target(self, scope: Scope) -> Target | None:
        """The invocation a request's head names (routes, the invoke API, the gateway), or
        None for the management app. Raises for invocation paths it cannot serve."""
        path: str = scope["path"]
        table = self.router.table
        if table.has_hosts:
            found = table.match_host(_host(scope), path, scope["method"])
            if found is not None:
                return _route_target(found)
        if path.startswith(_FUNCTIONS):
            parts = path[len(_FUNCTIONS) :].split("/")
            if len(parts) in (2, 3) and parts[1] == "invoke":
                if scope["method"] != "POST":
                    raise InvalidRequest("use POST to invoke a function", status=405)
                export = unquote(parts[2]) if len(parts) == 3 and parts[2] else None
                return Target(_name(parts[0]), False, "/", "api", export)
        elif path.startswith("/fn/"):
            name, _, sub = path[4:].partition("/")
            query = scope.get("query_string", b"")
            export = (
                dict(parse_qsl(query.decode("latin-1"))).get("export")
                if b"export=" in query
                else None
            )
            return Target(_name(name), False, "/" + sub, "gateway", export)
        elif path == "/function/invoke":
            return _COMPAT
        elif table.has_default:
            found = table.match_default(path, scope["method"])
            if found is not None:
                return _route_target(found)
        return None

    # -- access ----------------------------------------------------------------------------

    def _admit_now(self, scope: Scope, name: str, qualified: bool) -> Admitted:
        """Resolve the function a request names and check the caller may invoke it, before
        its body is read (api/access.py). Pending when that needs I/O first."""
        access = self.access
        if not qualified:
            name = access.invocation_name(scope, name)
        try:
            ref = self.invoker.resolve_now(name)
        except NotFound:
            raise unknown_function(name) from None  # what a refused private call gets
        public = ref.spec.visibility == "public"
        namespace, quota = access.admit_invocation(scope, name, public)
        return Admitted(ref, namespace, self.limiter.enter(namespace, quota))

    async def _admit(self, scope: Scope, name: str, qualified: bool) -> Admitted:
        return await settled(lambda: self._admit_now(scope, name, qualified))

    def _leave(self, admitted: Admitted) -> None:
        if admitted.counted:
            self.limiter.leave(admitted.namespace)

    # -- the ASGI path -----------------------------------------------------------------------

    async def _invoke(self, scope: Scope, receive: Any, send: Any, target: Target) -> None:
        ASGI_LANE.inc()
        admitted = await self._admit(scope, target.name, target.qualified)
        try:
            body = await self._body(scope, receive)
            inv = self._invocation(scope, body, target)
            outcome = await self.invoker.invoke(admitted.ref.name, inv, admitted.ref)
        finally:
            self._leave(admitted)
        await send_outcome(send, outcome)

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
        ASGI_LANE.inc()
        admitted = await self._admit(scope, _name(data["function_name"]), False)
        target = Target(admitted.ref.name, True, "/", "compat", data.get("export"))
        inv = self._invocation(scope, b"", target)
        inv.args = data.get("args", [])
        try:
            outcome = await self.invoker.invoke(admitted.ref.name, inv, admitted.ref)
        finally:
            self._leave(admitted)
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

    # -- the fast lane -------------------------------------------------------------------------

    def fast(self, scope: Scope) -> FastCall | Outcome | None:
        """Admit an invocation from its head alone, for the HTTP fast lane.

        A FastCall to run once its body is in (`fast_run`), an Outcome to answer at once
        (the request was refused), or None: the request takes the ASGI path (not an
        invocation, or admitting it needs I/O: a key not yet verified, a registry reload).
        """
        if self.router.pending() is not None:
            return None
        if self.metrics_port is not None and self._on_metrics_port(scope):
            return None  # the ASGI path answers the metrics listener
        try:
            target = self._target(scope)
            if target is None or target is _COMPAT:
                return None
            admitted = self._admit_now(scope, target.name, target.qualified)
        except Pending:
            return None
        except WasmletError as exc:
            return error_outcome(exc)
        try:
            self._check_declared_size(scope)
        except WasmletError as exc:
            self._leave(admitted)
            return error_outcome(exc)
        return FastCall(scope, target, admitted)

    def fast_run(self, call: FastCall, body: bytes) -> Outcome | Awaitable[Outcome]:
        """Run an admitted call: its Outcome when it ran inline, else an awaitable of it."""
        FAST_LANE.inc()
        admitted = call.admitted
        inv = self._invocation(call.scope, body, call.target)
        try:
            outcome = self.invoker.invoke_now(admitted.ref.name, inv, admitted.ref)
        except WasmletError as exc:
            self._leave(admitted)
            return error_outcome(exc)
        if outcome is None:
            return self._run_later(admitted, inv)
        self._leave(admitted)
        return outcome

    def fast_abandon(self, call: FastCall) -> None:
        """The client went away (or was too slow) before the call could run."""
        self._leave(call.admitted)

    async def _run_later(self, admitted: Admitted, inv: Invocation) -> Outcome:
        try:
            return await self.invoker.invoke(admitted.ref.name, inv, admitted.ref)
        except WasmletError as exc:
            return error_outcome(exc)
        finally:
            self._leave(admitted)

    # -- helpers ---------------------------------------------------------------------------

    def _check_upload_size(self, scope: Scope) -> None:
        """Refuse an upload whose declared size cannot be valid before FastAPI spools it to
        disk: a main module and a few linked ones, each within max_module_bytes."""
        limit = self.state.settings.max_module_bytes * _UPLOAD_MODULES + 1024 * 1024
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                raise PayloadTooLarge(f"upload exceeds the {limit}-byte limit")

    def _invocation(self, scope: Scope, body: bytes, target: Target) -> Invocation:
        # Every request, keyed or not: a key sent to a public function or a route, or one
        # spelled so that it did not authenticate, is still not the guest's to see.
        headers = without_keys(scope["headers"])
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client") or ("", 0)
        host = next((v.decode("latin-1") for k, v in headers if k == b"host"), server[0])
        return Invocation(
            method=scope["method"],
            path=target.path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            export=target.export,
            via=target.via,
            script_name=target.script_name,
            server_name=host.rsplit(":", 1)[0] if host.count(":") == 1 else host,
            server_port=server[1] or 80,
            remote_addr=client[0],
            scheme=scope.get("scheme", "http"),
        )

    def _check_declared_size(self, scope: Scope) -> None:
        limit = self.max_body
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise InvalidRequest("invalid Content-Length", status=400) from None
                if declared > limit:
                    raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")

    async def _body(self, scope: Scope, receive: Any) -> bytes:
        self._check_declared_size(scope)
        limit = self.max_body
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


class BodyDeadlines(Deadlines):
    """A request body must be complete `timeout_ms` after the request started.

    A client trickling its body (slowloris) would otherwise hold a connection, and the
    handler waiting for the body, for as long as it likes. Past the deadline the client gets
    408 `invalid_request` with `Connection: close`, whichever code was reading (the hot path,
    or FastAPI parsing an upload or a JSON body), and the reader gets the same error, so it
    unwinds; what it answers then is dropped. The fast lane (http_protocol.py) watches its
    bodies here too.
    """

    def __init__(self, timeout_ms: int) -> None:
        super().__init__()
        self.ms = timeout_ms

    def reader(self, receive: Any, send: Any) -> BodyReader:
        return BodyReader(self, receive, send)


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
        self._receive: Callable[[], Awaitable[dict[str, Any]]] = receive
        self._send: Callable[[dict[str, Any]], Awaitable[None]] = send
        self.deadline = time.monotonic() + owner.ms / 1000
        self.task: asyncio.Task[Any] | None = None
        self.reading = True
        self.expired = False
        self._started = False  # the app began its response
        self._answered = False  # the 408 went out instead

    def expire(self) -> None:
        self.owner.unwatch(self)
        self.expired = True
        if self.task is not None:
            self.task.cancel()

    async def receive(self) -> dict[str, Any]:
        if not self.reading:
            return await self._receive()
        if self.expired:
            raise self._too_slow()
        self.task = asyncio.current_task()
        self.owner.watch(self, self.deadline, self.expire)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self.expired:
                raise
            self.task.uncancel()
            exc = self._too_slow()
            if not self._started:
                self._answered = True
                await send_error(self._send, exc)
            raise exc from None
        finally:
            self.owner.unwatch(self)
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
    headers: Iterable[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == b"content-length":
            return value != b"0"
        if key == b"transfer-encoding":
            return True
    return False


def _route_target(found: Match) -> Target:
    route = found.route
    # A stripped prefix is where the function is mounted; otherwise it sees the root.
    script_name = route.path.rstrip("/") if route.strip_prefix else ""
    return Target(route.function, True, found.path, "route", None, script_name)


def _load_routes(sessions: sessionmaker[Session]) -> Snapshot:
    """The routes and the host assignments they are checked against. A write between the
    two reads bumps the generation again, so the next request reloads both."""
    with sessions() as s:
        return Snapshot(list_routes(s), owners(s))


def _host(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"host":
            return request_host(value.decode("latin-1"))
    return ""


def _name(raw: str) -> str:
    name = unquote(raw) if "%" in raw else raw
    if not is_valid_name(name):
        raise unknown_function(name)
    return name
