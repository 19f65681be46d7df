"""`wasmlet secret`, end to end: a real server and the CLI as real subprocesses. The value
must reach the server intact and never be printed back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, key_for
from wasmlet.config import Settings
from wasmlet.host.secrets import SecretStore
from wasmlet.registry.db import make_engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("secret-cli") / "data")
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def store(server: ServerProcess) -> Iterator[SecretStore]:
    """What a worker of the server would decrypt."""
    settings = Settings(data_dir=server.data_dir, database_url=None, secret_key=None)
    engine = make_engine(settings.db_url)
    try:
        yield SecretStore(engine, settings)
    finally:
        engine.dispose()


def unique() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def secret() -> str:
    return f"hunter2-{uuid.uuid4().hex}"


def run(
    *args: str, url: str | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """`wasmlet ARGS --url URL` as a subprocess, with no WASMLET_* settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    cmd = [sys.executable, "-m", "wasmlet", *args]
    if url is not None:
        cmd += ["--url", url]
        env["WASMLET_API_KEY"] = key_for(url)
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=30)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int, start: str) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def ok(*args: str, url: str, stdin: bytes | None = None) -> str:
    result = run(*args, url=url, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_set_from_stdin_ls_rm_round_trip(server: ServerProcess, store: SecretStore) -> None:
    name, value = unique(), secret()
    out = ok("secret", "set", name, "API_TOKEN", url=server.url, stdin=f"{value}\n".encode())
    assert out.strip() == f"set secret API_TOKEN of {name}"
    assert store.get(name, "API_TOKEN") == value  # the newline `echo` adds is not part of it

    listed = ok("secret", "ls", name, url=server.url)
    assert "API_TOKEN" in listed and "KEY" in listed and "UPDATED" in listed
    assert value not in listed
    data = json.loads(ok("secret", "ls", name, "--json", url=server.url))
    assert data["function"] == name
    assert [s["key"] for s in data["secrets"]] == ["API_TOKEN"]

    assert ok("secret", "rm", name, "API_TOKEN", url=server.url).strip() == (
        f"deleted secret API_TOKEN of {name}"
    )
    assert store.get(name, "API_TOKEN") is None
    assert ok("secret", "ls", name, url=server.url).strip() == f"no secrets for {name}"
    line = one_error_line(
        run("secret", "rm", name, "API_TOKEN", url=server.url), 1, "error: not_found:"
    )
    assert "API_TOKEN" in line
    assert value not in server.log_path.read_text()


def test_set_with_value_option_and_from_file(
    server: ServerProcess, store: SecretStore, tmp_path: Path
) -> None:
    name, inline, pem = unique(), secret(), f"-----BEGIN-----\n{secret()}\n-----END-----\n"
    out = ok("secret", "set", name, "INLINE", "--value", inline, url=server.url)
    assert inline not in out
    assert store.get(name, "INLINE") == inline

    path = tmp_path / "key.pem"
    path.write_text(pem)
    out = ok("secret", "set", name, "PEM", "--from-file", str(path), url=server.url)
    assert pem.strip() not in out
    assert store.get(name, "PEM") == pem  # a file is taken exactly, final newline included

    crlf = secret()
    ok("secret", "set", name, "CRLF", url=server.url, stdin=f"{crlf}\r\n".encode())
    assert store.get(name, "CRLF") == crlf


def test_bad_input_fails_with_one_line_and_no_value(
    server: ServerProcess, store: SecretStore, tmp_path: Path
) -> None:
    name, value = unique(), secret()
    # A value pasted into the key is rejected by the server without being repeated.
    result = run("secret", "set", name, f"TOKEN={value}", "--value", value, url=server.url)
    line = one_error_line(result, 1, "error: invalid_request: invalid secret key")
    assert value not in line and value not in result.stdout

    result = run("secret", "set", name, "TOKEN", "--value", "x" * 70_000, url=server.url)
    one_error_line(result, 1, "error: invalid_request: secret value exceeds")

    result = run("secret", "set", name, "TOKEN", url=server.url, stdin=b"")
    one_error_line(result, 2, "error: the value from stdin is empty")

    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe" + value.encode())
    result = run("secret", "set", name, "TOKEN", "--from-file", str(binary), url=server.url)
    line = one_error_line(result, 2, "error:")
    assert "not UTF-8" in line and value not in line

    result = run(
        "secret", "set", name, "TOKEN", "--value", value, "--from-file", str(binary),
        url=server.url,
    )  # fmt: skip
    one_error_line(result, 2, "error: give --value or --from-file, not both")

    result = run("secret", "set", name, "TOKEN", "--from-file", str(tmp_path / "nope"))
    one_error_line(result, 2, "error: no such file")
    assert store.list_keys(name) == []


def test_a_terminal_gets_a_prompt_that_does_not_echo(
    server: ServerProcess, store: SecretStore
) -> None:
    """On a terminal the value is typed at a hidden prompt: it must reach the server but
    never appear on the terminal."""
    import pty
    import termios

    name, value = unique(), secret()
    master, slave = pty.openpty()

    def controlling_tty() -> None:  # make the pty the child's terminal, as a shell would
        import fcntl

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    env["WASMLET_API_KEY"] = server.admin_key()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wasmlet", "secret", "set", name, "TOKEN", "--url", server.url],
        stdin=slave, stdout=slave, stderr=slave, env=env,
        start_new_session=True, preexec_fn=controlling_tty,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    try:
        # getpass flushes pending input when it turns echo off, then writes the space
        # that ends "Value: ": only after the space is typing safe.
        seen += _read_until(master, b"Value: ", proc)
        os.write(master, value.encode() + b"\n")
        assert proc.wait(timeout=30) == 0, seen
        seen += _drain(master)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert b"set secret TOKEN of " + name.encode() in seen
    assert value.encode() not in seen
    assert store.get(name, "TOKEN") == value


def _read_until(fd: int, marker: bytes, proc: subprocess.Popen[bytes]) -> bytes:
    seen = b""
    deadline = time.monotonic() + 30
    while marker not in seen:
        assert time.monotonic() < deadline, seen
        assert proc.poll() is None, seen
        seen += os.read(fd, 4096)
    return seen


def _drain(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed its end
            return out
        if not chunk:
            return out
        out += chunk
