"""Crash safety: kill -9 the server at bad moments, restart, and hold it to its promises.

Shared by tests/crash and tests/registry/test_doctor.py: a PostgreSQL database of a test's
own (the doctor examines a whole database, so a session-wide one shared with other tests
would show their versions, whose blobs live in other data dirs) and `wasmlet doctor` run
as a real subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import PG_ADMIN_URL, _pg_available


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards (skips without PostgreSQL,
    unless CI=true)."""
    problem = _pg_available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem} (CI requires PostgreSQL)")
        pytest.skip(problem)
    name = f"wasmlet_crash_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_doctor(data_dir: Path, database_url: str | None, *args: str) -> tuple[int, dict[str, Any]]:
    """`python -m wasmlet doctor --json ...`: (exit status, report)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMLET_")}
    env["WASMLET_CONFIG"] = str(data_dir.parent / "no-such-config.toml")
    cmd = [sys.executable, "-m", "wasmlet", "doctor", "--data-dir", str(data_dir), "--json"]
    if database_url:
        cmd += ["--database-url", database_url]
    proc = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode in (0, 1), f"doctor crashed ({proc.returncode}):\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def findings(report: dict[str, Any], *severities: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if not severities or f["severity"] in severities]
