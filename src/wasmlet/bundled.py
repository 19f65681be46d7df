"""The example functions shipped with wasmlet, deployed by `wasmlet serve --examples`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from wasmlet.config import Settings
from wasmlet.spec import parse_update

log = logging.getLogger(__name__)


def examples_dir() -> Path:
    packaged = Path(__file__).parent / "_examples"  # wheel installs
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "examples"  # source checkouts


def manifest() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((examples_dir() / "manifest.json").read_text())
    return entries


def deploy_examples(settings: Settings) -> list[str]:
    """Deploy every bundled example straight into the registry (before workers start)."""
    from wasmlet.api.state import build_state

    state = build_state(settings)
    deployed = []
    try:
        for item in manifest():
            data = (examples_dir() / item["file"]).read_bytes()
            # Every manifest key besides these is a spec field (config, allowed_hosts, ...).
            spec = {k: v for k, v in item.items() if k not in ("name", "file", "description")}
            spec.setdefault("visibility", "public")  # the examples are there to be tried
            state.deployer.deploy(item["name"], data, parse_update(spec))
            deployed.append(item["name"])
    finally:
        state.close()
    log.info("deployed examples: %s", ", ".join(deployed))
    return deployed
