"""Guests for the attack tests, compiled from C under tests/fixtures/src with Zig (the
toolchain of examples/build.py), once per test session."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parents[1] / "fixtures" / "src"
PDK = Path(__file__).resolve().parents[2] / "examples" / "pdk"

_COMMON = ["--target=wasm32-wasi", "-Os", "-s", "-Wl,-z,stack-size=65536"]
# An Extism or Otoroshi plugin: a reactor built against the PDK headers, no WASI imports.
_PLUGIN = [*_COMMON, "-mexec-model=reactor", f"-I{PDK}"]


@cache
def _out_dir() -> Path:
    out = Path(tempfile.mkdtemp(prefix="wasmlet-guests-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    return out


@cache
def build(source: str, *, plugin: bool = False) -> bytes:
    """tests/fixtures/src/<source> compiled: a WASI command, or (plugin) an Extism plugin."""
    src = SOURCES / source
    out = _out_dir() / (src.stem + ".wasm")
    cmd = [sys.executable, "-m", "ziglang", "cc", *(_PLUGIN if plugin else _COMMON)]
    done = subprocess.run([*cmd, "-o", str(out), str(src)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"building {source} failed:\n{done.stderr}")
    return out.read_bytes()
