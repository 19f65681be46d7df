"""Function specs: validation at the edge, limits, merging."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.runtime.support import clean_env
from wasmlet.config import Settings
from wasmlet.errors import InvalidRequest
from wasmlet.spec import FunctionSpec, SpecUpdate, check_limits, merge, parse_update

BASE = {"abi": "core", "export": "gcd", "timeout_ms": 5000, "memory_mb": 64, "reuse": True,
        "pool_size": 32}  # fmt: skip


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch, tmp_path)


def test_empty_update_is_all_none() -> None:
    update = parse_update({})
    assert update.model_dump(exclude_none=True) == {}


def test_valid_update() -> None:
    update = parse_update(
        {
            "abi": "core",
            "export": "my export",
            "timeout_ms": 1,
            "memory_mb": 1,
            "fuel": 0,
            "config": {"KEY": "v", "a.b-c_d": "w"},
            "env": {"_X": "1"},
            "allowed_hosts": ["example.com", "*.example.com", "10.0.0.1:8080"],
            "reuse": False,
            "pool_size": 1024,
        }
    )
    assert update.allowed_hosts == ["example.com", "*.example.com", "10.0.0.1:8080"]
    assert update.pool_size == 1024


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"bogus": 1}, "bogus"),
        ({"timeout_ms": -5}, "timeout_ms"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"fuel": -1}, "fuel"),
        ({"pool_size": 0}, "pool_size"),
        ({"pool_size": 1025}, "pool_size"),
        ({"timeout_ms": "soon"}, "timeout_ms"),
        ({"allowed_hosts": ["http://example.com"]}, "allowed_hosts"),
        ({"allowed_hosts": ["exa mple.com"]}, "allowed_hosts"),
        ({"allowed_hosts": ["example.com:123456"]}, "allowed_hosts"),
        ({"allowed_hosts": ["example.com/path"]}, "allowed_hosts"),
        ({"allowed_hosts": "example.com"}, "allowed_hosts"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"A=B": "x"}}, "env"),
        ({"config": {"": "x"}}, "config"),
        ({"config": {"k": 1}}, "config"),
        ({"export": "a/b"}, "export"),
        ({"export": ""}, "export"),
        ({"export": "x" * 257}, "export"),
        ({"export": "tab\there"}, "export"),
    ],
)
def test_invalid_update(data: dict, where: str) -> None:
    with pytest.raises(ValidationError):
        SpecUpdate.model_validate(data)
    with pytest.raises(InvalidRequest) as exc:
        parse_update(data)
    assert exc.value.message.startswith(f"invalid spec field {where}")
    assert exc.value.status == 422


def test_host_error_names_the_pattern() -> None:
    with pytest.raises(InvalidRequest, match=r"invalid host pattern 'exa mple\.com'"):
        parse_update({"allowed_hosts": ["ok.com", "exa mple.com"]})


def test_check_limits(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_timeout_ms=1000, max_memory_mb=128)
    check_limits(SpecUpdate(), settings)
    check_limits(SpecUpdate(timeout_ms=1000, memory_mb=128), settings)
    with pytest.raises(InvalidRequest, match="timeout_ms may be at most 1000"):
        check_limits(SpecUpdate(timeout_ms=1001), settings)
    with pytest.raises(InvalidRequest, match="memory_mb may be at most 128"):
        check_limits(SpecUpdate(memory_mb=129), settings)


def test_function_spec_defaults_and_memory_bytes() -> None:
    spec = FunctionSpec(**BASE)
    assert spec.fuel is None
    assert spec.config == {} and spec.env == {} and spec.allowed_hosts == []
    assert spec.memory_bytes == 64 * 1024 * 1024
    with pytest.raises(ValidationError):
        spec.timeout_ms = 1  # type: ignore[misc]  (frozen)


def test_function_spec_ignores_unknown_stored_fields() -> None:
    # Versions stored by a newer release may carry fields this one does not know.
    spec = FunctionSpec.model_validate({**BASE, "future_field": True})
    assert "future_field" not in spec.canonical()


def test_canonical_round_trips() -> None:
    spec = FunctionSpec(**BASE, env={"A": "1"}, allowed_hosts=["x.com"], fuel=10)
    canonical = spec.canonical()
    expected = {**BASE, "env": {"A": "1"}, "allowed_hosts": ["x.com"], "fuel": 10, "config": {}}
    assert {k: canonical[k] for k in expected} == expected
    assert FunctionSpec.model_validate(canonical) == spec


def test_merge_applies_only_set_fields() -> None:
    base = FunctionSpec(**BASE, env={"A": "1"}, fuel=10)
    merged = merge(base, SpecUpdate(timeout_ms=7, config={"k": "v"}))
    assert merged["timeout_ms"] == 7
    assert merged["config"] == {"k": "v"}
    assert merged["env"] == {"A": "1"}  # kept
    assert merged["fuel"] == 10
    assert merged["memory_mb"] == 64
    assert merge(base, SpecUpdate()) == base.canonical()
    assert base.timeout_ms == 5000  # the base is not modified
