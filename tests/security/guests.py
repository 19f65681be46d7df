"""Guests for the attack tests: C sources in tests/fixtures/src, built with Zig the way
examples/build.py builds the examples (a WASI command, or an Extism plugin: a reactor
against examples/pdk).

Each build is committed beside the other fixtures (tests/fixtures/<stem>.wasm), because a
first Zig build of a plugin costs about a minute of CPU on a busy 2-core machine; a missing
one is built on first use. After editing a source, delete its .wasm, run its tests once and
commit the new build.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SOURCES = FIXTURES / "src"
PDK = Path(__file__).resolve().parents[2] / "examples" / "pdk"

_COMMAND = ["--target=wasm32-wasi", "-Os", "-s", "-Wl,-z,stack-size=65536"]
_PLUGIN = [*_COMMAND, "-mexec-model=reactor", f"-I{PDK}"]


def guest(source: str, *, plugin: bool = False) -> Path:
    """tests/fixtures/<stem>.wasm, built from tests/fixtures/src/<source> if missing."""
    built = FIXTURES / (Path(source).stem + ".wasm")
    if not built.exists():
        with tempfile.TemporaryDirectory(prefix="wasmlet-guest-") as tmp:
            out = Path(tmp) / built.name
            cmd = [sys.executable, "-m", "ziglang", "cc", *(_PLUGIN if plugin else _COMMAND)]
            done = subprocess.run(
                [*cmd, "-o", str(out), str(SOURCES / source)], capture_output=True, text=True
            )
            if done.returncode != 0:
                pytest.fail(f"building {source} failed:\n{done.stderr}")
            built.write_bytes(out.read_bytes())
    return built


def guest_bytes(source: str, *, plugin: bool = False) -> bytes:
    return guest(source, plugin=plugin).read_bytes()
