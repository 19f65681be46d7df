"""`wasmlet kv` commands: the persistent key-value store, through the operator API.

NS is `global` or a function name. Values are bytes: `get` writes them to stdout as they
are, and `set` reads them from an argument, a file or stdin. Failures print one line,
`error: <code>: <message>`, on stderr and exit 1 (2 for bad local input).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from wasmlet.cli import app
from wasmlet.cli.client import DEFAULT_URL
from wasmlet.cli.commands import AsJson, Url, _client, _fail, _print_json, _read_file, _stdout

kv_app = typer.Typer(
    help="Read and write the persistent key-value store.",
    no_args_is_help=True,
)
app.add_typer(kv_app, name="kv")

Ns = Annotated[str, typer.Argument(help="Namespace: 'global' or a function name")]
KeyArg = Annotated[str, typer.Argument(help="Key (may contain '/')")]


def _segment(text: str) -> str:
    """One path segment for any text. `/` is encoded so the text stays one segment, and a
    text of only dots is too, since HTTP clients resolve `.` and `..` segments away."""
    encoded = quote(text, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def _path(namespace: str, key: str | None = None, action: str | None = None) -> str:
    path = f"/api/v1/kv/{_segment(namespace)}"
    if key is not None:
        if not key:
            _fail("the key must not be empty", code=2)
        path += "/" + _segment(key)
    if action:
        path += "/" + action
    return path


@kv_app.command("get")
def get_value(namespace: Ns, key: KeyArg, url: Url = DEFAULT_URL) -> None:
    """Print a value, byte for byte."""
    if key == "keys":
        # GET .../keys is the listing route (see api/kv.py).
        _fail("the key 'keys' cannot be read over the API; use 'wasmlet kv ls'", code=2)
    with _client(url) as client:
        response = client.call_raw("GET", _path(namespace, key))
    out = sys.stdout.buffer
    out.write(response.content)
    if sys.stdout.isatty() and response.content and not response.content.endswith(b"\n"):
        out.write(b"\n")
    out.flush()


@kv_app.command("set")
def set_value(
    namespace: Ns,
    key: KeyArg,
    value: Annotated[
        str | None,
        typer.Argument(help="The value, or - to read it from stdin", show_default=False),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the value from this file")
    ] = None,
    ttl_ms: Annotated[
        int | None, typer.Option(min=1, help="Expire after this many milliseconds")
    ] = None,
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Store a value (VALUE, --file F, or - for stdin)."""
    if (value is None) == (file is None):
        _fail("give the value as an argument, '-' for stdin, or --file", code=2)
    if file is not None:
        data = _read_file(file)
    elif value == "-":
        data = sys.stdin.buffer.read()
    else:
        data = (value or "").encode()
    params = {"ttl_ms": ttl_ms} if ttl_ms is not None else None
    with _client(url) as client:
        stored = client.call(
            "PUT",
            _path(namespace, key),
            content=data,
            params=params,
            headers={"content-type": "application/octet-stream"},
        )
    if as_json:
        _print_json(stored)
        return
    expiry = f", expires in {ttl_ms} ms" if ttl_ms is not None else ""
    _stdout().print(f"{namespace}/{key}: stored {stored['size']} bytes{expiry}", markup=False)


@kv_app.command("rm")
def remove(namespace: Ns, key: KeyArg, url: Url = DEFAULT_URL) -> None:
    """Delete a key (exit 1 when there was none)."""
    with _client(url) as client:
        result = client.call("DELETE", _path(namespace, key))
    if not result["deleted"]:
        _fail(f"not_found: no key {key!r} in namespace {namespace!r}")
    _stdout().print(f"{namespace}/{key}: deleted", markup=False)


@kv_app.command("ls")
def list_keys(
    namespace: Ns,
    pattern: Annotated[str, typer.Option(help="Glob: *, ?, [abc], [!abc]")] = "*",
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many")] = 1000,
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """List keys, one per line, sorted."""
    with _client(url) as client:
        result = client.call(
            "GET", _path(namespace, action="keys"), params={"pattern": pattern, "limit": limit}
        )
    if as_json:
        _print_json(result)
        return
    # Plain lines, not Rich: a key may look like markup ("[bold]") or be very long.
    sys.stdout.write("".join(f"{k}\n" for k in result["keys"]))
    sys.stdout.flush()


@kv_app.command("incr")
def increment(
    namespace: Ns,
    key: KeyArg,
    by: Annotated[int, typer.Option(help="Amount to add (may be negative)")] = 1,
    url: Url = DEFAULT_URL,
) -> None:
    """Add to an integer value (absent counts as 0) and print the result."""
    with _client(url) as client:
        result = client.call("POST", _path(namespace, key, "incr"), json={"by": by})
    sys.stdout.write(f"{result['value']}\n")
    sys.stdout.flush()
