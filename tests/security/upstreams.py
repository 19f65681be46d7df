"""Loopback HTTP servers the attack tests aim guests at: each counts what reached it."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass
class Upstream:
    host: str  # as it goes in a URL: `127.0.0.1`, `[::1]`
    port: int
    seen: list[tuple[str, str]] = field(default_factory=list)  # (Host header, path)

    def url(self, path: str = "/hello", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    """`/hello` answers a greeting; `/to?URL` redirects (302) to URL."""

    def do_GET(self) -> None:
        upstream: Upstream = self.server.upstream  # type: ignore[attr-defined]
        upstream.seen.append((self.headers.get("Host", ""), self.path))
        path, _, query = self.path.partition("?")
        if path == "/to":
            self.send_response(302)
            self.send_header("Location", unquote(query))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"hello from the upstream"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextmanager
def upstream(address: str = "127.0.0.1") -> Iterator[Upstream]:
    """A server on one loopback address (`::1` for IPv6)."""
    cls = _Server6 if ":" in address else http.server.ThreadingHTTPServer
    server = cls((address, 0), _Handler)
    found = Upstream(f"[{address}]" if ":" in address else address, server.server_address[1])
    server.upstream = found  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
