"""Host names and host patterns, as routes, namespaces and the API compare them.

A pattern is an exact name (`shop.example.com`) or `*.` and a domain (`*.example.com`: any
sub-domain of it, not the domain itself). Names are compared in one canonical form, on the
way in (a route's host, an assigned pattern, a WASMLET_API_HOSTS entry) and at request time
(the Host header): lower-case, no port, no trailing dot, IPv6 without brackets, and an IPv4
address in dotted-quad form however it was spelled (`127.1`, `0x7f000001`, `2130706433`), so
no spelling of a name reaches a route that another spelling is kept from.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from functools import lru_cache

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_PATTERN_RE = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")
# Labels inet_aton reads as numbers: decimal, octal (leading 0) or hex (0x...).
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")


def _ipv4(name: str) -> str | None:
    """The dotted quad for a name every label of which is numeric, as a resolver reads it."""
    if not all(_NUMERIC_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(name))
    except OSError:
        return None


@lru_cache(maxsize=4096)  # per request while host routes exist; few distinct names
def canonical(name: str) -> str:
    """A host name in the form every comparison uses (see the module docstring)."""
    host = name.strip().lower()
    if host.startswith("["):  # an IPv6 literal, maybe with a port after the bracket
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:  # name:port
        host = host.partition(":")[0]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.partition("%")[0]).compressed
        except ValueError:
            return host
    host = host.rstrip(".")
    return _ipv4(host) or host


def normalize_pattern(value: str) -> str:
    """A host pattern as stored: canonical, validated. ValueError says what is wrong."""
    raw = value.strip().lower()
    if "://" in raw or "/" in raw:
        raise ValueError(f"host {raw!r} must be a bare host name, without scheme or path")
    if ":" in raw:
        raise ValueError(f"host {raw!r} must not have a port: routes match any port")
    raw = raw.rstrip(".") if raw != "." else raw
    host = raw if raw.startswith("*.") else canonical(raw)
    if len(host) > 253 or not _PATTERN_RE.fullmatch(host):
        raise ValueError(
            f"host {raw!r} is not a DNS name (labels of a-z 0-9 -, optionally after '*.')"
        )
    return host


def _domain(pattern: str) -> str:
    return pattern[2:] if pattern.startswith("*.") else pattern


def _under(name: str, domain: str) -> bool:
    """True when `name` is a (strict) sub-domain of `domain`."""
    return name.endswith("." + domain)


def matches(pattern: str, host: str) -> bool:
    """Whether a canonical request host is one of the pattern's hosts."""
    if pattern.startswith("*."):
        return _under(host, pattern[2:])
    return host == pattern


def covers(outer: str, inner: str) -> bool:
    """Whether every host of pattern `inner` is a host of pattern `outer`."""
    if not outer.startswith("*."):
        return outer == inner
    domain = outer[2:]
    # `*.a.d` ends with `.d` as `x.a.d` does: a wildcard under the domain is covered too.
    return _under(inner, domain) or (inner.startswith("*.") and inner[2:] == domain)


def intersects(a: str, b: str) -> bool:
    """Whether some host is a host of both patterns."""
    return covers(a, b) or covers(b, a)


def related(a: str, b: str) -> bool:
    """Whether two patterns share a host or one names a parent domain of the other's hosts.

    Patterns of different namespaces must not be related: beyond sharing requests, a parent
    domain reads and sets the cookies of its sub-domains (`Domain=shop.example.com`), so
    `shop.example.com`, `*.shop.example.com` and `a.shop.example.com` go to one tenant.
    """
    da, db = _domain(a), _domain(b)
    return da == db or _under(da, db) or _under(db, da)


class HostSet:
    """Canonical host names and `*.` patterns, for asking whether a request host is one."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(
            sorted({e.lower() if e.startswith("*.") else canonical(e) for e in entries if e})
        )
        self.exact = frozenset(p for p in self.patterns if not p.startswith("*."))
        self.wild = tuple(p for p in self.patterns if p.startswith("*."))

    def __contains__(self, host: str) -> bool:
        return host in self.exact or any(matches(p, host) for p in self.wild)

    def touches(self, pattern: str) -> bool:
        """Whether some host of `pattern` is in the set."""
        return any(intersects(pattern, p) for p in self.patterns)


def platform_hosts(api_hosts: Iterable[str], listen_host: str) -> HostSet:
    """The hosts the API answers on: WASMLET_API_HOSTS and the address the server binds."""
    return HostSet([*api_hosts, listen_host])
