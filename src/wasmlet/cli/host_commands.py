"""`wasmlet namespace hosts`: which host names a namespace (tenant) may route.

`add` and `rm` are the operator's; `ls` shows a tenant its own hosts, the operator every
namespace's. The server normalises and checks the patterns.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from wasmlet.cli.client import DEFAULT_URL
from wasmlet.cli.commands import AsJson, Url, _client, _print_json, _stdout, _when
from wasmlet.cli.key_commands import ns_app

hosts_app = typer.Typer(
    help="Host names and *.domain patterns a namespace may route (the operator assigns them).",
    no_args_is_help=True,
)
ns_app.add_typer(hosts_app, name="hosts")

Patterns = Annotated[
    list[str], typer.Argument(metavar="PATTERN...", help="Host names or *.example.com patterns")
]


def _path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/hosts"


def _print_hosts(hosts: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        return _print_json(hosts)
    if not hosts:
        _stdout().print("no hosts")
        return
    table = Table("NAMESPACE", "HOST", "ASSIGNED", box=None)
    for host in hosts:
        table.add_row(Text(host["namespace"]), Text(host["pattern"]), _when(host["created_at"]))
    _stdout().print(table)


@hosts_app.command("add")
def add(
    namespace: Annotated[str, typer.Argument(help="Namespace")],
    patterns: Patterns,
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Assign hosts to a namespace: only it may route them from then on."""
    with _client(url) as client:
        hosts = client.call("POST", _path(namespace), json={"patterns": patterns})["hosts"]
    _print_hosts(hosts, as_json)


@hosts_app.command("ls")
def list_hosts(
    namespace: Annotated[str | None, typer.Argument(help="Namespace [default: all]")] = None,
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """List host assignments (the operator sees every namespace's, a tenant its own)."""
    path = _path(namespace) if namespace else "/api/v1/namespaces/hosts"
    with _client(url) as client:
        hosts = client.call("GET", path)["hosts"]
    _print_hosts(hosts, as_json)


@hosts_app.command("rm")
def remove(
    namespace: Annotated[str, typer.Argument(help="Namespace")],
    patterns: Patterns,
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Take hosts from a namespace; its routes for hosts it no longer has are deleted."""
    with _client(url) as client:
        result = client.call("DELETE", _path(namespace), params={"pattern": patterns})
    if as_json:
        return _print_json(result)
    console = _stdout()
    for pattern in result["removed"]:
        console.print(Text(f"{namespace}: removed {pattern}"), soft_wrap=True)
    for route_id in result["routes_deleted"]:
        console.print(Text(f"deleted route {route_id} (its host is no longer {namespace}'s)"))
