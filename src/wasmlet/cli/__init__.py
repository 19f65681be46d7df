"""The `wasmlet` command: `serve` runs the platform; the rest talk to it over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="wasmlet",
    help="Functions-as-a-Service for WebAssembly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Functions-as-a-Service for WebAssembly."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8080]")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data directory [default: $WASMLET_DATA_DIR or ./.wasmlet]"),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [default: 1]")] = None,
    examples: Annotated[bool, typer.Option(help="Deploy the bundled example functions")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve /metrics without a key on this port too (same host; keep it private)"
        ),
    ] = None,
) -> None:
    """Start the server."""
    from wasmlet.config import load_settings
    from wasmlet.server import serve as run

    run(
        load_settings(
            host=host,
            port=port,
            data_dir=data_dir,
            workers=workers,
            metrics_port=metrics_port,
        ),
        examples=examples,
    )


def main() -> None:
    # Importing these modules registers their commands on `app`.
    from wasmlet.cli import (  # noqa: F401
        commands,
        doctor_command,
        host_commands,
        key_commands,
        kv_commands,
        route_commands,
        secret_commands,
    )

    app()
