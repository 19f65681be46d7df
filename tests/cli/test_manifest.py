"""Extism manifests read by the CLI: sources, hashes, naming rules, spec mapping."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from wasmlet.cli.manifest import ManifestError, load_manifest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MATH = (FIXTURES / "extism_math.wat").read_bytes()
MAIN = (FIXTURES / "extism_linked_main.wat").read_bytes()


def write(tmp_path: Path, manifest: dict) -> Path:
    (tmp_path / "math.wat").write_bytes(MATH)
    (tmp_path / "main.wat").write_bytes(MAIN)
    path = tmp_path / "plugin.json"
    path.write_text(json.dumps(manifest))
    return path


def test_single_module_and_spec_mapping(tmp_path: Path) -> None:
    module, spec, extras = load_manifest(
        write(
            tmp_path,
            {
                "wasm": [{"path": "main.wat", "hash": hashlib.sha256(MAIN).hexdigest()}],
                "memory": {"max_pages": 40, "max_var_bytes": 10, "max_http_response_bytes": 99},
                "config": {"k": "v"},
                "allowed_hosts": ["*.example.com"],
                "allowed_paths": {"ro:assets": "/assets"},
                "timeout_ms": 250,
            },
        )
    )
    assert module == MAIN and extras == {}
    assert spec == {
        "abi": "extism",
        "memory_mb": 3,  # 40 pages of 64 KiB = 2.5 MiB, rounded up
        "max_var_bytes": 10,
        "max_http_response_bytes": 99,
        "config": {"k": "v"},
        "allowed_hosts": ["*.example.com"],
        "allowed_paths": {"ro:assets": "/assets"},
        "wasi": True,
        "timeout_ms": 250,
    }


def test_inline_data_source(tmp_path: Path) -> None:
    data = base64.b64encode(MAIN).decode()
    module, _, _ = load_manifest(write(tmp_path, {"wasm": [{"data": data}]}))
    assert module == MAIN


@pytest.mark.parametrize(
    ("sources", "main", "linked"),
    [
        ([{"path": "math.wat", "name": "math"}, {"path": "main.wat"}], MAIN, {"math"}),
        (
            [{"path": "main.wat", "name": "main"}, {"path": "math.wat", "name": "math"}],
            MAIN,
            {"math"},
        ),
        (
            [{"path": "math.wat", "name": "math"}, {"path": "main.wat", "name": "app"}],
            MAIN,
            {"math"},
        ),
    ],
)
def test_naming_rules(tmp_path: Path, sources: list, main: bytes, linked: set) -> None:
    module, _, extras = load_manifest(write(tmp_path, {"wasm": sources}))
    assert module == main
    assert set(extras) == linked and extras["math"] == MATH


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"wasm": [{"path": "main.wat", "hash": "00" * 32}]}, "hash does not match"),
        ({"wasm": []}, "at least one module"),
        ({"wasm": [{"path": "main.wat"}], "unknown": 1}, "unknown manifest keys"),
        ({"wasm": [{"path": "missing.wat"}]}, "cannot read"),
        ({"wasm": [{"path": "main.wat"}, {"path": "math.wat"}]}, "only one module"),
        (
            {"wasm": [{"path": "math.wat", "name": "m"}, {"path": "main.wat", "name": "m"}]},
            "unique",
        ),
        ({"wasm": [{"data": "%%%"}]}, "base64"),
        ({"wasm": [{"path": "main.wat"}], "memory": {"pages": 1}}, "manifest.memory"),
    ],
)
def test_bad_manifests(tmp_path: Path, manifest: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        load_manifest(write(tmp_path, manifest))
