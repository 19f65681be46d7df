"""`wasmlet secret set|ls|rm`: a function's secrets, stored encrypted by the server.

`set` takes the value from a hidden prompt or a pipe by default, so it stays out of shell
history and `ps`; `--value` exists for scripts that already hold it. No command ever prints
a value: the server does not return one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from rich.table import Table
from rich.text import Text

from wasmlet.cli import app
from wasmlet.cli.client import DEFAULT_URL
from wasmlet.cli.commands import (
    AsJson,
    Url,
    _client,
    _fail,
    _print_json,
    _read_file,
    _stdout,
    _when,
)

secret_app = typer.Typer(
    help="Function secrets: encrypted at rest, readable only by the function.",
    no_args_is_help=True,
)
app.add_typer(secret_app, name="secret")

Name = Annotated[str, typer.Argument(help="Function name (need not be deployed yet)")]
Key = Annotated[str, typer.Argument(help="Secret key, e.g. API_TOKEN")]


def _path(name: str, key: str | None = None) -> str:
    path = f"/api/v1/functions/{quote(name, safe='')}/secrets"
    return path if key is None else f"{path}/{quote(key, safe='')}"


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        _fail(f"{source} is not UTF-8 text (secrets are text)", code=2)


def _value(value: str | None, from_file: Path | None) -> str:
    """--value as given; a file exactly as it is; piped stdin without its final newline
    (what `echo` adds); a terminal gets a prompt that does not echo."""
    if value is not None:
        if from_file is not None:
            _fail("give --value or --from-file, not both", code=2)
        return value
    if from_file is not None:
        text = _text(_read_file(from_file), str(from_file))
        source = str(from_file)
    elif sys.stdin.isatty():
        text = typer.prompt("Value", hide_input=True, err=True)
        source = "the prompt"
    else:
        text = _text(sys.stdin.buffer.read(), "stdin")
        text = text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")
        source = "stdin"
    if not text:
        _fail(f"the value from {source} is empty", code=2)
    return text


@secret_app.command("set")
def set_secret(
    name: Name,
    key: Key,
    value: Annotated[
        str | None,
        typer.Option("--value", help="The value (visible in shell history: prefer stdin)"),
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="Read the value from a file, as is")
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Create or replace secret KEY of function NAME.

    The value comes from --value, --from-file, or stdin: piped (one trailing newline
    dropped) or typed at a prompt that does not echo.
    """
    text = _value(value, from_file)
    with _client(url) as client:
        result = client.call("PUT", _path(name, key), json={"value": text})
    _stdout().print(
        Text(f"set secret {result.get('key', key)} of {result.get('function', name)}"),
        soft_wrap=True,
    )


@secret_app.command("ls")
def list_secrets(name: Name, url: Url = DEFAULT_URL, as_json: AsJson = False) -> None:
    """List the secret keys of function NAME (never their values)."""
    with _client(url) as client:
        result = client.call("GET", _path(name))
    if as_json:
        return _print_json(result)
    secrets = result.get("secrets") or []
    console = _stdout()
    if not secrets:
        console.print(Text(f"no secrets for {name}"), soft_wrap=True)
        return
    table = Table("KEY", "UPDATED", box=None)
    for entry in secrets:
        table.add_row(Text(entry["key"], style="bold"), _when(entry.get("updated_at")))
    console.print(table)


@secret_app.command("rm")
def remove_secret(name: Name, key: Key, url: Url = DEFAULT_URL) -> None:
    """Delete secret KEY of function NAME."""
    with _client(url) as client:
        client.call("DELETE", _path(name, key))
    _stdout().print(Text(f"deleted secret {key} of {name}"), soft_wrap=True)
