"""`wasmlet doctor`: check (and with --repair, fix) a node's registry, offline or online.

Unlike the client commands it does not talk to a server: it opens the data dir and the
database itself (registry/doctor.py), so it also works while the server is down, e.g.
after a crash. Exit status 0: healthy, or everything found was repaired; 1: problems remain
(errors that need a person, or problems a --repair run would fix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from wasmlet.cli import app
from wasmlet.cli.commands import _print_json, _stdout
from wasmlet.registry.doctor import DEFAULT_GRACE_S, DoctorReport, Finding, examine

_ORDER = {"error": 0, "problem": 1, "note": 2}
_STYLE = {"error": "bold red", "problem": "yellow", "note": "dim", "repaired": "green"}


@app.command()
def doctor(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data directory [default: $WASMLET_DATA_DIR or ./.wasmlet]"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Database URL [default: $WASMLET_DATABASE_URL or SQLite in data dir]"),
    ] = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Fix what can be fixed (removes garbage)")
    ] = False,
    grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds an unreferenced blob or temp file is left alone, as a running "
            "server may be about to use it (0 is safe while the server is stopped)",
        ),
    ] = DEFAULT_GRACE_S,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Check that the registry and the stored modules agree; --repair fixes what it can."""
    from wasmlet.config import load_settings

    settings = load_settings(data_dir=data_dir, database_url=database_url)
    report = examine(settings, repair=repair, grace_s=grace)
    if as_json:
        _print_json(report.to_dict())
    else:
        _render(report)
    raise typer.Exit(report.exit_code)


def _render(report: DoctorReport) -> None:
    console = _stdout()
    console.print(Text(f"data dir  {report.data_dir}"), soft_wrap=True)
    console.print(Text(f"database  {report.database}"), soft_wrap=True)
    if report.checked:
        console.print(
            Text("checked   " + ", ".join(f"{n} {what}" for what, n in report.checked.items()))
        )
    for finding in sorted(report.findings, key=lambda f: _ORDER[f.severity]):
        console.print(_line(finding), soft_wrap=True)
    remaining = report.remaining
    repaired = sum(f.repaired for f in report.findings)
    if not remaining:
        summary = f"healthy ({repaired} repaired)" if repaired else "healthy"
        console.print(Text(summary, style="bold green"))
        return
    errors = sum(f.severity == "error" for f in remaining)
    fixable = len(remaining) - errors
    parts = [f"{errors} error(s) need attention"] if errors else []
    if fixable:
        parts.append(f"{fixable} problem(s) " + ("remain" if report.repair else "--repair fixes"))
    console.print(Text("unhealthy: " + "; ".join(parts), style="bold red"))


def _line(finding: Finding) -> Text:
    label = "repaired" if finding.repaired else finding.severity
    line = Text(f"{label:<9}", style=_STYLE[label])
    line.append(f"{finding.code}: {finding.message}")
    return line
