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
from functools import lru_cache
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from wasmlet.host.context import HostContext, HostError
from wasmlet.host.egress import EgressPolicy, Listener, build_policy, listeners_of, parse_hosts
from wasmlet.names import namespace_of

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


def egress_policy(ctx: HostContext) -> EgressPolicy:
    """The policy for this guest's namespace: its quota's list, else the node's."""
    services = ctx.services
    if services is None:  # runtime-only use: public addresses only
        return build_policy((), ())
    settings = services.settings
    entries = services.egress_allow(namespace_of(ctx.function)) if services.egress_allow else None
    if entries is None:
        entries = tuple(settings.egress_allow)
    return build_policy(
        tuple(entries),
        _listeners(settings.host, settings.port, settings.metrics_port),
        _hosts(tuple(settings.egress_hosts)),
    )


@lru_cache(maxsize=8)
def _listeners(host: str, port: int, metrics_port: int | None) -> tuple[Listener, ...]:
    return listeners_of(host, (port, metrics_port))


@lru_cache(maxsize=8)
def _hosts(entries: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return parse_hosts(list(entries))


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
    """One outbound request on behalf of a guest. Every hop (redirects are followed here,
    at most _MAX_REDIRECTS) must pass both the function's own allow rule and the egress
    policy, and connects to the address the policy checked. Denials and transport failures
    raise HostError; each request is noted in `ctx.http_calls` (redacted when recorded)."""
    spec = ctx.spec
    method = method.upper()
    if spec.allowed_methods and method not in spec.allowed_methods:
        raise HostError(f"HTTP method {method} is not allowed for this function")
    max_calls = ctx.service().settings.max_http_calls_per_invocation if ctx.services else 64
    if len(ctx.http_calls) >= max_calls:
        raise HostError(f"more than {max_calls} HTTP requests in one invocation")
    timeout = min(ctx.remaining(), (timeout_ms or spec.http_timeout_ms) / 1000)
    cap = spec.max_http_response_bytes if limit is None else limit
    if ctx.services is not None:  # a version stored before the node's cap was lowered
        cap = min(cap, ctx.service().settings.max_http_response_bytes)
    started = time.perf_counter()
    record: dict[str, object] = {"method": method, "host": urlsplit(url).hostname or "?"}
    ctx.http_calls.append(record)
    try:
        policy = egress_policy(ctx)
        # trust_env=False: no proxy from the environment may stand between the checked
        # address and the connection.
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = _follow(
                client, policy, record, method, url, headers, body, allow, follow_redirects, cap
            )
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


def _pinned(
    client: httpx.Client,
    policy: EgressPolicy,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
) -> tuple[httpx.Request, str]:
    """A request for `url` that connects to the address the policy checked, with the
    Host header and TLS server name (SNI and certificate check) still the URL's name.
    The URL is split here, not by httpx, so every spelling the system resolver accepts
    (`0177.0.0.1`, `127.1`, ...) is checked as the address it stands for."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise HostError(f"HTTP request to {url}: invalid port") from None
    address = policy.pick(host, port)
    userinfo = parts.netloc.rpartition("@")[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{userinfo}@{literal}:{port}" if userinfo else f"{literal}:{port}"
    sent = dict(headers)
    if not any(k.lower() == "host" for k in sent):
        sent["Host"] = parts.netloc.rpartition("@")[2]
    try:
        request = client.build_request(
            method,
            urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")),
            headers=sent,
            content=body or None,
            extensions={"sni_hostname": host},
        )
    except httpx.InvalidURL as exc:
        raise HostError(f"HTTP request to {url}: invalid URL ({exc})") from None
    return request, str(address)


def _follow(
    client: httpx.Client,
    policy: EgressPolicy,
    record: dict[str, object],
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
        request, record["address"] = _pinned(client, policy, method, url, headers, body)
        resp = client.send(request, stream=True)
        try:
            location = resp.headers.get("location")
            if follow_redirects and resp.is_redirect and location:
                # Joined to the URL the guest named, not the pinned address, so the next
                # hop is checked (and resolved) on its own.
                url = urljoin(url, location)
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
        finally:
            resp.close()
    raise HostError(f"HTTP request to {url}: too many redirects")
