"""A real `wasmlet serve` process on a free port, for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

# Servers started by this test process, by URL: the CLI tests look up their admin key.
_BY_URL: dict[str, ServerProcess] = {}


def key_for(url: str) -> str:
    """The admin key of the test server at `url` (for CLI runs: WASMLET_API_KEY); any
    well-formed key for a URL where no test server runs."""
    server = _BY_URL.get(url.rstrip("/"))
    return server.admin_key() if server else "wl_000000000000_no-server-here"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        workers: int = 1,
        examples: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.workers = workers
        self.examples = examples
        self.extra_env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin_key(self) -> str:
        """The operator's key: written by the server's first start, or (a second server on
        a database that already has keys) created the way `wasmlet keys create --local`
        does."""
        path = self.data_dir / "admin.key"
        if not path.exists():
            from wasmlet.auth.keys import KeyStore
            from wasmlet.registry.db import make_engine, make_sessionmaker

            url = self.database_url or f"sqlite:///{(self.data_dir / 'wasmlet.db').resolve()}"
            engine = make_engine(url)
            try:
                store = KeyStore(make_sessionmaker(engine), self.data_dir)
                _, token = store.create("default", ["admin"], "tests")
            finally:
                engine.dispose()
            path.write_text(token + "\n")
            path.chmod(0o600)
        return path.read_text().strip()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key()}"}

    def client(self, *, auth: bool = True, **kwargs: object) -> httpx.Client:
        """A client of this server, carrying the admin key unless auth=False."""
        headers = {"Authorization": f"Bearer {self.admin_key()}"} if auth else {}
        return httpx.Client(
            base_url=self.url,
            timeout=30,
            headers=headers,
            **kwargs,  # type: ignore[arg-type]
        )

    def start(self, timeout: float = 60) -> None:
        _BY_URL[self.url] = self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
        env.update(self.extra_env)
        if self.database_url:
            env["WASMLET_DATABASE_URL"] = self.database_url
        cmd = [
            sys.executable, "-m", "wasmlet", "serve",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--workers", str(self.workers),
        ]  # fmt: skip
        if self.examples:
            cmd.append("--examples")
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.port = free_port()
        self.start()
