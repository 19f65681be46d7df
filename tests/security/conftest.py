"""One server per attack module: the operator plus tenants made by `mint_key`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("security") / "data") as proc:
        yield proc
