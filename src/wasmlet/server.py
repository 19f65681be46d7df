"""Starting the HTTP server: one process, or N worker processes sharing the data dir."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys

import uvicorn

from wasmlet.config import Settings

log = logging.getLogger("wasmlet")

_ENV_KEYS = (
    "host",
    "port",
    "workers",
    "data_dir",
    "database_url",
    "max_header_bytes",
    "header_timeout_ms",
    "metrics_port",
)


def _export_settings(settings: Settings) -> None:
    """Worker processes rebuild settings from the environment; hand them ours."""
    for key in _ENV_KEYS:
        value = getattr(settings, key)
        if value is not None:
            os.environ[f"WASMLET_{key.upper()}"] = str(value)


def _bootstrap_admin_key(settings: Settings) -> None:
    """First start: create the operator's admin key, print it once, keep it in a 0600 file."""
    from wasmlet.auth.keys import ADMIN_KEY_FILE, KeyStore
    from wasmlet.registry.db import make_engine, make_sessionmaker
    from wasmlet.registry.locks import registry_lock

    engine = make_engine(settings.db_url)
    try:
        with registry_lock(settings.data_dir):
            token = KeyStore(make_sessionmaker(engine), settings.data_dir).bootstrap(
                settings.data_dir
            )
    finally:
        engine.dispose()
    if token:
        path = settings.data_dir / ADMIN_KEY_FILE
        print(
            f"wasmlet: created the admin API key (shown once; also in {path}, mode 0600):\n"
            f"  {token}",
            file=sys.stderr,
            flush=True,
        )


def _warn_if_exposed(settings: Settings) -> None:
    """Plain HTTP on an address others can reach puts keys and data on the wire."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback:
        log.warning(
            "serving plain HTTP on %s, which is not a loopback address: API keys and "
            "function data cross the network unencrypted; put wasmlet behind a TLS proxy",
            settings.host,
        )


def _check_secret_key(settings: Settings) -> None:
    """Refuse to start with a key that cannot decrypt anything, in one clear line."""
    from wasmlet.host.secrets import SecretKeyError, load_key

    try:
        load_key(settings)
    except SecretKeyError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _prepare_metrics_dir(settings: Settings) -> None:
    # Several workers: prometheus-client aggregates through files in a shared directory.
    path = settings.data_dir.resolve() / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def _bind_metrics(settings: Settings) -> socket.socket:
    """The metrics listener's socket, on the API's host: it answers /metrics without a key,
    so it is as private as the operator makes that address and port."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.metrics_port or 0))
    except OSError as exc:
        sock.close()
        port = settings.metrics_port
        print(f"error: cannot listen on metrics_port {port}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, *, examples: bool = False) -> None:
    from wasmlet.api.state import migrate

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    migrate(settings)
    _check_secret_key(settings)
    _bootstrap_admin_key(settings)
    _warn_if_exposed(settings)
    if examples:
        from wasmlet.bundled import deploy_examples

        deploy_examples(settings)
    metrics_sock = None
    if settings.metrics_port is not None:
        metrics_sock = _bind_metrics(settings)
        # Port 0 picks a free one: the app must know which port it actually got.
        settings = settings.model_copy(update={"metrics_port": metrics_sock.getsockname()[1]})
    _export_settings(settings)
    from wasmlet.http_protocol import BoundedHttpToolsProtocol

    if settings.workers > 1:
        _prepare_metrics_dir(settings)
    config = uvicorn.Config(
        "wasmlet.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="warning",
        access_log=False,
        # httptools, with header size and time limits (from the app's settings) and the
        # invocation fast lane
        http=BoundedHttpToolsProtocol,
        loop="uvloop",
        timeout_keep_alive=30,
        proxy_headers=False,  # X-Forwarded-* are not trusted unless a proxy is configured
        limit_concurrency=10_000,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    # One app serves both listeners; it tells them apart by the local port (api/hotpath.py).
    extra = [metrics_sock] if metrics_sock is not None else []
    if settings.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock, *extra]).run()
    elif extra:
        server.run(sockets=[config.bind_socket(), *extra])
    else:
        server.run()
