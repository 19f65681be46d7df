"""The ABI registry and the Invocation value."""

from __future__ import annotations

import pytest

from wasmlet.abi import ABIS, Invocation, get_abi
from wasmlet.abi.core import CoreAbi
from wasmlet.abi.wasi_cgi import WasiCgiAbi
from wasmlet.errors import InvalidRequest


def test_known_abis() -> None:
    assert set(ABIS) == {"core", "wasi-cgi", "extism", "otoroshi"}
    assert isinstance(get_abi("core"), CoreAbi)
    assert isinstance(get_abi("wasi-cgi"), WasiCgiAbi)
    assert get_abi("core") is get_abi("core")


def test_reuse_policy() -> None:
    assert (CoreAbi.default_reuse, CoreAbi.allows_reuse) == (True, True)
    assert (WasiCgiAbi.default_reuse, WasiCgiAbi.allows_reuse) == (False, False)


def test_unknown_abi() -> None:
    with pytest.raises(InvalidRequest) as exc:
        get_abi("no-such-abi")
    known = ", ".join(sorted(ABIS))
    assert exc.value.message == f"unknown abi 'no-such-abi'; known: {known}"
    assert exc.value.status == 422


def test_invocation_header_lookup() -> None:
    inv = Invocation(headers=[(b"x-a", b"1"), (b"content-type", b"caf\xe9"), (b"x-a", b"2")])
    assert inv.header(b"x-a") == "1"  # the first of repeated headers
    assert inv.header(b"content-type") == "café"  # latin-1, as HTTP header bytes are
    assert inv.header(b"missing") is None
    assert inv.header(b"X-A") is None  # names are stored lower-case


def test_invocation_defaults_are_not_shared() -> None:
    a, b = Invocation(), Invocation()
    a.headers.append((b"x", b"y"))
    assert b.headers == []
    assert (a.method, a.path, a.via, a.body) == ("POST", "/", "api", b"")
