"""Compiled artifacts on disk, keyed by (module digest, engine fingerprint).

A restart or a second worker process deserializes (~0.1 ms for small modules) instead of
compiling again (tens of ms to seconds). Artifacts are native code, so only files this
cache wrote itself are ever loaded; a file that fails to load is recompiled and replaced.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import wasmtime

log = logging.getLogger(__name__)


class CompileCache:
    def __init__(self, root: Path, engine: wasmtime.Engine, fingerprint: str) -> None:
        self.dir = root / fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        self.hits = 0
        self.misses = 0

    def path(self, module_digest: str) -> Path:
        return self.dir / f"{module_digest.removeprefix('sha256:')}.cwasm"

    def load(self, module_digest: str, wasm: Callable[[], bytes]) -> wasmtime.Module:
        path = self.path(module_digest)
        if path.exists():
            try:
                module = wasmtime.Module.deserialize_file(self.engine, str(path))
                self.hits += 1
                return module
            except wasmtime.WasmtimeError as exc:
                log.warning("recompiling %s: cached artifact unusable (%s)", module_digest, exc)
        self.misses += 1
        module = wasmtime.Module(self.engine, wasm())
        self.store(module_digest, module)
        return module

    def store(self, module_digest: str, module: wasmtime.Module) -> None:
        path = self.path(module_digest)
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(module.serialize())
            os.replace(tmp, path)  # atomic: a concurrent reader sees all or nothing
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def discard(self, module_digest: str) -> None:
        self.path(module_digest).unlink(missing_ok=True)
