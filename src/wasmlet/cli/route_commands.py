"""`wasmlet route` commands: gateway routes (host and/or path prefix -> function).

The server validates and normalises every field; these commands only shape the request
and render the answer, with the same one-line errors as the other client commands.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from wasmlet.cli import app
from wasmlet.cli.client import DEFAULT_URL
from wasmlet.cli.commands import AsJson, Url, _client, _fail, _print_json, _stdout, _when

_API = "/api/v1/routes"

route_app = typer.Typer(
    help="Gateway routes: send requests for a host and/or path prefix to a function.",
    no_args_is_help=True,
)
app.add_typer(route_app, name="route")


def _methods(route: dict[str, Any]) -> str:
    return ",".join(route.get("methods") or []) or "*"


def _describe(route: dict[str, Any]) -> str:
    """`geo.localhost/search [GET] -> geo`, the one-line form of a route."""
    where = (route.get("host") or "*") + route.get("path", "/")
    strip = " (prefix stripped)" if route.get("strip_prefix") else ""
    return f"{where} [{_methods(route)}] -> {route.get('function')}{strip}"


def _route_id(raw: str) -> int:
    if not raw.isdigit():
        _fail(f"invalid route id {raw!r}: use the number `wasmlet route ls` shows", code=2)
    return int(raw)


@route_app.command("add")
def add(
    fn: Annotated[str, typer.Option("--fn", help="Function to invoke")],
    host: Annotated[
        str | None, typer.Option(help="Host name, or *.example.com for its sub-domains")
    ] = None,
    path: Annotated[str, typer.Option(help="Path prefix, matched at segment boundaries")] = "/",
    method: Annotated[
        list[str] | None, typer.Option("--method", help="Allowed method, repeatable (default: any)")
    ] = None,
    strip_prefix: Annotated[
        bool, typer.Option("--strip-prefix", help="Hand the function the path without it")
    ] = False,
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Add a route: requests for a host and/or path prefix go to a function."""
    body = {
        "host": host or "",
        "path": path,
        "methods": method or [],
        "function": fn,
        "strip_prefix": strip_prefix,
    }
    with _client(url) as client:
        route = client.call("POST", _API, json=body)
    if as_json:
        return _print_json(route)
    _stdout().print(Text(f"route {route['id']}: {_describe(route)}"), soft_wrap=True)


@route_app.command("ls")
def list_routes(url: Url = DEFAULT_URL, as_json: AsJson = False) -> None:
    """List routes."""
    with _client(url) as client:
        routes = client.call("GET", _API)["routes"]
    if as_json:
        return _print_json(routes)
    table = Table("ID", "HOST", "PATH", "METHODS", "FUNCTION", "STRIP", "CREATED", box=None)
    for route in routes:
        table.add_row(
            str(route["id"]),
            Text(route.get("host") or "*"),
            Text(route.get("path", "/")),
            Text(_methods(route)),
            Text(route.get("function", ""), style="bold"),
            "yes" if route.get("strip_prefix") else "no",
            _when(route.get("created_at")),
        )
    console = _stdout()
    if routes:
        console.print(table)
    else:
        console.print("no routes")


@route_app.command("rm")
def remove(
    route_id: Annotated[str, typer.Argument(metavar="ID", help="Route id (see route ls)")],
    url: Url = DEFAULT_URL,
) -> None:
    """Delete a route."""
    number = _route_id(route_id)
    with _client(url) as client:
        client.call("DELETE", f"{_API}/{number}")
    _stdout().print(Text(f"deleted route {number}"), soft_wrap=True)
