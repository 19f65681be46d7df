"""uvicorn's httptools protocol with the two limits it lacks: the size of a request's
header block and the time the header block may take to arrive.

httptools accepts headers of any size and waits for them forever, so one client can hold
a connection (and a place under `limit_concurrency`) open by sending a header a byte at a
time, or make the server buffer megabytes of headers. Here a header block over
MAX_HEADER_BYTES is answered with 431, and one not complete HEADER_TIMEOUT_S after the
request began with 408; both close the connection. Bodies have their own deadline
(api/hotpath.py).
"""

from __future__ import annotations

import asyncio
import json
import os

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# From the settings of the same names (server.py exports them to the worker processes).
MAX_HEADER_BYTES = int(os.environ.get("WASMLET_MAX_HEADER_BYTES", 64 * 1024))
HEADER_TIMEOUT_S = int(os.environ.get("WASMLET_HEADER_TIMEOUT_MS", 10_000)) / 1000

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _header_bytes = 0
    _header_timer: asyncio.TimerHandle | None = None
    _refusal: tuple[int, str] | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._refusal = None
        self._cancel_timer()
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refusal = (431, f"request headers exceed {MAX_HEADER_BYTES} bytes")
            # Stops the parser; data_received then answers through send_400_response.
            raise httptools.HttpParserError(self._refusal[1])

    def _cancel_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self._refuse(408, f"request headers not complete within {HEADER_TIMEOUT_S:g} s")

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
