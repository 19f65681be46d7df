"""Extism manifests (JSON) turned into module bytes and a wasmlet spec, client side.

The CLI resolves wasm sources itself — a file next to the manifest, inline base64, or a URL
it downloads — so the server never fetches arbitrary URLs on a user's behalf, and checks
each source's `hash` before anything is uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import httpx

_TOP = {"wasm", "memory", "config", "allowed_hosts", "allowed_paths", "timeout_ms"}
_MEMORY = {"max_pages", "max_http_response_bytes", "max_var_bytes"}


class ManifestError(Exception):
    pass


def load_manifest(path: Path) -> tuple[bytes, dict[str, Any], dict[str, bytes]]:
    """(main module bytes, spec fields, further modules by name) from an Extism manifest."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise ManifestError("a manifest is a JSON object")
    unknown = set(manifest) - _TOP
    if unknown:
        raise ManifestError(f"unknown manifest keys: {sorted(unknown)}")
    sources = manifest.get("wasm") or []
    if not isinstance(sources, list) or not sources:
        raise ManifestError("manifest.wasm must list at least one module")
    main, names = _main_and_names(sources)
    module = _source_bytes(sources[main], path.parent)
    extras = {
        names[i]: _source_bytes(source, path.parent)
        for i, source in enumerate(sources)
        if i != main
    }

    spec: dict[str, Any] = {"abi": "extism"}
    memory = manifest.get("memory") or {}
    if not isinstance(memory, dict) or set(memory) - _MEMORY:
        raise ManifestError(f"manifest.memory takes only {sorted(_MEMORY)}")
    if memory.get("max_pages") is not None:
        spec["memory_mb"] = max(1, math.ceil(int(memory["max_pages"]) * 65536 / (1 << 20)))
    for key in ("max_http_response_bytes", "max_var_bytes"):
        if memory.get(key) is not None:
            spec[key] = int(memory[key])
    if manifest.get("config"):
        spec["config"] = {str(k): str(v) for k, v in manifest["config"].items()}
    if manifest.get("allowed_hosts"):
        spec["allowed_hosts"] = [str(h) for h in manifest["allowed_hosts"]]
    if manifest.get("allowed_paths"):
        # Host folders are relative to the function's own data folder on the server.
        spec["allowed_paths"] = {str(k): str(v) for k, v in manifest["allowed_paths"].items()}
        spec["wasi"] = True
    if manifest.get("timeout_ms") is not None:
        spec["timeout_ms"] = int(manifest["timeout_ms"])
    return module, spec, extras


def _main_and_names(sources: list[Any]) -> tuple[int, list[str]]:
    """Extism's naming rules: one module is `main`; among several, the one named `main`,
    else the unnamed one, else the last. The others are linked under their names."""
    names = [str(s.get("name") or "") if isinstance(s, dict) else "" for s in sources]
    if len(sources) == 1:
        return 0, ["main"]
    if "main" in names:
        main = names.index("main")
    elif names.count("") == 1:
        main = names.index("")
    elif names.count("") > 1:
        raise ManifestError("only one module of a manifest may be unnamed (it is main)")
    else:
        main = len(names) - 1
    given = [n for n in names if n]
    if len(set(given)) != len(given):
        raise ManifestError("module names in a manifest must be unique")
    return main, names


def _source_bytes(source: Any, base: Path) -> bytes:
    if not isinstance(source, dict):
        raise ManifestError("each manifest.wasm entry is an object")
    if "path" in source:
        file = Path(source["path"])
        try:
            data = (file if file.is_absolute() else base / file).read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read {file}: {exc.strerror}") from None
    elif "data" in source:
        try:
            data = base64.b64decode(source["data"], validate=True)
        except (ValueError, TypeError):
            raise ManifestError("wasm.data is not valid base64") from None
    elif "url" in source:
        try:
            response = httpx.request(
                source.get("method") or "GET",
                source["url"],
                headers=source.get("headers") or {},
                follow_redirects=True,
                timeout=60,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ManifestError(f"cannot download {source['url']}: {exc}") from None
        data = response.content
    else:
        raise ManifestError("a wasm source needs one of path, data or url")
    expected = source.get("hash")
    if expected and hashlib.sha256(data).hexdigest() != str(expected).lower():
        raise ManifestError("module hash does not match the manifest's sha256")
    return data
