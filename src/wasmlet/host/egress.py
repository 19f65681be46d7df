"""Where guests' outbound HTTP may go: the egress policy.

A guest may reach public addresses. Loopback, link-local (cloud metadata), private,
shared (CGNAT), unspecified, multicast and reserved addresses, in any IPv6 wrapping of an
IPv4 address, are refused unless the operator allows them: the node's `egress_allow`, or a
namespace's own list (its quota). Entries of an allow list are CIDRs (`127.0.0.0/8`, `::1`)
or host names (`api.internal`, `*.svc.local`). The platform's own listeners are refused
whatever the list says: a guest must not reach the API or the key-less metrics port from
inside the host.

The check is made on the addresses a name resolves to, and the request then connects to
the address that was checked (host/http.py pins it), so a name cannot be re-resolved to
another address between the check and the connection (DNS rebinding).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache

from wasmlet.host.context import HostError

_HOST_RE = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9\-]{0,62}\.)*[a-z0-9\-]{0,63}", re.IGNORECASE)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never public, whatever `ipaddress.is_global` of this Python thinks (it changed across
# versions); each line says what it is.
_NOT_PUBLIC: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "an unspecified"),
    ("10.0.0.0/8", "a private"),
    ("100.64.0.0/10", "a shared (CGNAT)"),
    ("127.0.0.0/8", "a loopback"),
    ("169.254.0.0/16", "a link-local"),
    ("172.16.0.0/12", "a private"),
    ("192.0.0.0/24", "a reserved"),
    ("192.0.2.0/24", "a reserved"),
    ("192.88.99.0/24", "a reserved"),
    ("192.168.0.0/16", "a private"),
    ("198.18.0.0/15", "a reserved"),
    ("198.51.100.0/24", "a reserved"),
    ("203.0.113.0/24", "a reserved"),
    ("224.0.0.0/4", "a multicast"),
    ("240.0.0.0/4", "a reserved"),
    ("::/128", "an unspecified"),
    ("::1/128", "a loopback"),
    ("64:ff9b:1::/48", "a private"),
    ("100::/64", "a reserved"),
    ("2001:db8::/32", "a reserved"),
    ("fc00::/7", "a private"),
    ("fe80::/10", "a link-local"),
    ("fec0::/10", "a private"),
    ("ff00::/8", "a multicast"),
)
_NOT_PUBLIC_NETS = tuple((ipaddress.ip_network(net), kind) for net, kind in _NOT_PUBLIC)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")


class EgressDenied(HostError):
    """The egress policy refused a destination."""


def check_egress_entries(entries: list[str]) -> list[str]:
    """Refuse (ValueError) an entry that is neither a CIDR nor a host name (pattern)."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_RE.fullmatch(entry) or len(entry) > 253:
                raise ValueError(
                    f"egress entry {entry!r} is neither a CIDR nor a host name"
                ) from None
    return entries


def embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and would reach: mapped, compatible,
    NAT64, 6to4 or Teredo."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def non_public_kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address ("a loopback", ...), or None when it is."""
    inner = embedded_v4(ip)
    if inner is not None:
        return non_public_kind(inner)
    for net, kind in _NOT_PUBLIC_NETS:
        if ip.version == net.version and ip in net:
            return kind
    if not ip.is_global or ip.is_multicast:
        return "a reserved"
    return None


def normal_host(host: str) -> str:
    """A URL's host as names compare: lower case, no brackets, no trailing dot."""
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Listener:
    """One address the platform listens on; an unspecified host means every local one."""

    ip: IPAddress
    port: int

    def covers(self, ip: IPAddress, port: int) -> bool:
        if port != self.port:
            return False
        if self.ip.is_unspecified:
            return is_local(ip)
        return ip == self.ip or embedded_v4(ip) == self.ip


def is_local(ip: IPAddress) -> bool:
    """Whether `ip` is an address of this machine (the kernel lets us bind to it)."""
    inner = embedded_v4(ip)
    target = inner if inner is not None else ip
    if target.is_loopback or target.is_unspecified:
        return True
    family = socket.AF_INET if target.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(target), 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    networks: tuple[IPNetwork, ...]
    names: tuple[str, ...]  # lower-case names or `*.` patterns
    listeners: tuple[Listener, ...]
    hosts: tuple[tuple[str, tuple[str, ...]], ...] = ()  # static name -> addresses

    def allows_name(self, host: str) -> bool:
        name = normal_host(host)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names)

    def allows_address(self, ip: IPAddress) -> bool:
        candidates = [ip]
        inner = embedded_v4(ip)
        if inner is not None:
            candidates.append(inner)
        return any(c in net for c in candidates for net in self.networks)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` stands for (an address literal in any spelling the
        system's resolver accepts, `127.1` or `0x7f000001` included, is one of them)."""
        name = normal_host(host)
        static = dict(self.hosts).get(name)
        if static is not None:
            return [ipaddress.ip_address(a) for a in static]
        try:
            return [ipaddress.ip_address(name.split("%")[0])]
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise HostError(f"HTTP request to {host}: the name does not resolve") from None
        found: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if ip not in found:
                found.append(ip)
        if not found:
            raise HostError(f"HTTP request to {host}: the name does not resolve")
        return found

    def pick(self, host: str, port: int) -> IPAddress:
        """The address to connect to for `host:port`: every address the name resolves to
        must pass (EgressDenied names the first that does not); the first one is used."""
        addresses = self.resolve(host, port)
        name_allowed = self.allows_name(host)
        for ip in addresses:
            if any(listener.covers(ip, port) for listener in self.listeners):
                raise EgressDenied(
                    f"HTTP request to {host} denied by the egress policy: "
                    f"{ip} port {port} is this platform's own listener"
                )
            kind = non_public_kind(ip)
            if kind is not None and not name_allowed and not self.allows_address(ip):
                raise EgressDenied(
                    f"HTTP request to {host} denied by the egress policy: {ip} is {kind} "
                    "address (the operator may allow it with WASMLET_EGRESS_ALLOW)"
                )
        return addresses[0]


def listeners_of(host: str, ports: tuple[int | None, ...]) -> tuple[Listener, ...]:
    """The platform's listeners: its bind host (a name is resolved) on each port."""
    try:
        ips = [ipaddress.ip_address(normal_host(host))]
    except ValueError:
        try:
            ips = [
                ipaddress.ip_address(str(info[4][0]).split("%")[0])
                for info in socket.getaddrinfo(normal_host(host), None, type=socket.SOCK_STREAM)
            ]
        except OSError:
            ips = [ipaddress.ip_address("0.0.0.0")]  # unknown: treat every local address as it
    return tuple(Listener(ip, port) for ip in ips for port in ports if port)


@lru_cache(maxsize=256)
def build_policy(
    entries: tuple[str, ...],
    listeners: tuple[Listener, ...],
    hosts: tuple[tuple[str, tuple[str, ...]], ...] = (),
) -> EgressPolicy:
    networks: list[IPNetwork] = []
    names: list[str] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            names.append(normal_host(entry))
    return EgressPolicy(tuple(networks), tuple(names), listeners, hosts)


def parse_hosts(entries: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`name=address[|address...]` entries (WASMLET_EGRESS_HOSTS, like curl's --resolve):
    names resolved by the operator's table instead of DNS."""
    table: list[tuple[str, tuple[str, ...]]] = []
    for entry in entries:
        name, sep, addresses = entry.partition("=")
        if not sep:
            raise ValueError(f"egress host entry {entry!r} is not name=address")
        ips = tuple(str(ipaddress.ip_address(a.strip())) for a in addresses.split("|"))
        table.append((normal_host(name), ips))
    return tuple(table)
