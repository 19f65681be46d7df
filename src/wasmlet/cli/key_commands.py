"""`wasmlet keys` (API keys) and `wasmlet namespace` (quotas).

`keys create --local` works on the data dir and database directly, without a running
server or a key: whoever can read those is the operator already. It is how a second node
(or a lost admin key) gets an admin key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from wasmlet.cli import app
from wasmlet.cli.client import DEFAULT_URL
from wasmlet.cli.commands import AsJson, Url, _client, _fail, _print_json, _stdout, _when

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
ns_app = typer.Typer(help="Namespace (tenant) quotas and hosts.", no_args_is_help=True)
app.add_typer(ns_app, name="namespace")

Scopes = Annotated[
    list[str],
    typer.Option("--scope", help="admin, deploy, invoke, read, metrics (default only); repeatable"),
]


@keys_app.command("create")
def create(
    scope: Scopes,
    namespace: Annotated[
        str | None, typer.Option(help="Namespace (tenant) of the key [default: yours]")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    local: Annotated[
        bool, typer.Option("--local", help="Write the key into the database directly")
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="--local: data directory [default: $WASMLET_DATA_DIR]")
    ] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Create a key; its token is printed once and cannot be shown again."""
    if local:
        from wasmlet.auth.keys import KeyStore
        from wasmlet.config import load_settings
        from wasmlet.errors import WasmletError
        from wasmlet.registry.db import make_engine, make_sessionmaker

        settings = load_settings(data_dir=data_dir)
        engine = make_engine(settings.db_url)
        try:
            store = KeyStore(make_sessionmaker(engine), settings.data_dir)
            info, token = store.create(namespace or "default", scope, name)
        except WasmletError as exc:
            _fail(f"{exc.code}: {exc.message}")
        finally:
            engine.dispose()
        result = {"key_id": info.key_id, "namespace": info.namespace, "token": token}
    else:
        body = {"scopes": scope, "namespace": namespace, "name": name}
        with _client(url) as client:
            result = client.call("POST", "/api/v1/keys", json=body)
    if as_json:
        _print_json(result)
        return
    _stdout().print(
        f"key {result['key_id']} (namespace {result['namespace']}); shown only now:",
        highlight=False,
    )
    print(result["token"])


@keys_app.command("ls")
def list_keys(
    namespace: Annotated[str | None, typer.Option(help="Only this namespace")] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
) -> None:
    """List keys (ids, namespaces, scopes; never secrets)."""
    with _client(url) as client:
        params = {"namespace": namespace} if namespace else None
        keys = client.call("GET", "/api/v1/keys", params=params)["keys"]
    if as_json:
        _print_json(keys)
        return
    table = Table("KEY", "NAMESPACE", "SCOPES", "NAME", "CREATED", "REVOKED", box=None)
    for k in keys:
        table.add_row(
            k["key_id"],
            k["namespace"],
            ",".join(k["scopes"]),
            k["name"] or "-",
            _when(k["created_at"]),
            _when(k["revoked_at"]) if k.get("revoked_at") else "-",
        )
    _stdout().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (wasmlet keys ls)")],
    url: Url = DEFAULT_URL,
) -> None:
    """Revoke a key, at once on every worker."""
    with _client(url) as client:
        done = client.call("DELETE", f"/api/v1/keys/{key_id}")["revoked"]
    _stdout().print(f"{key_id}: {'revoked' if done else 'already revoked'}")


@ns_app.command("quota")
def quota(
    namespace: Annotated[str, typer.Argument(help="Namespace")],
    rps: Annotated[float | None, typer.Option(help="Requests per second")] = None,
    burst: Annotated[int | None, typer.Option(help="Burst above the rate")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Concurrent invocations")] = None,
    functions: Annotated[int | None, typer.Option(help="Number of functions")] = None,
    module_bytes: Annotated[int | None, typer.Option(help="Total bytes of modules")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Most memory_mb a spec may ask")] = None,
    timeout_ms: Annotated[int | None, typer.Option(help="Most timeout_ms a spec may ask")] = None,
    fuel: Annotated[int | None, typer.Option(help="Most fuel a spec may ask")] = None,
    pool_size: Annotated[int | None, typer.Option(help="Most pool_size a spec may ask")] = None,
    kv_keys: Annotated[int | None, typer.Option(help="Key-value keys in all")] = None,
    kv_bytes: Annotated[int | None, typer.Option(help="Key-value bytes in all")] = None,
    egress: Annotated[
        str | None,
        typer.Option(help="Egress allow list: CIDRs and hosts, comma-separated ('' = none)"),
    ] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Show a namespace's quota, or set it when options are given (0 = unlimited)."""
    path = f"/api/v1/namespaces/{namespace}/quota"
    values = {
        "requests_per_second": rps,
        "burst": burst,
        "max_concurrency": concurrency,
        "max_functions": functions,
        "max_module_bytes": module_bytes,
        "max_memory_mb": memory_mb,
        "max_timeout_ms": timeout_ms,
        "max_fuel": fuel,
        "max_pool_size": pool_size,
        "kv_max_keys": kv_keys,
        "kv_max_bytes": kv_bytes,
        "egress_allow": None if egress is None else [e for e in egress.split(",") if e.strip()],
    }
    with _client(url) as client:
        if any(v is not None for v in values.values()):
            current = client.call("GET", path)
            current.pop("namespace", None)
            current.update({k: v for k, v in values.items() if v is not None})
            result = client.call("PUT", path, json=current)
        else:
            result = client.call("GET", path)
    if as_json:
        _print_json(result)
        return
    for key, value in result.items():
        if isinstance(value, list):
            value = ",".join(value) or "(none)"
        _stdout().print(f"{key:>20}  {value if value else '-'}")
