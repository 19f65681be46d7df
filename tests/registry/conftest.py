"""Unit tests run without any WASMLET_* setting or config file from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.support import clean_env


@pytest.fixture(autouse=True)
def _hermetic_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch, tmp_path)
