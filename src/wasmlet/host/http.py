"""Outbound HTTP: only to allow-listed hosts, with allowed methods, a timeout and a
response cap; every request a guest makes is noted in its invocation record.

Used by Extism's built-in `http_request`, wasmlet's own `http_request` host function and
Otoroshi's `proxy_http_call`; each decides which allow rule applies (see `extism_allowed`
and `otoroshi_allowed`).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from wasmlet.host.context import HostContext, HostError

_MAX_REDIRECTS = 5


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    first_headers: dict[str, str]  # the same, keeping the first value (Otoroshi's rule)


def _host_port(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in ("http", "https"):
        return None
    try:
        return host, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None


def _matches(host: str, port: int, pattern: str) -> bool:
    """A glob against the host, or against `host:port` when the pattern names a port."""
    target = f"{host}:{port}" if ":" in pattern else host
    return fnmatch.fnmatchcase(target, pattern.lower())


def extism_allowed(url: str, patterns: list[str]) -> bool:
    """Extism's rule: the URL's host matches one glob; an empty list denies everything."""
    where = _host_port(url)
    return where is not None and any(_matches(*where, p) for p in patterns)


def otoroshi_allowed(url: str, patterns: list[str]) -> bool:
    """Otoroshi's rule: an empty list or `*` allows every host, else a glob must match.
    (Only reachable by functions granted the `http` capability.)"""
    where = _host_port(url)
    if where is None:
        return False
    return not patterns or "*" in patterns or any(_matches(*where, p) for p in patterns)


def fetch(
    ctx: HostContext,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    allow: Callable[[str], bool],
    timeout_ms: int | None = None,
    follow_redirects: bool = True,
    limit: int | None = None,
) -> HttpResponse:
    """One outbound request on behalf of a guest, following redirects only to allowed
    hosts (each hop is checked). Denials and transport failures raise HostError."""
    spec = ctx.spec
    method = method.upper()
    if spec.allowed_methods and method not in spec.allowed_methods:
        raise HostError(f"HTTP method {method} is not allowed for this function")
    max_calls = ctx.service().settings.max_http_calls_per_invocation if ctx.services else 64
    if len(ctx.http_calls) >= max_calls:
        raise HostError(f"more than {max_calls} HTTP requests in one invocation")
    timeout = min(ctx.remaining(), (timeout_ms or spec.http_timeout_ms) / 1000)
    cap = spec.max_http_response_bytes if limit is None else limit
    started = time.perf_counter()
    record: dict[str, object] = {"method": method, "host": urlsplit(url).hostname or "?"}
    ctx.http_calls.append(record)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = _follow(client, method, url, headers, body, allow, follow_redirects, cap)
        record["status"] = response.status
        return response
    except httpx.HTTPError as exc:
        record["status"] = 0
        record["error"] = exc.__class__.__name__
        raise HostError(f"HTTP request to {url} failed: {exc.__class__.__name__}") from None
    except HostError as exc:
        record["status"] = 0
        record["error"] = str(exc)
        raise
    finally:
        record["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)


def _follow(
    client: httpx.Client,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    allow: Callable[[str], bool],
    follow_redirects: bool,
    cap: int,
) -> HttpResponse:
    for _hop in range(_MAX_REDIRECTS + 1):
        if not allow(url):
            raise HostError(f"HTTP request to {url} is not allowed")
        with client.stream(method, url, headers=headers, content=body or None) as resp:
            if follow_redirects and resp.is_redirect and resp.next_request is not None:
                url = str(resp.next_request.url)
                if resp.status_code in (301, 302, 303):
                    method, body = "GET", b""
                continue
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise HostError(f"HTTP response body exceeds {cap} bytes")
                chunks.append(chunk)
            first: dict[str, str] = {}
            for key, value in resp.headers.multi_items():
                first.setdefault(key.lower(), value)
            return HttpResponse(
                resp.status_code,
                {k.lower(): v for k, v in resp.headers.multi_items()},
                b"".join(chunks),
                first,
            )
    raise HostError(f"HTTP request to {url}: too many redirects")
