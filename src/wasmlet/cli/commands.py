"""Client commands: deploy, invoke, ls, info, versions, rollback, rm, logs.

Each talks to a running server through `wasmlet.cli.client.Client` and renders the answer
with Rich; `--json` prints the server's JSON for scripts. Failures print exactly one line,
`error: <code>: <message>`, on stderr and exit 1 (2 for a local file that cannot be read),
so scripts can rely on both the exit code and the message.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from wasmlet.cli import app
from wasmlet.cli.client import (
    DEFAULT_URL,
    ApiError,
    Client,
    ClientError,
    Unreachable,
    find_api_key,
)
from wasmlet.cli.manifest import ManifestError, load_manifest

Url = Annotated[
    str,
    typer.Option("--url", envvar="WASMLET_URL", help="Server URL"),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON instead")]


def _stdout() -> Console:
    # Piped output is not wrapped at 80 columns: tables stay one row per record.
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(highlight=False, width=None if wide else 160)


# -- shared plumbing -----------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, whatever the message contained, then exit."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"error: {line}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


@contextmanager
def _client(url: str) -> Iterator[Client]:
    try:
        with Client(url, api_key=find_api_key()) as client:
            yield client
    except Unreachable as exc:
        _fail(f"cannot reach wasmlet at {exc.url} (is 'wasmlet serve' running?)")
    except ApiError as exc:
        _fail(f"{exc.code}: {exc.message}")
    except ClientError as exc:
        _fail(str(exc))
    except httpx.InvalidURL as exc:
        _fail(f"invalid --url {url!r}: {exc}", code=2)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        _fail(f"no such file: {path}", code=2)
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}", code=2)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "-"


def _when(stamp: str | None, *, millis: bool = False) -> str:
    """Local time. The server speaks UTC; a stamp without an offset is UTC too."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone()
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{local.microsecond // 1000:03d}" if millis else text


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _signature(name: str, sig: dict[str, Any] | None) -> str:
    if not sig:
        return f"{name}(?)"
    params = sig.get("params") or []
    names = sig.get("names") or []
    if len(names) == len(params):
        args = ", ".join(f"{n}: {t}" for n, t in zip(names, params, strict=True))
    else:
        args = ", ".join(params)
    results = sig.get("results") or []
    if not results:
        return f"{name}({args})"
    ret = results[0] if len(results) == 1 else f"({', '.join(results)})"
    return f"{name}({args}) -> {ret}"


# -- deploy --------------------------------------------------------------------------------


@app.command()
def deploy(
    name: Annotated[str, typer.Argument(help="Function name")],
    file: Annotated[
        Path | None,
        typer.Argument(help=".wasm or .wat module (or use --manifest)", show_default=False),
    ] = None,
    abi: Annotated[str | None, typer.Option(help="core, wasi-cgi, ...")] = None,
    export: Annotated[str | None, typer.Option(help="Export to call")] = None,
    timeout_ms: Annotated[int | None, typer.Option(help="Time limit per call")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory limit per instance")] = None,
    fuel: Annotated[int | None, typer.Option(help="Fuel limit per call")] = None,
    pool_size: Annotated[int | None, typer.Option(help="Instances kept per version")] = None,
    config: Annotated[
        list[str] | None, typer.Option("--config", help="KEY=VALUE, repeatable")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE, repeatable")] = None,
    allowed_host: Annotated[
        list[str] | None, typer.Option("--allowed-host", help="Outbound host, repeatable")
    ] = None,
    reuse: Annotated[
        bool | None,
        typer.Option(
            "--reuse/--no-reuse", help="Reuse instances between calls", show_default=False
        ),
    ] = None,
    wasi: Annotated[
        bool | None, typer.Option("--wasi/--no-wasi", help="extism: grant WASI", show_default=False)
    ] = None,
    max_var_bytes: Annotated[int | None, typer.Option(help="extism: var store cap")] = None,
    max_http_response_bytes: Annotated[
        int | None, typer.Option(help="extism: HTTP response cap")
    ] = None,
    content_type: Annotated[str | None, typer.Option(help="Content type of the output")] = None,
    error_status: Annotated[
        int | None, typer.Option(help="HTTP status for errors the guest reports (4xx/5xx)")
    ] = None,
    allowed_path: Annotated[
        list[str] | None,
        typer.Option("--allowed-path", help="extism+wasi: SUBDIR:/guest preopen, repeatable"),
    ] = None,
    public: Annotated[
        bool | None,
        typer.Option(
            "--public/--private",
            help="Invocable without a key, or only with an invoke key [default: private]",
            show_default=False,
        ),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option(
            "--capability", "--grant", help="Grant kv, kv:global, http or call:NAME; repeatable"
        ),
    ] = None,
    allowed_method: Annotated[
        list[str] | None, typer.Option("--allowed-method", help="Outbound HTTP method, repeatable")
    ] = None,
    http_timeout_ms: Annotated[
        int | None, typer.Option(help="Timeout of each outbound HTTP request")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Extism manifest (JSON): module and options")
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Deploy a module as NAME (a new version, or the same one again)."""
    fields: list[tuple[str, str]] = []
    if manifest is not None:
        try:
            module, spec, extras = load_manifest(manifest)
        except ManifestError as exc:
            _fail(str(exc), code=2)
        fields.append(("spec", json.dumps(spec)))
        file = file or manifest.with_suffix(".wasm")
    elif file is None:
        _fail("give a module FILE or --manifest", code=2)
    else:
        module = _read_file(file)
        extras = {}
    for key, value in (
        ("abi", abi),
        ("export", export),
        ("timeout_ms", timeout_ms),
        ("memory_mb", memory_mb),
        ("fuel", fuel),
        ("pool_size", pool_size),
        ("max_var_bytes", max_var_bytes),
        ("max_http_response_bytes", max_http_response_bytes),
        ("content_type", content_type),
        ("error_status", error_status),
        ("http_timeout_ms", http_timeout_ms),
        ("visibility", None if public is None else "public" if public else "private"),
    ):
        if value is not None:
            fields.append((key, str(value)))
    for key, flag in (("reuse", reuse), ("wasi", wasi)):
        if flag is not None:
            fields.append((key, "true" if flag else "false"))
    for key, values in (
        ("config", config),
        ("env", env),
        ("allowed_host", allowed_host),
        ("allowed_path", allowed_path),
        ("capability", capability),
        ("allowed_method", allowed_method),
    ):
        fields.extend((key, v) for v in values or ())

    stderr = Console(stderr=True)
    progress = Progress(
        TextColumn("uploading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    with _client(url) as client, progress:
        task = progress.add_task(file.name, total=None)
        result = client.deploy(
            name,
            file.name,
            module,
            fields,
            progress=lambda sent, total: progress.update(task, completed=sent, total=total),
            extras=extras,
        )

    fn = result.function
    version = fn.get("active_version") or {}
    spec = version.get("spec") or {}
    line = Text()
    line.append(fn["name"], style="bold")
    if result.created:
        line.append(": deployed new version ")
    else:
        line.append(": unchanged, already at version ")
    line.append(_short(version.get("digest")), style="cyan")
    line.append(f" (abi {version.get('abi', '-')}, export {spec.get('export', '-')})")
    _stdout().print(line, soft_wrap=True)


# -- invoke --------------------------------------------------------------------------------


def _data(data: str | None) -> bytes:
    if data is None:
        return b""
    if data == "-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        return _read_file(Path(data[1:]))
    return data.encode()


def _core_body(body: bytes) -> bytes:
    """Shape DATA as `{"args": ...}` for a `core` function.

    A JSON object that already has "args" goes as is; any other JSON value becomes the
    args; and bare numbers (`1071 462` or `1071,462`) become a list. The server checks
    types and counts against the export's signature, so nothing more is checked here.
    """
    if not body.strip():
        return body
    try:
        value = json.loads(body)
    except ValueError:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return body
        value = [_token(t) for t in text.replace(",", " ").split()]
    if isinstance(value, dict) and "args" in value:
        return body
    return json.dumps({"args": value}).encode()


def _token(token: str) -> Any:
    try:
        value = json.loads(token)
    except ValueError:
        return token  # e.g. 0x10: the server parses integer strings itself
    return value if isinstance(value, int | float) else token


def _headers(values: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for item in values or ():
        key, colon, value = item.partition(":")
        if not colon or not key.strip():
            _fail(f"--header must look like NAME:VALUE, got {item!r}", code=2)
        out.append((key.strip(), value.strip()))
    return out


@app.command()
def invoke(
    name: Annotated[str, typer.Argument(help="Function name")],
    data: Annotated[
        str | None,
        typer.Argument(
            help="Request body: DATA, @FILE or - for stdin. For a core function, JSON args "
            "like [1071,462] or {\"a\": 1}, or bare numbers '1071 462'.",
            show_default=False,
        ),
    ] = None,
    export: Annotated[str | None, typer.Option(help="Export to call")] = None,
    path: Annotated[
        str | None, typer.Option(help="Invoke through the gateway at /fn/NAME/PATH")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="HTTP method, through the gateway (default POST)")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="NAME:VALUE, repeatable")
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Invoke a function and print its response body."""
    body = _data(data)
    headers = _headers(header)
    with _client(url) as client:
        fn = client.get(name)
        abi = (fn.get("active_version") or {}).get("abi")
        if abi == "core" and data is not None:
            body = _core_body(body)
            if not any(k.lower() == "content-type" for k, _ in headers):
                headers.append(("content-type", "application/json"))
        result = client.invoke(name, body, export=export, headers=headers, path=path, method=method)
    out = sys.stdout.buffer
    out.write(result.body)
    if sys.stdout.isatty() and result.body and not result.body.endswith(b"\n"):
        out.write(b"\n")
    out.flush()
    if result.status >= 400:
        _fail(f"http_{result.status}: {name} answered with HTTP status {result.status}")


# -- inspection ----------------------------------------------------------------------------


@app.command("ls")
def list_functions(url: Url = DEFAULT_URL, as_json: AsJson = False) -> None:
    """List functions."""
    with _client(url) as client:
        functions = client.list()
    if as_json:
        return _print_json(functions)
    table = Table("NAME", "ABI", "EXPORT", "VERSION", "VERSIONS", "UPDATED", box=None)
    for fn in functions:
        version = fn.get("active_version") or {}
        table.add_row(
            Text(fn["name"], style="bold"),
            Text(version.get("abi", "-")),
            Text((version.get("spec") or {}).get("export", "-")),
            Text(_short(version.get("digest")), style="cyan"),
            str(fn.get("version_count", 0)),
            _when(fn.get("updated_at")),
        )
    console = _stdout()
    if functions:
        console.print(table)
    else:
        console.print("no functions deployed")


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="Function name")],
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Describe a function: its active version, limits, grants and exports."""
    with _client(url) as client:
        fn = client.get(name)
    if as_json:
        return _print_json(fn)
    version = fn.get("active_version") or {}
    spec = version.get("spec") or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()

    def section(title: str) -> None:
        grid.add_row(Text(title, style="bold"), "")

    def row(label: str, value: object) -> None:
        grid.add_row(f"  {label}", Text(str(value)))

    section(fn["name"])
    row("abi", version.get("abi", "-"))
    row("export", spec.get("export", "-"))
    row("version", f"{version.get('digest', '-')} (seq {version.get('seq', '-')})")
    row("module", f"{version.get('module_digest', '-')} ({_size(version.get('size'))})")
    row("wasi", "yes" if version.get("wasi") else "no")
    row("versions", fn.get("version_count", 0))
    row("created", _when(fn.get("created_at")))
    row("updated", _when(fn.get("updated_at")))
    section("limits")
    row("timeout", f"{spec['timeout_ms']} ms" if "timeout_ms" in spec else "-")
    row("memory", f"{spec['memory_mb']} MiB" if "memory_mb" in spec else "-")
    row("fuel", spec.get("fuel") if spec.get("fuel") is not None else "unlimited")
    row("pool size", spec.get("pool_size", "-"))
    row("reuse", "yes" if spec.get("reuse") else "no")
    section("grants")
    row("config", ", ".join(f"{k}={v}" for k, v in (spec.get("config") or {}).items()) or "-")
    row("env", ", ".join(f"{k}={v}" for k, v in (spec.get("env") or {}).items()) or "-")
    row("allowed hosts", ", ".join(spec.get("allowed_hosts") or []) or "-")
    row("capabilities", ", ".join(spec.get("capabilities") or []) or "-")
    row("visibility", spec.get("visibility", "private"))
    section("exports")
    for export, sig in (version.get("exports") or {}).items():
        marker = "  (default)" if export == spec.get("export") else ""
        grid.add_row("", Text(_signature(export, sig) + marker))
    _stdout().print(grid)


@app.command()
def versions(
    name: Annotated[str, typer.Argument(help="Function name")],
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Show a function's version history."""
    with _client(url) as client:
        items = client.versions(name)
    if as_json:
        return _print_json(items)
    table = Table("SEQ", "DIGEST", "MODULE", "ABI", "SIZE", "CREATED", "ACTIVE", box=None)
    for v in items:
        table.add_row(
            str(v.get("seq", "-")),
            Text(_short(v.get("digest")), style="cyan"),
            _short(v.get("module_digest")),
            Text(v.get("abi", "-")),
            _size(v.get("size")),
            _when(v.get("created_at")),
            Text("*", style="bold green") if v.get("active") else "",
        )
    _stdout().print(table)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Function name")],
    digest: Annotated[str, typer.Argument(help="Version digest, or a unique prefix of it")],
    url: Url = DEFAULT_URL,
) -> None:
    """Make an earlier version active again."""
    with _client(url) as client:
        fn = client.rollback(name, digest)
    version = fn.get("active_version") or {}
    line = Text()
    line.append(fn["name"], style="bold")
    line.append(": active version is now ")
    line.append(_short(version.get("digest")), style="cyan")
    line.append(f" (seq {version.get('seq', '-')})")
    _stdout().print(line, soft_wrap=True)


@app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="Function name")],
    url: Url = DEFAULT_URL,
) -> None:
    """Delete a function and all its versions."""
    with _client(url) as client:
        result = client.delete(name)
    removed = result.get("blobs_removed", 0)
    _stdout().print(
        Text(f"deleted {result.get('deleted', name)} ({removed} module blob(s) removed)"),
        soft_wrap=True,
    )


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="Function name")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Records to show")] = 20,
    url: Url = DEFAULT_URL,
    as_json: AsJson = False,
) -> None:
    """Show recent invocations (newest first) and the logs they captured."""
    with _client(url) as client:
        records = client.invocations(name, limit)
    if as_json:
        return _print_json(records)
    console = _stdout()
    if not records:
        console.print(f"no invocations of {name} recorded yet", soft_wrap=True)
        return
    table = Table("TIME", "VERSION", "VIA", "MS", "STATUS", "ERROR", "MEMORY", "FUEL", box=None)
    for r in records:
        ok = r.get("status", 500) < 400
        table.add_row(
            _when(r.get("started_at"), millis=True),
            Text(_short(r.get("version")), style="cyan"),
            Text(r.get("via", "-")),
            f"{r.get('duration_ms', 0):.2f}",
            Text(str(r.get("status", "-")), style="green" if ok else "red"),
            Text(r.get("error_code") or "-"),
            _size(r.get("peak_memory")),
            str(r["fuel_used"]) if r.get("fuel_used") is not None else "-",
        )
    console.print(table)
    for r in records:
        text = r.get("logs") or ""
        if r.get("error_code"):
            text += f"error: {r['error_code']}: {r.get('error_message') or ''}\n"
        if not text:
            continue
        console.print()
        head = f"-- {_when(r.get('started_at'), millis=True)}  #{r.get('id')} ({r.get('via')})"
        console.print(Text(head, style="dim"), soft_wrap=True)
        console.print(Text(text.rstrip("\n")), soft_wrap=True)
