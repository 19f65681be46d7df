"""Guests for the attack tests, built from C source with Zig (as examples/build.py does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "tests" / "fixtures" / "src"
PDK = ROOT / "examples" / "pdk"

# An Extism plugin: a WASI reactor with no WASI imports (examples/build.py, EXTISM_C_FLAGS).
_EXTISM_FLAGS = [
    "--target=wasm32-wasi",
    "-mexec-model=reactor",
    "-Os",
    "-s",
    "-Wl,-z,stack-size=65536",
    f"-I{PDK}",
]


def build_extism(source: str, out_dir: Path) -> bytes:
    """Compile tests/fixtures/src/<source> into out_dir; the module's bytes."""
    out = out_dir / (Path(source).stem + ".wasm")
    cmd = [sys.executable, "-m", "ziglang", "cc", *_EXTISM_FLAGS, "-o", str(out)]
    subprocess.run([*cmd, str(SOURCES / source)], check=True, capture_output=True, timeout=300)
    return out.read_bytes()
