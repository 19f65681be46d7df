"""`wasmlet route add | ls | rm` against a real server, the CLI run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import ServerProcess, key_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("route-cli") / "data", examples=True) as server:
        yield server


def run(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    env["COLUMNS"] = "200"
    env["WASMLET_API_KEY"] = key_for(url)  # one table row per route, whatever the terminal
    return subprocess.run(
        [sys.executable, "-m", "wasmlet", "route", *args, "--url", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def ok(*args: str, url: str) -> str:
    result = run(*args, url=url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_route_round_trip(server: ServerProcess) -> None:
    url = server.url
    assert ok("ls", url=url).strip() == "no routes"

    added = ok(
        "add", "--host", "Geo.Localhost", "--path", "/search", "--method", "get",
        "--method", "POST", "--fn", "hello", url=url,
    )  # fmt: skip
    assert added.startswith("route ")
    assert "geo.localhost/search [GET,POST] -> hello" in added
    first_id = int(added.split()[1].rstrip(":"))
    as_json = json.loads(
        ok("add", "--path", "/svc", "--fn", "echo", "--strip-prefix", "--json", url=url)
    )
    assert as_json["path"] == "/svc" and as_json["strip_prefix"] is True
    assert as_json["host"] == "" and as_json["methods"] == []

    # The routes work at once.
    resp = httpx.get(f"{url}/search/x?name=Cli", headers={"Host": "geo.localhost"})
    assert resp.text == "Hello, Cli!\n"
    assert httpx.get(f"{url}/svc/a/b").headers["x-echo-path"] == "/a/b"

    rows = [line.split() for line in ok("ls", url=url).splitlines()]
    assert rows[0][:6] == ["ID", "HOST", "PATH", "METHODS", "FUNCTION", "STRIP"]
    assert rows[1][:6] == [str(first_id), "geo.localhost", "/search", "GET,POST", "hello", "no"]
    assert rows[2][:6] == [str(as_json["id"]), "*", "/svc", "*", "echo", "yes"]
    listed = json.loads(ok("ls", "--json", url=url))
    assert [r["id"] for r in listed] == [first_id, as_json["id"]]

    # Failures: one line on stderr, the server's code and message.
    duplicate = run("add", "--path", "/svc", "--fn", "hello", url=url)
    assert "conflict" in error_line(duplicate, 1)
    bad_host = run("add", "--host", "geo.localhost:80", "--fn", "hello", url=url)
    assert "invalid_request" in error_line(bad_host, 1)
    assert "port" in bad_host.stderr
    reserved = run("add", "--path", "/api/mine", "--fn", "hello", url=url)
    assert "invalid_request" in error_line(reserved, 1)

    assert ok("rm", str(first_id), url=url).strip() == f"deleted route {first_id}"
    resp = httpx.get(f"{url}/search/x", headers={"Host": "geo.localhost"})
    assert resp.status_code == 404
    missing = run("rm", str(first_id), url=url)
    assert f"not_found: route {first_id} not found" in error_line(missing, 1)
    assert "invalid route id 'abc'" in error_line(run("rm", "abc", url=url), 2)
    assert [r["id"] for r in json.loads(ok("ls", "--json", url=url))] == [as_json["id"]]


def test_route_commands_report_an_unreachable_server() -> None:
    result = run("ls", url="http://127.0.0.1:9")
    assert "cannot reach wasmlet" in error_line(result, 1)
