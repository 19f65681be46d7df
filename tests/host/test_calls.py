"""The call capability's namespace rules, below the HTTP tests (tests/security/test_calls.py):
even a spec holding a qualified grant (one stored before the grant rule, or written to the
database by hand) reaches nothing outside the caller's namespace."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from wasmlet.config import Settings
from wasmlet.host import calls
from wasmlet.host.context import HostContext, HostError
from wasmlet.host.kv.memory import MemoryKv
from wasmlet.host.services import HostServices
from wasmlet.runtime.invoker import Invoker
from wasmlet.spec import FunctionSpec


def context(function: str, *grants: str) -> tuple[HostContext, list[str]]:
    called: list[str] = []

    def record(ctx: HostContext, name: str, payload: bytes) -> bytes:
        called.append(name)
        return b"ok"

    kv = MemoryKv(10, 10_000)
    services = HostServices(Settings(), kv, kv, call=record)
    base = FunctionSpec(abi="extism", export="run", timeout_ms=1000, memory_mb=16, reuse=False,
                        pool_size=1)  # fmt: skip
    spec = base.model_copy(update={"capabilities": list(grants)})  # unvalidated
    ctx = HostContext(function, spec, services)
    ctx.deadline = float("inf")
    return ctx, called


def test_a_bare_name_is_qualified_with_the_callers_namespace() -> None:
    ctx, called = context("a~caller", "call:helper")
    assert calls.call(ctx, b"helper", b"") == b"ok"
    ctx2, called2 = context("caller", "call:helper")
    calls.call(ctx2, b"helper", b"")
    assert (called, called2) == (["a~helper"], ["helper"])


@pytest.mark.parametrize("target", ["b~secret", "default~opsecret", "a~helper"])
def test_a_qualified_name_is_refused_even_when_granted(target: str) -> None:
    ctx, called = context("a~caller", f"call:{target}")
    with pytest.raises(HostError, match="invalid function name"):
        calls.call(ctx, target.encode(), b"")
    assert called == []


def test_the_invoker_resolves_nothing_outside_the_callers_namespace() -> None:
    """call_nested's own check: a qualified name of another namespace is not looked up,
    and the error is the one a missing function gets."""
    invoker: Any = SimpleNamespace(active={"opsecret": object(), "b~x": object()})
    caller, _ = context("a~caller")
    for name, shown in (("opsecret", "opsecret"), ("b~x", "x"), ("a~missing", "missing")):
        with pytest.raises(HostError) as err:
            Invoker.call_nested(invoker, caller, name, b"")
        assert str(err.value) == f"call: function {shown!r} not found"
