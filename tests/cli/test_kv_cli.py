"""`wasmlet kv` end to end against a real server.

One server (small value cap) serves the module; each test uses a namespace of its own.
The CLI runs in-process through Typer's runner for most tests (a subprocess costs over a
second of imports each time), and as real `python -m wasmlet` subprocesses for the tests
that check what a shell sees: raw bytes through pipes, exit codes, one-line errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import wasmlet.cli.kv_commands  # noqa: F401  (registers `kv` on the app)
from tests.helpers import ServerProcess, free_port, key_for
from wasmlet.cli import app

pytestmark = pytest.mark.integration

MAX_VALUE = 2048


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ServerProcess(
        tmp_path_factory.mktemp("kvcli") / "data",
        env={"WASMLET_KV_MAX_VALUE_BYTES": str(MAX_VALUE)},
    )
    server.start(timeout=30)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def ns() -> str:
    return f"kvcli-{uuid.uuid4().hex[:8]}"


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    stderr: str


def run(*args: str, url: str, stdin: bytes | None = None) -> Ran:
    """`wasmlet kv ARGS --url URL`, in-process."""
    result = CliRunner().invoke(
        app, ["kv", *args, "--url", url], input=stdin, env={"WASMLET_API_KEY": key_for(url)}
    )
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout_bytes, result.stderr)


def run_process(*args: str, url: str, stdin: bytes | None = None) -> Ran:
    """`wasmlet kv ARGS --url URL` as a real subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    env["WASMLET_API_KEY"] = key_for(url)
    cmd = [sys.executable, "-m", "wasmlet", "kv", *args, "--url", url]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=30)
    return Ran(proc.returncode, proc.stdout, proc.stderr.decode())


def ok(*args: str, url: str, stdin: bytes | None = None) -> bytes:
    result = run(*args, url=url, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def one_error_line(result: Ran, code: int, start: str) -> str:
    """The command exited `code` after exactly one stderr line starting with `start`."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(start), lines[0]
    assert result.stdout == b""
    return lines[0]


def fails(*args: str, url: str, code: int, start: str) -> str:
    return one_error_line(run(*args, url=url), code, start)


# -- as a shell sees it ----------------------------------------------------------------------


def test_subprocess_round_trip_of_raw_bytes(url: str, ns: str) -> None:
    blob = bytes(range(256)) * 2
    stored = run_process("set", ns, "blob", "-", "--json", url=url, stdin=blob)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["size"] == len(blob)
    got = run_process("get", ns, "blob", url=url)
    assert (got.returncode, got.stdout, got.stderr) == (0, blob, "")


def test_subprocess_errors(url: str, ns: str) -> None:
    one_error_line(run_process("get", ns, "missing", url=url), 1, "error: not_found: ")
    one_error_line(
        run_process("ls", "global", url=f"http://127.0.0.1:{free_port()}"),
        1,
        "error: cannot reach wasmlet",
    )


# -- every command -----------------------------------------------------------------------------


def test_set_get_rm(url: str, ns: str) -> None:
    assert (
        ok("set", ns, "greeting", "hello", url=url) == f"{ns}/greeting: stored 5 bytes\n".encode()
    )
    assert ok("get", ns, "greeting", url=url) == b"hello"  # raw: no newline added when piped
    assert ok("rm", ns, "greeting", url=url) == f"{ns}/greeting: deleted\n".encode()
    fails("get", ns, "greeting", url=url, code=1, start="error: not_found: no key 'greeting'")
    fails("rm", ns, "greeting", url=url, code=1, start="error: not_found: no key 'greeting'")


def test_values_from_stdin_and_files(url: str, ns: str, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 2
    ok("set", ns, "piped", "-", url=url, stdin=blob)
    assert ok("get", ns, "piped", url=url) == blob
    path = tmp_path / "value.bin"
    path.write_bytes(blob[::-1])
    ok("set", ns, "filed", "--file", str(path), url=url)
    assert ok("get", ns, "filed", url=url) == blob[::-1]
    fails(
        "set",
        ns,
        "k",
        "--file",
        str(tmp_path / "missing"),
        url=url,
        code=2,
        start="error: no such file",
    )
    fails("set", ns, "k", "v", "--file", str(path), url=url, code=2, start="error: give the value")
    fails("set", ns, "k", url=url, code=2, start="error: give the value")


def test_ttl(url: str, ns: str) -> None:
    out = ok("set", ns, "session", "x", "--ttl-ms", "600000", url=url)
    assert out == f"{ns}/session: stored 1 bytes, expires in 600000 ms\n".encode()
    auth = {"Authorization": f"Bearer {key_for(url)}"}
    left = httpx.get(f"{url}/api/v1/kv/{ns}/session", headers=auth).headers["x-wasmlet-ttl-ms"]
    assert 590_000 < int(left) <= 600_000
    stored = json.loads(ok("set", ns, "j", "v", "--ttl-ms", "5000", "--json", url=url))
    assert stored == {"namespace": ns, "key": "j", "size": 1, "ttl_ms": 5000}


def test_ls(url: str, ns: str) -> None:
    for key in ["b", "a/1", "a/2", "[bold]x", "100%"]:
        ok("set", ns, key, "v", url=url)
    assert ok("ls", ns, url=url) == b"100%\n[bold]x\na/1\na/2\nb\n"  # markup printed as text
    assert ok("ls", ns, "--pattern", "a/*", url=url) == b"a/1\na/2\n"
    assert ok("ls", ns, "--limit", "2", url=url) == b"100%\n[bold]x\n"
    listed = json.loads(ok("ls", ns, "--pattern", "?", "--json", url=url))
    assert listed == {"namespace": ns, "keys": ["b"]}
    assert ok("ls", f"{ns}-empty", url=url) == b""


def test_keys_with_slashes_and_dots(url: str, ns: str) -> None:
    for key in ["a/b", "..", ".", "a/../b", "x/incr", "sp ace?#%"]:
        ok("set", ns, key, f"<{key}>", url=url)
        assert ok("get", ns, key, url=url) == f"<{key}>".encode()
    assert ok("ls", ns, url=url).decode().splitlines() == sorted(
        ["a/b", "..", ".", "a/../b", "x/incr", "sp ace?#%"]
    )
    assert ok("incr", ns, "x/incr/n", url=url) == b"1\n"
    assert ok("get", ns, "x/incr", url=url) == b"<x/incr>"  # untouched by the increment


def test_incr(url: str, ns: str) -> None:
    assert ok("incr", ns, "hits", url=url) == b"1\n"
    assert ok("incr", ns, "hits", "--by", "41", url=url) == b"42\n"
    assert ok("incr", ns, "hits", "--by", "-50", url=url) == b"-8\n"
    assert ok("get", ns, "hits", url=url) == b"-8"
    ok("set", ns, "word", "abc", url=url)
    fails("incr", ns, "word", url=url, code=1, start="error: conflict: ")


def test_server_errors_are_one_line(url: str, ns: str) -> None:
    fails("ls", "Not-A-Name", url=url, code=1, start="error: invalid_request: invalid namespace")
    fails("get", "global", "keys", url=url, code=2, start="error: the key 'keys' cannot be read")
    big = run("set", ns, "big", "-", url=url, stdin=b"x" * (MAX_VALUE + 1))
    one_error_line(big, 1, "error: payload_too_large: ")
    fails("get", ns, "", url=url, code=2, start="error: the key must not be empty")


def test_kv_is_listed_in_help() -> None:
    result = CliRunner().invoke(app, ["kv", "--help"])
    assert result.exit_code == 0
    for command in ("get", "set", "rm", "ls", "incr"):
        assert command in result.stdout
