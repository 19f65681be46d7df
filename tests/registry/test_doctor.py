"""The doctor on hand-damaged data dirs: the right findings, repairs that work, exit codes."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from tests.crash import fresh_postgres, run_doctor
from tests.registry.test_deploy import Env, make_env
from tests.runtime.support import FIXTURES, GCD_WAT, MULTI_WAT, wasm_bytes
from wasmlet.cli import app
from wasmlet.registry.blobs import digest_of
from wasmlet.registry.doctor import DoctorReport, Finding, examine
from wasmlet.registry.models import Function
from wasmlet.spec import SpecUpdate

LINKED_MAIN = (FIXTURES / "extism_linked_main.wat").read_bytes()
MATH = (FIXTURES / "extism_math.wat").read_bytes()
GCD = wasm_bytes(GCD_WAT)
OLD = time.time() - 3600  # an mtime well past the doctor's grace period


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None  # the default: wasmlet.db in the data dir
    else:
        with fresh_postgres() as url:
            yield url


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """For checks of the files on disk: SQLite is enough."""
    return make_env(tmp_path / "data")


@pytest.fixture
def db_env(tmp_path: Path, database_url: str | None) -> Env:
    """For checks and repairs of rows: SQLite and PostgreSQL."""
    return make_env(tmp_path / "data", database_url)


def deployed(env: Env) -> dict[str, Any]:
    """gcd (two versions, the same module), multi, and an extism function with a linked
    module; returns their views."""
    d = env.deployer
    gcd1, _ = d.deploy("gcd", GCD, SpecUpdate())
    gcd2 = d.patch("gcd", SpecUpdate(timeout_ms=1234))
    multi, _ = d.deploy("multi", MULTI_WAT.read_bytes(), SpecUpdate(export="divmod"))
    linked, _ = d.deploy(
        "linked", LINKED_MAIN, SpecUpdate(abi="extism", export="run"), {"math": MATH}
    )
    return {"gcd1": gcd1, "gcd2": gcd2, "multi": multi, "linked": linked}


def check(env: Env, *, repair: bool = False, grace_s: float = 0) -> DoctorReport:
    return examine(env.deployer.settings, repair=repair, grace_s=grace_s)


def only(report: DoctorReport, code: str) -> list[Finding]:
    return [f for f in report.findings if f.code == code]


def record(function: str, version: str, status: int = 200, duration_ms: float = 1.0) -> dict:
    return {
        "function": function,
        "version": version,
        "started_at": datetime.now(UTC),
        "duration_ms": duration_ms,
        "status": status,
        "peak_memory": 0,
        "instantiated": False,
        "via": "api",
        "logs": "",
    }


def age(path: Path) -> None:
    os.utime(path, (OLD, OLD))


# -- healthy ---------------------------------------------------------------------------------


def test_a_healthy_registry_has_nothing_to_report(db_env: Env) -> None:
    views = deployed(db_env)
    db_env.repo.insert_invocations(
        [record("gcd", views["gcd2"].active_version.digest)] * 3
        + [record("gcd", views["gcd1"].active_version.digest, status=504)]
    )
    report = check(db_env, repair=True)
    assert report.findings == []
    assert report.healthy and report.exit_code == 0
    # 4 versions; 3 blobs (gcd's versions share one module; linked has main + math).
    assert report.checked == {
        "functions": 3,
        "versions": 4,
        "blobs": 4,
        "artifacts": 4,
        "invocations": 4,
    }
    assert len(db_env.blob_files()) == 4  # repair removed nothing


# -- blobs the versions need -------------------------------------------------------------------


def test_missing_blob_is_an_error_naming_function_and_version(env: Env) -> None:
    views = deployed(env)
    digest = views["multi"].active_version.module_digest
    env.blobs.path(digest).unlink()
    report = check(env, repair=True)
    [finding] = report.findings
    assert (finding.code, finding.severity, finding.repaired) == ("missing_blob", "error", False)
    assert finding.function == "multi"
    assert finding.version == views["multi"].active_version.digest
    assert "'multi' version 1" in finding.message
    assert "compiled artifact still serves it" in finding.message  # the artifact is kept
    assert env.cache.path(digest).exists()
    assert report.exit_code == 1

    # Deploying the same module again is the cure the message names.
    env.deployer.deploy("multi", MULTI_WAT.read_bytes(), SpecUpdate(export="divmod"))
    assert check(env).findings == []


def test_corrupt_blob_is_an_error_for_every_version_using_it(env: Env) -> None:
    views = deployed(env)
    digest = views["gcd2"].active_version.module_digest
    path = env.blobs.path(digest)
    path.write_bytes(path.read_bytes()[:-1] + b"\xff")  # same size, one byte changed
    report = check(env, repair=True)
    corrupt = only(report, "corrupt_blob")
    assert {f.version for f in corrupt} == {
        views["gcd1"].active_version.digest,
        views["gcd2"].active_version.digest,
    }
    assert {f.function for f in corrupt} == {"gcd"}
    assert all(f.severity == "error" and not f.repaired for f in corrupt)
    assert report.findings == corrupt and report.exit_code == 1
    assert path.read_bytes() != GCD  # the doctor does not make bytes up

    # A redeploy of the same bytes replaces the damaged blob (BlobStore.put checks).
    env.deployer.deploy("gcd", GCD, SpecUpdate())
    assert path.read_bytes() == GCD
    assert check(env).findings == []


def test_a_linked_module_is_checked_too(env: Env) -> None:
    views = deployed(env)
    math = views["linked"].active_version.spec["modules"]["math"]
    assert math == digest_of(wasm_bytes(FIXTURES / "extism_math.wat"))
    env.blobs.path(math).unlink()
    [finding] = check(env).findings
    assert finding.code == "missing_blob"
    assert finding.function == "linked"
    assert "linked module 'math'" in finding.message


# -- garbage ---------------------------------------------------------------------------------


def test_garbage_is_removed_by_repair_and_only_then(env: Env) -> None:
    deployed(env)
    orphan = env.blobs.put(b"\0asm\x01\0\0\0 left by a deploy killed before its commit")
    orphan_path = env.blobs.path(orphan)
    orphan_artifact = env.cache.path(orphan)
    orphan_artifact.write_bytes(b"compiled")
    blob_tmp = orphan_path.parent / "tmpab12cd.tmp"
    blob_tmp.write_bytes(b"half a module")
    cache_tmp = env.cache.dir / "tmpzz99.tmp"
    cache_tmp.write_bytes(b"half an artifact")
    stale = env.cache.path(digest_of(b"a module deleted long ago"))
    stale.write_bytes(b"compiled")
    empty = env.cache.path(env.repo.active_version("multi").module_digest)
    empty.write_bytes(b"")  # a needed artifact cut short: recompiled when next needed
    stray = env.blobs.root / "README"
    stray.write_text("not ours")
    for path in (orphan_path, orphan_artifact, blob_tmp, cache_tmp, stale, empty):
        age(path)

    report = check(env)
    assert sorted(report.codes("problem")) == [
        "orphan_blob",
        "stale_artifact",
        "stale_artifact",
        "temp_file",
        "temp_file",
    ]
    assert report.codes("note") == ["unexpected_file"]
    assert report.codes("error") == []
    assert report.exit_code == 1
    assert all(p.exists() for p in (orphan_path, blob_tmp, cache_tmp, stale, empty))

    repaired = check(env, repair=True)
    assert all(f.repaired for f in repaired.findings if f.severity == "problem")
    assert repaired.exit_code == 0
    for path in (orphan_path, orphan_artifact, blob_tmp, cache_tmp, stale, empty):
        assert not path.exists(), path
    assert stray.exists()  # not ours to delete
    again = check(env)
    assert [f.code for f in again.findings] == ["unexpected_file"]
    assert again.checked["blobs"] == 4
    # Everything still serves from what is left.
    assert env.blobs.verify(env.repo.active_version("multi").module_digest) is True


def test_recent_garbage_is_left_alone(env: Env) -> None:
    """A running server may still use a fresh unreferenced blob (raw upload awaiting a compat
    deploy) or be writing a temp file; within the grace period they are only noted."""
    deployed(env)
    orphan = env.blobs.path(env.blobs.put(b"just uploaded"))
    tmp = env.cache.dir / "tmpwrite.tmp"
    tmp.write_bytes(b"being written")
    report = check(env, repair=True, grace_s=600)
    assert sorted(report.codes()) == ["orphan_blob", "temp_file"]
    assert report.codes("note") == report.codes()
    assert report.healthy
    assert orphan.exists() and tmp.exists()
    assert check(env, repair=True, grace_s=0).exit_code == 0
    assert not orphan.exists() and not tmp.exists()


# -- rows --------------------------------------------------------------------------------------


def _set_active(env: Env, name: str, value: int | None) -> None:
    with env.repo.sessions.begin() as s:
        s.execute(update(Function).where(Function.name == name).values(active_version_id=value))


def test_active_version_repaired_to_the_newest(db_env: Env) -> None:
    views = deployed(db_env)
    db_env.deployer.rollback("gcd", views["gcd1"].active_version.digest)
    _set_active(db_env, "gcd", None)
    with db_env.repo.sessions() as s:
        multi_version = s.scalar(select(Function.active_version_id).where(Function.name == "multi"))
    _set_active(db_env, "linked", multi_version)  # a version, but another function's
    generation = db_env.changes.generation

    report = check(db_env)
    bad = only(report, "active_version_invalid")
    assert {f.function for f in bad} == {"gcd", "linked"}
    assert report.exit_code == 1
    assert db_env.repo.get_function("gcd").active_version is None  # reported, not touched

    repaired = check(db_env, repair=True)
    assert all(f.repaired for f in repaired.findings) and repaired.exit_code == 0
    assert db_env.repo.active_version("gcd").digest == views["gcd2"].active_version.digest
    assert db_env.repo.active_version("linked").digest == views["linked"].active_version.digest
    assert db_env.changes.generation == generation + 1  # running workers reload their table
    assert check(db_env).findings == []


def test_function_without_versions_is_removed(db_env: Env) -> None:
    deployed(db_env)
    with db_env.repo.sessions.begin() as s:
        s.add(Function(name="hollow", active_version_id=None))
    db_env.repo.insert_invocations([record("hollow", digest_of(b"x"))])
    report = check(db_env)
    assert only(report, "function_without_versions")[0].function == "hollow"
    assert check(db_env, repair=True).exit_code == 0
    assert "hollow" not in db_env.names()
    assert db_env.repo.invocations("hollow") == []  # its records went with it
    assert check(db_env).findings == []


def test_version_of_no_function_is_removed_with_its_blob(env: Env) -> None:
    views = deployed(env)
    doomed = views["multi"].active_version
    # Damage only a hand can do: SQLite enforces the foreign key only when asked to.
    with sqlite3.connect(env.data_dir / "wasmlet.db") as conn:
        conn.execute("DELETE FROM functions WHERE name = 'multi'")
    report = check(env)
    [stray] = only(report, "version_without_function")
    assert stray.version == doomed.digest and report.exit_code == 1
    # A version of no function does not keep its module: the blob is garbage as well.
    assert sorted(report.codes("problem")) == ["orphan_blob", "version_without_function"]
    assert env.blobs.exists(doomed.module_digest)  # reported, not touched

    repaired = check(env, repair=True)
    assert all(f.repaired for f in repaired.findings) and repaired.exit_code == 0
    assert not env.blobs.exists(doomed.module_digest)
    assert not env.cache.path(doomed.module_digest).exists()
    assert check(env).findings == []
    assert env.repo.active_version("gcd").digest == views["gcd2"].active_version.digest


def test_invocation_records_that_do_not_add_up(db_env: Env) -> None:
    views = deployed(db_env)
    good = views["gcd2"].active_version.digest
    db_env.repo.insert_invocations(
        [record("gcd", good)] * 2
        + [record("ghost", good)] * 3  # a function that does not exist
        + [record("gcd", digest_of(b"not a gcd version"))]  # a version gcd never had
        + [record("multi", views["multi"].active_version.digest, status=42)]
        + [record("multi", views["multi"].active_version.digest, duration_ms=-5)]
    )
    report = check(db_env)
    by_code = {f.code: f for f in report.findings}
    assert set(by_code) == {
        "invocations_unknown_function",
        "invocations_unknown_version",
        "invocations_invalid",
    }
    assert (
        by_code["invocations_unknown_function"].function,
        by_code["invocations_unknown_function"].count,
    ) == ("ghost", 3)
    assert by_code["invocations_unknown_version"].count == 1
    assert by_code["invocations_invalid"].count == 2
    assert report.checked["invocations"] == 8

    assert check(db_env, repair=True).exit_code == 0
    after = check(db_env)
    assert after.findings == [] and after.checked["invocations"] == 2
    assert [r.version for r in db_env.repo.invocations("gcd")] == [good, good]


# -- while deploys run -------------------------------------------------------------------------


def test_repairing_while_deploying_never_takes_a_needed_blob(tmp_path: Path) -> None:
    """Deploys write the blob before the row that needs it; the doctor holds the registry
    lock, so even with no grace period it never sees (and removes) that blob in between."""
    env = make_env(tmp_path / "data")
    stop = threading.Event()
    errors: list[BaseException] = []
    deploys = [0, 0]

    def deploy_loop(worker: int) -> None:
        i = 0
        while not stop.is_set():
            tag = f'(data (i32.const 0) "w{worker}-{i}")\n  (func $gcd'.encode()
            wat = GCD_WAT.read_bytes().replace(b"(func $gcd", tag, 1)  # new bytes each time
            try:
                env.deployer.deploy(f"fn-{worker}", wat, SpecUpdate(export="gcd"))
            except BaseException as exc:
                errors.append(exc)
                return
            i += 1
            deploys[worker] = i

    threads = [threading.Thread(target=deploy_loop, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    try:
        # Counts, not a time span: at least 4 repairs, and 4 deploys by each worker meanwhile
        # (the 60 s bound only catches a stall).
        deadline = time.monotonic() + 60
        runs, first = 0, list(deploys)
        while runs < 4 or min(n - f for n, f in zip(deploys, first, strict=True)) < 4:
            assert time.monotonic() < deadline, (runs, deploys)
            assert not errors, errors
            report = check(env, repair=True)
            assert report.codes("error") == [], report.findings
            runs += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    final = check(env)
    assert final.findings == [] and final.checked["versions"] >= 4


# -- unusable input ----------------------------------------------------------------------------


def test_no_data_dir_or_no_database(tmp_path: Path) -> None:
    env = make_env(tmp_path / "data")
    settings = env.deployer.settings
    missing = examine(settings.model_copy(update={"data_dir": tmp_path / "nope"}))
    assert missing.codes("error") == ["data_dir_missing"] and missing.exit_code == 1
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    no_db = examine(settings.model_copy(update={"data_dir": empty_dir, "database_url": None}))
    assert no_db.codes("error") == ["database_unavailable"]
    assert not (empty_dir / "wasmlet.db").exists()  # the doctor does not create one
    unreachable = examine(
        settings.model_copy(update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    )
    assert unreachable.codes("error") == ["database_unavailable"]
    assert "cannot open the database" in unreachable.findings[0].message


# -- the command -------------------------------------------------------------------------------


def test_command_exit_codes_and_output(tmp_path: Path) -> None:
    import wasmlet.cli.doctor_command  # noqa: F401  (registers the command on `app`)

    env = make_env(tmp_path / "data")
    views = deployed(env)
    data_dir = str(env.data_dir)
    runner = CliRunner()

    healthy = runner.invoke(app, ["doctor", "--data-dir", data_dir])
    assert healthy.exit_code == 0, healthy.output
    assert "healthy" in healthy.output and "3 functions" in healthy.output

    orphan = env.blobs.path(env.blobs.put(b"orphan"))
    _set_active(env, "gcd", None)
    found = runner.invoke(app, ["doctor", "--data-dir", data_dir, "--grace", "0"])
    assert found.exit_code == 1
    assert "active_version_invalid" in found.output and "orphan_blob" in found.output
    assert "--repair fixes" in found.output
    assert orphan.exists()

    fixed = runner.invoke(app, ["doctor", "--data-dir", data_dir, "--grace", "0", "--repair"])
    assert fixed.exit_code == 0, fixed.output
    assert "healthy (2 repaired)" in fixed.output
    assert not orphan.exists()

    env.blobs.path(views["multi"].active_version.module_digest).unlink()
    code, report = run_doctor(env.data_dir, None, "--repair")  # the real entry point
    assert code == 1
    assert report["healthy"] is False
    [error] = report["findings"]
    assert (error["code"], error["function"], error["repaired"]) == ("missing_blob", "multi", False)
    assert error["version"] == views["multi"].active_version.digest
