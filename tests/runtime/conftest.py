"""Unit tests run without any WASMLET_* setting or config file from the environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.support import clean_env, release_stores, rt  # noqa: F401 (rt: fixture)


@pytest.fixture(autouse=True)
def _hermetic_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch, tmp_path)


@pytest.fixture(autouse=True, scope="module")
def _release_stores() -> Iterator[None]:
    """No WASI store of this module may live until interpreter exit (see release_stores)."""
    yield
    release_stores()
