"""`wasmlet namespace hosts add | ls | rm` against a real server, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import ServerProcess, key_for
from tests.security.support import mint_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("host-cli") / "data") as server:
        yield server


def run(*args: str, url: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    env["COLUMNS"] = "200"
    env["WASMLET_API_KEY"] = key or key_for(url)
    return subprocess.run(
        [sys.executable, "-m", "wasmlet", *args, "--url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def ok(*args: str, url: str, key: str | None = None) -> str:
    result = run(*args, url=url, key=key)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_hosts_round_trip(server: ServerProcess) -> None:
    url = server.url
    assert ok("namespace", "hosts", "ls", url=url).strip() == "no hosts"
    added = ok("namespace", "hosts", "add", "acme", "Acme.Test", "*.acme.test", url=url)
    rows = [line.split() for line in added.splitlines()]
    assert rows[0] == ["NAMESPACE", "HOST", "ASSIGNED"]
    assert [r[:2] for r in rows[1:]] == [["acme", "*.acme.test"], ["acme", "acme.test"]]

    # The tenant sees its own, routes them, and may assign nothing.
    with server.client() as operator:
        tenant = mint_key(operator, "acme")
    mine = json.loads(ok("namespace", "hosts", "ls", "--json", url=url, key=tenant))
    assert {h["pattern"] for h in mine} == {"acme.test", "*.acme.test"}
    refused = run("namespace", "hosts", "add", "acme", "more.test", url=url, key=tenant)
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    route = json.loads(
        ok("route", "add", "--host", "x.acme.test", "--fn", "f", "--json", url=url, key=tenant)
    )

    overlap = run("namespace", "hosts", "add", "other", "a.acme.test", url=url)
    assert overlap.returncode == 1 and "conflict" in overlap.stderr
    api_host = run("namespace", "hosts", "add", "other", "localhost", url=url)
    assert api_host.returncode == 1 and "invalid_request" in api_host.stderr

    removed = ok("namespace", "hosts", "rm", "acme", "*.acme.test", url=url)
    assert removed.splitlines() == [
        "acme: removed *.acme.test",
        f"deleted route {route['id']} (its host is no longer acme's)",
    ]
    left = json.loads(ok("namespace", "hosts", "ls", "acme", "--json", url=url))
    assert [h["pattern"] for h in left] == ["acme.test"]
    headers = {"Authorization": f"Bearer {tenant}"}
    assert httpx.get(f"{url}/api/v1/routes", headers=headers).json() == {"routes": []}
    missing = run("namespace", "hosts", "rm", "acme", "nope.test", url=url)
    assert missing.returncode == 1 and "not_found" in missing.stderr
