"""Host names and patterns (hostnames.py) and who may route them (registry/hosts.py)."""

from __future__ import annotations

import pytest

from wasmlet.hostnames import (
    HostSet,
    canonical,
    covers,
    intersects,
    matches,
    normalize_pattern,
    platform_hosts,
    related,
)
from wasmlet.registry.hosts import HostOwners


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("Shop.Test", "shop.test"),
        ("shop.test.", "shop.test"),
        ("shop.test:8443", "shop.test"),
        ("[::1]:8080", "::1"),
        ("[::0001]", "::1"),
        ("::1", "::1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7F000001:80", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("1.example", "1.example"),  # a name, not an address
        ("99999999999", "99999999999"),  # no address either
    ],
)
def test_canonical(raw: str, host: str) -> None:
    assert canonical(raw) == host


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [("Shop.Test.", "shop.test"), ("*.Shop.Test", "*.shop.test"), ("127.1", "127.0.0.1")],
)
def test_normalize_pattern(raw: str, pattern: str) -> None:
    assert normalize_pattern(raw) == pattern


@pytest.mark.parametrize(
    "raw", ["shop.test:80", "http://shop.test", "shop.test/x", "*", "*.*.test", "a..b", "-a.b"]
)
def test_normalize_pattern_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_pattern(raw)


def test_matches_covers_intersects() -> None:
    assert matches("shop.test", "shop.test") and not matches("shop.test", "a.shop.test")
    assert matches("*.shop.test", "a.b.shop.test") and not matches("*.shop.test", "shop.test")
    assert not matches("*.shop.test", "xshop.test")
    assert covers("*.test", "shop.test") and covers("*.test", "*.shop.test")
    assert covers("*.test", "*.test") and covers("a.test", "a.test")
    assert not covers("*.shop.test", "shop.test") and not covers("a.test", "*.a.test")
    assert not covers("*.shop.test", "*.test") and not covers("*.test", "*.xtest")
    assert intersects("*.test", "shop.test") and intersects("shop.test", "*.test")
    assert intersects("*.test", "*.a.test") and intersects("*.a.test", "*.test")
    assert not intersects("shop.test", "*.shop.test") and not intersects("a.test", "b.test")


def test_related_includes_parent_domains() -> None:
    for a, b in [
        ("shop.test", "shop.test"),
        ("shop.test", "*.shop.test"),  # no shared host, but the parent sets their cookies
        ("shop.test", "a.shop.test"),
        ("*.shop.test", "a.b.shop.test"),
        ("*.test", "shop.test"),
    ]:
        assert related(a, b) and related(b, a), (a, b)
    for a, b in [("a.test", "b.test"), ("*.a.test", "*.b.test"), ("shop.test", "xshop.test")]:
        assert not related(a, b), (a, b)


def test_platform_hosts() -> None:
    hosts = platform_hosts(["LocalHost", "[::1]", "*.api.test"], "127.0.0.1")
    for host in ("localhost", "::1", "127.0.0.1", "x.api.test"):
        assert host in hosts
    assert "api.test" not in hosts and "shop.test" not in hosts
    assert hosts.touches("*.0.0.1") and hosts.touches("*.api.test") and hosts.touches("localhost")
    assert not hosts.touches("x.localhost")
    assert "anything" not in HostSet()


def test_who_may_route_a_host() -> None:
    owners = HostOwners([("a", "shop.test"), ("a", "*.shop.test"), ("b", "*.b.test")])
    assert owners.may_route("a", "shop.test") and owners.may_route("a", "x.shop.test")
    assert owners.may_route("a", "*.x.shop.test") and owners.may_route("b", "*.b.test")
    for namespace, host in [
        ("a", ""),  # any host
        ("a", "*.test"),  # wider than its own
        ("a", "b.test"),
        ("b", "shop.test"),
        ("b", "b.test"),  # the bare domain was not given, only its sub-domains
        ("c", "c.test"),  # nothing assigned at all
        ("default", "shop.test"),
        ("default", "x.b.test"),
        ("default", "*.test"),  # would take a's and b's hosts' unmatched paths
    ]:
        assert not owners.may_route(namespace, host), (namespace, host)
    for host in ("", "b.test", "other.example", "*.example"):
        assert owners.may_route("default", host), host
