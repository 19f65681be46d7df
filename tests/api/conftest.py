"""Module-scoped servers for the HTTP integration tests.

Starting `wasmlet serve` costs ~1.5 s, so each test module shares one server among tests
that don't interfere (every test deploys under its own unique names). Tests that need
special settings (limits, workers, a database URL) start their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `wasmlet serve --examples` process (SQLite, default limits) for a test module."""
    with ServerProcess(tmp_path_factory.mktemp("api") / "data", examples=True) as server:
        yield server


@pytest.fixture
def client(api_server: ServerProcess) -> Iterator[httpx.Client]:
    with api_server.client() as c:
        yield c
