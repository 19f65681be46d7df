"""Raw ASGI response helpers shared by the hot-path routes and the error handlers."""

from __future__ import annotations

import json
from typing import Any

from wasmlet.abi import Outcome
from wasmlet.errors import WasmletError

Send = Any
# Headers a guest may not set: the server owns framing and connection management.
_GUEST_FORBIDDEN = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}


async def send_bytes(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, data: Any, extra: dict[str, str] | None = None
) -> None:
    headers = [(b"content-type", b"application/json")]
    for key, value in (extra or {}).items():
        headers.append((key.lower().encode(), value.encode()))
    await send_bytes(send, status, headers, json.dumps(data).encode())


async def send_error(send: Send, exc: WasmletError) -> None:
    await send_json(send, exc.status, exc.to_body(), exc.headers)


async def send_outcome(send: Send, outcome: Outcome) -> None:
    headers = [h for h in outcome.headers if h[0] not in _GUEST_FORBIDDEN]
    if outcome.status in (204, 304):
        # No body may follow these statuses: one would be read as the start of the next
        # response on a kept-alive connection.
        await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    await send_bytes(send, outcome.status, headers, outcome.body)
