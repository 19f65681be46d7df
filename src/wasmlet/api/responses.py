"""Responses of the hot path: as ASGI messages, or as the head of an HTTP/1.1 response for
the fast lane (http_protocol.py). Both go through `response_parts`, so a guest's outcome is
framed the same way whichever path served it."""

from __future__ import annotations

import json
from typing import Any

from wasmlet.abi import Outcome
from wasmlet.errors import WasmletError

Send = Any
Headers = list[tuple[bytes, bytes]]
# Headers a guest may not set: the server owns framing and connection management.
_GUEST_FORBIDDEN = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}
_JSON = (b"content-type", b"application/json")


def error_outcome(exc: WasmletError) -> Outcome:
    """An error as the `{error: {code, message}}` JSON response every route answers with."""
    headers = [_JSON]
    for key, value in (exc.headers or {}).items():
        headers.append((key.lower().encode(), value.encode()))
    return Outcome(exc.status, headers, json.dumps(exc.to_body()).encode())


def response_parts(outcome: Outcome) -> tuple[Headers, bytes]:
    """The headers (with Content-Length, without those a guest may not set) and the body
    to send for an outcome."""
    headers = [h for h in outcome.headers if h[0] not in _GUEST_FORBIDDEN]
    if outcome.status in (204, 304):
        # No body may follow these statuses: one would be read as the start of the next
        # response on a kept-alive connection.
        return headers, b""
    body = outcome.body
    headers.append((b"content-length", b"%d" % len(body)))
    return headers, body


async def send_bytes(send: Send, status: int, headers: Headers, body: bytes) -> None:
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, data: Any, extra: dict[str, str] | None = None
) -> None:
    headers = [_JSON]
    for key, value in (extra or {}).items():
        headers.append((key.lower().encode(), value.encode()))
    await send_bytes(send, status, headers, json.dumps(data).encode())


async def send_error(send: Send, exc: WasmletError) -> None:
    await send_json(send, exc.status, exc.to_body(), exc.headers)


async def send_outcome(send: Send, outcome: Outcome) -> None:
    headers, body = response_parts(outcome)
    await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
