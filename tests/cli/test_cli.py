"""The client commands, end to end: a real `wasmlet serve` and the CLI as real subprocesses.

One server serves the whole module; every test deploys under names of its own, so the
tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, free_port, key_for
from wasmlet.cli.commands import _core_body, _signature

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GCD = EXAMPLES / "gcd" / "gcd.wat"
HELLO = EXAMPLES / "hello" / "hello.wasm"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ServerProcess(tmp_path_factory.mktemp("cli") / "data")
    server.start(timeout=30)
    try:
        yield server.url
    finally:
        server.stop()


def run(
    *args: str, url: str | None = None, stdin: bytes | None = None, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    """`wasmlet ARGS --url URL` as a subprocess; stdout and stderr decoded."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    if url is not None:
        base["WASMLET_API_KEY"] = key_for(url)
    base.update(env or {})
    cmd = [sys.executable, "-m", "wasmlet", *args]
    if url is not None:
        cmd += ["--url", url]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=base, timeout=30)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def ok(*args: str, url: str, stdin: bytes | None = None) -> str:
    result = run(*args, url=url, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str], code: int, start: str) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(start), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def deployed(url: str) -> dict[str, str]:
    """gcd (core) and hello (wasi-cgi), with what `deploy` printed for each."""
    return {
        "gcd": ok("deploy", "gcd", str(GCD), "--export", "gcd", url=url),
        "hello": ok("deploy", "hello", str(HELLO), "--abi", "wasi-cgi", url=url),
    }


# -- deploy --------------------------------------------------------------------------------


def test_deploy_reports_new_version_then_unchanged(url: str, deployed: dict[str, str]) -> None:
    assert "gcd: deployed new version" in deployed["gcd"]
    assert "abi core, export gcd" in deployed["gcd"]
    assert "abi wasi-cgi, export _start" in deployed["hello"]
    again = ok("deploy", "gcd", str(GCD), "--export", "gcd", url=url)
    assert "unchanged" in again
    digest = json.loads(ok("info", "gcd", "--json", url=url))["active_version"]["digest"]
    assert digest.removeprefix("sha256:")[:12] in again


def test_deploy_sends_every_option(url: str) -> None:
    ok(
        "deploy", "opts", str(GCD), "--abi", "core", "--export", "gcd",
        "--timeout-ms", "1500", "--memory-mb", "32", "--fuel", "1000000", "--pool-size", "4",
        "--config", "GREETING=hi", "--config", "EMPTY=", "--env", "MODE=test",
        "--allowed-host", "example.com", "--allowed-host", "*.example.org", "--no-reuse",
        url=url,
    )  # fmt: skip
    spec = json.loads(ok("info", "opts", "--json", url=url))["active_version"]["spec"]
    assert spec["timeout_ms"] == 1500
    assert spec["memory_mb"] == 32
    assert spec["fuel"] == 1000000
    assert spec["pool_size"] == 4
    assert spec["config"] == {"GREETING": "hi", "EMPTY": ""}
    assert spec["env"] == {"MODE": "test"}
    assert spec["allowed_hosts"] == ["example.com", "*.example.org"]
    assert spec["reuse"] is False
    # --reuse flips it: a new version of the same module.
    assert "new version" in ok("deploy", "opts", str(GCD), "--reuse", url=url)
    assert json.loads(ok("info", "opts", "--json", url=url))["active_version"]["spec"]["reuse"]


def test_deploy_garbage_is_invalid_request(url: str, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wasm"
    garbage.write_bytes(b"\x00asm but not really a module")
    one_error_line(run("deploy", "junk", str(garbage), url=url), 1, "error: invalid_request: ")


def test_deploy_bad_option_is_the_servers_error(url: str) -> None:
    result = run("deploy", "badcfg", str(GCD), "--config", "no-equals-sign", url=url)
    one_error_line(result, 1, "error: invalid_request: config entries must look like")


def test_deploy_missing_file_exits_2(url: str, tmp_path: Path) -> None:
    line = one_error_line(run("deploy", "x", str(tmp_path / "nope.wasm"), url=url), 2, "error: ")
    assert "nope.wasm" in line


# -- invoke --------------------------------------------------------------------------------


def test_invoke_core_with_json_args(url: str, deployed: dict[str, str]) -> None:
    # Piped stdout: the body exactly as the function answered, no newline added.
    assert ok("invoke", "gcd", "[1071,462]", url=url) == '{"result": 21}'
    assert ok("invoke", "gcd", '{"a": 12, "b": 18}', url=url) == '{"result": 6}'
    assert ok("invoke", "gcd", '{"args": [9, 6]}', url=url) == '{"result": 3}'
    assert ok("invoke", "gcd", "1071 462", url=url) == '{"result": 21}'
    assert ok("invoke", "gcd", "[8,12]", "--export", "gcd", url=url) == '{"result": 4}'


def test_invoke_core_from_file_and_stdin(url: str, deployed: dict[str, str], tmp_path: Path):
    args = tmp_path / "args.json"
    args.write_text("[1071, 462]")
    assert ok("invoke", "gcd", f"@{args}", url=url) == '{"result": 21}'
    assert ok("invoke", "gcd", "-", url=url, stdin=b"[100, 75]") == '{"result": 25}'


def test_invoke_core_bad_args_is_one_error_line(url: str, deployed: dict[str, str]) -> None:
    result = run("invoke", "gcd", "[1,2,3]", url=url)
    one_error_line(result, 1, "error: invalid_request: export 'gcd' takes 2 argument(s)")
    assert result.stdout == ""


def test_invoke_wasi_cgi(url: str, deployed: dict[str, str]) -> None:
    assert ok("invoke", "hello", "bob", "--path", "/", url=url).startswith("Hello, bob!")
    assert ok("invoke", "hello", "--path", "/?name=amy", "--method", "GET", url=url).startswith(
        "Hello, amy!"
    )
    assert ok("invoke", "hello", "-", url=url, stdin=b"eve").startswith("Hello, eve!")


def test_invoke_missing_data_file_exits_2(url: str, deployed: dict[str, str], tmp_path: Path):
    one_error_line(run("invoke", "gcd", f"@{tmp_path / 'none.json'}", url=url), 2, "error: ")


def test_invoke_bad_header_exits_2(url: str, deployed: dict[str, str]) -> None:
    one_error_line(run("invoke", "hello", "x", "-H", "no-colon", url=url), 2, "error: --header")


# -- inspection ----------------------------------------------------------------------------


def test_ls(url: str, deployed: dict[str, str]) -> None:
    functions = {f["name"]: f for f in json.loads(ok("ls", "--json", url=url))}
    assert {"gcd", "hello"} <= set(functions)
    assert functions["gcd"]["active_version"]["abi"] == "core"
    assert functions["hello"]["active_version"]["abi"] == "wasi-cgi"
    table = ok("ls", url=url)
    assert "NAME" in table
    assert any(line.split()[:3] == ["hello", "wasi-cgi", "_start"] for line in table.splitlines())


def test_url_from_environment(url: str, deployed: dict[str, str]) -> None:
    result = run("ls", "--json", env={"WASMLET_URL": url, "WASMLET_API_KEY": key_for(url)})
    assert result.returncode == 0, result.stderr
    assert "gcd" in {f["name"] for f in json.loads(result.stdout)}


def test_info(url: str, deployed: dict[str, str]) -> None:
    text = ok("info", "gcd", url=url)
    assert "gcd(a: i32, b: i32) -> i32" in text
    assert "core" in text
    assert "5000 ms" in text
    data = json.loads(ok("info", "hello", "--json", url=url))
    assert data["name"] == "hello"
    assert data["active_version"]["wasi"] is True


def test_versions_and_rollback(url: str) -> None:
    assert "new version" in ok("deploy", "roll", str(GCD), "--export", "gcd", url=url)
    changed = ok("deploy", "roll", str(GCD), "--timeout-ms", "1234", url=url)
    assert "new version" in changed
    versions = json.loads(ok("versions", "roll", "--json", url=url))
    assert len(versions) == 2
    by_seq = {v["seq"]: v for v in versions}
    assert by_seq[2]["active"] and not by_seq[1]["active"]
    first = by_seq[1]["digest"]

    table = ok("versions", "roll", url=url)
    assert first.removeprefix("sha256:")[:12] in table

    out = ok("rollback", "roll", first.removeprefix("sha256:")[:10], url=url)
    assert first.removeprefix("sha256:")[:12] in out
    versions = {v["seq"]: v for v in json.loads(ok("versions", "roll", "--json", url=url))}
    assert versions[1]["active"] and not versions[2]["active"]
    info = json.loads(ok("info", "roll", "--json", url=url))
    assert info["active_version"]["digest"] == first

    result = run("rollback", "roll", "ffffffffffff", url=url)
    one_error_line(result, 1, "error: not_found: ")


def test_logs(url: str, deployed: dict[str, str]) -> None:
    ok("invoke", "hello", "logger", url=url)
    records = json.loads(ok("logs", "hello", "--json", "--limit", "5", url=url))
    assert 1 <= len(records) <= 5
    assert any("greeted logger" in r["logs"] for r in records)
    assert all(r["function"] == "hello" for r in records)
    text = ok("logs", "hello", url=url)
    assert "STATUS" in text
    assert "hello: greeted logger" in text

    run("invoke", "gcd", "[1]", url=url)  # a failed call is recorded too
    failed = json.loads(ok("logs", "gcd", "--json", url=url))
    assert any(r["error_code"] == "invalid_request" for r in failed)


def test_rm_then_invoke_is_not_found(url: str) -> None:
    ok("deploy", "doomed", str(GCD), "--export", "gcd", url=url)
    assert "deleted doomed" in ok("rm", "doomed", url=url)
    result = run("invoke", "doomed", "[1,2]", url=url)
    one_error_line(result, 1, "error: not_found: ")
    assert result.stdout == ""
    one_error_line(run("info", "doomed", url=url), 1, "error: not_found: ")


def test_unreachable_server() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(run("ls", url=dead), 1, "error: cannot reach wasmlet at ")
    assert dead in line
    assert "wasmlet serve" in line


# -- pure helpers (no server) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b"[1071,462]", {"args": [1071, 462]}),
        (b'{"a": 1}', {"args": {"a": 1}}),
        (b"7", {"args": 7}),
        (b"1071 462", {"args": [1071, 462]}),
        (b"1.5, 0x10", {"args": [1.5, "0x10"]}),
    ],
)
def test_core_body_wraps_args(data: bytes, body: object) -> None:
    assert json.loads(_core_body(data)) == body


def test_core_body_leaves_args_objects_and_empty_bodies_alone() -> None:
    assert _core_body(b'{"args": [1]}') == b'{"args": [1]}'
    assert _core_body(b"") == b""


def test_signature() -> None:
    sig = {"params": ["i32", "i64"], "results": ["f64"], "names": ["a", "b"]}
    assert _signature("f", sig) == "f(a: i32, b: i64) -> f64"
    assert _signature("g", {"params": ["i32"], "results": [], "names": None}) == "g(i32)"
    assert _signature("h", {"params": [], "results": ["i32", "i32"]}) == "h() -> (i32, i32)"
