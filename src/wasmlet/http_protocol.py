"""uvicorn's httptools protocol with the two limits it lacks, and a fast lane for
invocations.

Limits: the size of a request's header block and the time the header block may take to
arrive (the settings max_header_bytes and header_timeout_ms, read from the app's settings
when a connection is made).

httptools accepts headers of any size and waits for them forever, so one client can hold
a connection (and a place under `limit_concurrency`) open by sending a header a byte at a
time, or make the server buffer megabytes of headers. Here a header block over
max_header_bytes is answered with 431, and one not complete header_timeout_ms after the
request began with 408; both close the connection. Bodies have their own deadline
(api/hotpath.py).

The fast lane: uvicorn serves each request through an ASGI cycle (a scope, a task, receive
and send coroutines, message dicts), which costs more CPU than running a small guest
inline. An invocation whose admission needs no I/O (`HotPath.fast`) is served here
instead: its body is collected from the parser's callbacks, the guest runs when the body
is complete, and the response is written in one piece. Everything else (management
requests, keys not yet verified in this process, registry reloads, HEAD, HTTP/1.0,
Expect: 100-continue, upgrades, requests pipelined behind one in progress) takes uvicorn's
ordinary path. A call that cannot run inline (offloaded, queued, replayed) continues in a
task. While the fast lane serves a request, `_FastCycle` stands in for uvicorn's cycle, so
uvicorn's own pipelining, disconnect and shutdown handling work unchanged.

This leans on uvicorn's and httptools' internals, not only their public API: the names
are listed in RELIED_ON below, pyproject.toml pins both packages exactly, and
tests/api/test_http_protocol.py checks every name on the modules and a real protocol.
Where uvicorn has the code as a method (header parsing, the 400 answer, the ASGI path) it
is called, not copied; its 503 rule, written inline in a method the fast lane replaces, is
repeated, and that test holds the copy to uvicorn's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import unquote

import httptools
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
)

from wasmlet.abi import Outcome
from wasmlet.api.hotpath import FastCall, HotPath
from wasmlet.api.responses import Headers, error_outcome, response_parts
from wasmlet.config import Settings
from wasmlet.deadlines import Deadlines
from wasmlet.errors import InvalidRequest, PayloadTooLarge, WasmletError

log = logging.getLogger("wasmlet")

# What this module uses of uvicorn and httptools beyond their public API, by where it
# lives. Both are pinned exactly in pyproject.toml for this; tests/api/test_http_protocol.py
# fails naming any of these that a new version drops. Besides these, every parser callback
# and connection method BoundedHttpToolsProtocol overrides must still be one uvicorn has
# (the test checks that too), `_FastCycle` must have every attribute uvicorn reads of a
# cycle once its response is complete, and uvicorn's data_received must answer an
# HttpParserError raised from a callback through send_400_response (the 431; tested).
RELIED_ON: dict[str, tuple[str, ...]] = {
    "uvicorn.protocols.http.httptools_impl": (
        "HEADER_RE",  # response header checks, as uvicorn's cycle makes them
        "HEADER_VALUE_RE",
        "STATUS_LINE",  # the status lines uvicorn writes
        "HttpToolsProtocol",
        "RequestResponseCycle",  # what _FastCycle stands in for
    ),
    "httptools": ("HttpParserError", "parse_url"),
    # Attributes of an HttpToolsProtocol (set by its __init__, connection_made and
    # on_message_begin) that the fast lane reads or sets.
    "HttpToolsProtocol": (
        "app",
        "connections",  # with tasks and limit_concurrency: uvicorn's 503 rule
        "cycle",  # _FastCycle takes its place while the fast lane serves a request
        "expect_100_continue",
        "headers",
        "limit_concurrency",
        "loop",
        "on_response_complete",  # finishes a request: keep-alive timer, pipelining
        "parser",
        "root_path",
        "scope",
        "server_state",
        "tasks",
        "transport",
        "url",
    ),
    "HttpRequestParser": ("get_http_version", "get_method", "should_keep_alive", "should_upgrade"),
    "ServerState": ("default_headers",),  # the date and server headers, renewed each second
}

# Outside a wasmlet app (an app without settings): the settings' defaults.
_DEFAULT_SETTINGS = Settings.model_construct()


def _settings_of(app: Any) -> Settings:
    """The settings of the wasmlet app uvicorn serves, inside any middleware uvicorn wrapped
    around it (each keeps the app it wraps as `.app`)."""
    for _ in range(8):
        if isinstance(app, HotPath):
            return app.state.settings
        app = getattr(app, "app", None)
    return _DEFAULT_SETTINGS


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


# Responses up to this size go out in one write with their head; larger ones in two, so a
# big body is not copied just to prepend a few hundred bytes.
_JOIN_LIMIT = 64 * 1024


# Every connection's header deadline (from the first byte of a request to the end of its
# header block), on one timer.
_HEADS = Deadlines()

_rendered_defaults: tuple[object, bytes] = (None, b"")


def _default_headers(headers: Headers) -> bytes:
    """uvicorn's default headers (date, server) as bytes; uvicorn replaces the list once a
    second, so they are rendered once per list."""
    global _rendered_defaults
    seen, rendered = _rendered_defaults
    if seen is not headers:
        rendered = b"".join(b"%s: %s\r\n" % item for item in headers)
        _rendered_defaults = (headers, rendered)
    return rendered


class _NoEvent:
    def set(self) -> None:
        pass


class _FastCycle:
    """What uvicorn's connection handling reads of a RequestResponseCycle, for a request
    the fast lane serves."""

    __slots__ = ("disconnected", "keep_alive", "message_event", "response_complete")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False
        self.message_event = _NoEvent()


# The `type: ignore`s below stand for two facts the checker cannot see: a fast call (`_fast`)
# exists only when there is a lane (`_lane`), and while the fast lane serves a request
# `self.cycle` is its _FastCycle (uvicorn types the attribute as its RequestResponseCycle).
class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _max_header_bytes: int
    _header_timeout_s: float
    _header_bytes = 0
    _refusal: tuple[int, str] | None = None
    _fast: FastCall | None = None  # the fast-lane request whose body is arriving
    _fast_body: list[bytes]
    _fast_size = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app
        settings = _settings_of(app)
        self._max_header_bytes = settings.max_header_bytes
        self._header_timeout_s = settings.header_timeout_ms / 1000
        # Only an app uvicorn did not wrap (server.py: no proxy headers, no trace logging):
        # the fast lane would bypass the wrapper.
        self._lane: HotPath | None = app if isinstance(app, HotPath) and app.fast_lane else None
        self._fast_body = []

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._refusal = None
        _HEADS.watch(self, time.monotonic() + self._header_timeout_s, self._headers_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # _count inlined and the parent named rather than found with super(): this runs
        # for every header, and super() costs more than the rest together.
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_header_bytes:
            self._headers_too_big()
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        _HEADS.unwatch(self)
        lane = self._lane
        if lane is None or not self._start_fast(lane):
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        call = self._fast
        if call is None:
            super().on_body(body)
            return
        self._fast_size += len(body)
        limit = self._lane.max_body  # type: ignore[union-attr]  # a fast call has a lane
        if self._fast_size > limit:
            self._drop_fast(call)
            self.cycle.keep_alive = False  # the rest of the body is not worth reading
            self._respond(
                self.cycle,  # type: ignore[arg-type]  # a _FastCycle in the fast lane
                error_outcome(PayloadTooLarge(f"request body exceeds the {limit}-byte limit")),
            )
            return
        self._fast_body.append(body)

    def on_message_complete(self) -> None:
        call = self._fast
        if call is None:
            super().on_message_complete()
            return
        lane: HotPath = self._lane  # type: ignore[assignment]  # a fast call has a lane
        self._fast = None
        lane.deadlines.unwatch(self)
        chunks, self._fast_body, self._fast_size = self._fast_body, [], 0
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        cycle: _FastCycle = self.cycle  # type: ignore[assignment]  # set by _start_fast
        try:
            result = lane.fast_run(call, body)
        except Exception:  # a host-side bug: answer this request, keep serving the others
            log.exception("fast-lane invocation failed")
            result = error_outcome(WasmletError("internal error"))
        if isinstance(result, Outcome):
            self._respond(cycle, result)
        else:
            task = self.loop.create_task(self._respond_later(cycle, result))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    def connection_lost(self, exc: Exception | None) -> None:
        _HEADS.unwatch(self)
        call = self._fast
        if call is not None:
            self._drop_fast(call)
        super().connection_lost(exc)

    # -- the fast lane ---------------------------------------------------------------------

    def _start_fast(self, lane: HotPath) -> bool:
        """Take the request whose head just arrived into the fast lane, if it qualifies."""
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.expect_100_continue:
            return False  # pipelined behind a request in progress; or waits for a 100
        parser = self.parser
        if parser.get_http_version() != "1.1" or parser.should_upgrade():
            return False
        method = parser.get_method().decode("ascii")
        limit = self.limit_concurrency
        if method == "HEAD" or (
            # uvicorn's 503 rule, as its on_headers_complete has it (inline there, so it
            # cannot be called): such a request is left to that method, which answers it.
            # tests/api/test_http_protocol.py holds the two conditions together.
            limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit)
        ):
            return False
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        scope = self.scope
        scope["method"] = method
        scope["path"] = self.root_path + (unquote(path) if "%" in path else path)
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = url.query or b""
        try:
            # uvicorn types its scope as a TypedDict; it is the dict the ASGI path gets too.
            answer = lane.fast(scope)  # type: ignore[arg-type]
        except Exception:  # a host-side bug: let the ASGI path answer (and log) it
            log.exception("fast-lane admission failed")
            return False
        if answer is None:
            return False
        # `cycle` keeps the type uvicorn gives self.cycle: hence this ignore and the next.
        self.cycle = cycle = _FastCycle(parser.should_keep_alive())  # type: ignore[assignment]
        if isinstance(answer, FastCall):
            self._fast = answer
            deadline = time.monotonic() + lane.deadlines.ms / 1000
            lane.deadlines.watch(self, deadline, self._body_too_slow)
        else:  # refused at admission; its body, if any, is read and dropped by the parser
            self._respond(cycle, answer)  # type: ignore[arg-type]  # the _FastCycle above
        return True

    def _body_too_slow(self) -> None:
        """The body deadline passed (BodyDeadlines): answer 408 and close."""
        call = self._fast
        if call is None:
            return
        self._drop_fast(call)
        cycle: _FastCycle = self.cycle  # type: ignore[assignment]  # set by _start_fast
        cycle.keep_alive = False
        ms = self._lane.deadlines.ms  # type: ignore[union-attr]  # a fast call has a lane
        exc = InvalidRequest(
            f"the request body did not arrive within {ms} ms (body_timeout_ms)", status=408
        )
        self._respond(cycle, error_outcome(exc))

    def _drop_fast(self, call: FastCall) -> None:
        lane: HotPath = self._lane  # type: ignore[assignment]  # a fast call has a lane
        self._fast = None
        self._fast_body, self._fast_size = [], 0
        lane.deadlines.unwatch(self)
        lane.fast_abandon(call)

    async def _respond_later(self, cycle: _FastCycle, pending: Awaitable[Outcome]) -> None:
        try:
            outcome = await pending
        except Exception:
            log.exception("fast-lane invocation failed")
            outcome = error_outcome(WasmletError("internal error"))
        self._respond(cycle, outcome)

    def _respond(self, cycle: _FastCycle, outcome: Outcome) -> None:
        """Write a whole response and finish the request as uvicorn's cycle would."""
        if cycle.disconnected or cycle.response_complete:
            return
        transport = self.transport
        if transport.is_closing():
            cycle.response_complete = True
            return
        headers, body = response_parts(outcome)
        try:
            head = self._head(outcome.status, headers, cycle.keep_alive)
        except ValueError as exc:
            log.error("invalid response from a function: %s", exc)
            headers, body = response_parts(error_outcome(WasmletError("internal error")))
            head = self._head(500, headers, cycle.keep_alive)
        if len(body) <= _JOIN_LIMIT:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        cycle.response_complete = True
        if not cycle.keep_alive:
            transport.close()
        self.on_response_complete()

    def _head(self, status: int, headers: Headers, keep_alive: bool) -> bytes:
        line = STATUS_LINE.get(status)
        if line is None:
            raise ValueError(f"status {status}")
        # The same checks as uvicorn's, one search each over all names and all values
        # (neither character class spans a boundary between them).
        names = b"".join([name for name, _ in headers])
        values = b"".join([value for _, value in headers])
        if HEADER_RE.search(names) or HEADER_VALUE_RE.search(values):
            raise ValueError("a response header has a character HTTP does not allow")
        parts = [line, _default_headers(self.server_state.default_headers)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self._max_header_bytes:
            self._headers_too_big()

    def _headers_too_big(self) -> None:
        self._refusal = (431, f"request headers exceed {self._max_header_bytes} bytes")
        # Stops the parser; uvicorn's data_received then answers through send_400_response.
        raise httptools.HttpParserError(self._refusal[1])

    def _headers_too_slow(self) -> None:
        if not self.transport.is_closing():
            timeout = self._header_timeout_s
            self._refuse(408, f"request headers not complete within {timeout:g} s")

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(*self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse(self, status: int, message: str) -> None:
        body = json.dumps({"error": {"code": "invalid_request", "message": message}}).encode()
        head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
        self.transport.write(
            head
            + b"content-type: application/json\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        self.transport.close()
