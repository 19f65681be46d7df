"""Deployer: checks before storing, versions on patch, rollback, garbage collection."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime

from tests.runtime.support import ECHO_WASM, FIXTURES, GCD_WAT, HELLO_WASM, MULTI_WAT, wasm_bytes
from wasmlet.config import Settings
from wasmlet.errors import InvalidRequest, NotFound, PayloadTooLarge
from wasmlet.registry.blobs import BlobStore, digest_of
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.db import make_engine, make_sessionmaker, upgrade
from wasmlet.registry.deploy import Deployer
from wasmlet.registry.repository import Repository
from wasmlet.runtime.compile_cache import CompileCache
from wasmlet.runtime.engine import build_engine, engine_fingerprint
from wasmlet.spec import SpecUpdate

GCD = GCD_WAT.read_bytes()


@dataclass
class Env:
    deployer: Deployer
    repo: Repository
    blobs: BlobStore
    cache: CompileCache
    changes: ChangeSignal
    data_dir: Path

    def blob_files(self) -> list[Path]:
        return [p for p in (self.data_dir / "blobs").rglob("*") if p.is_file()]

    def artifacts(self) -> list[Path]:
        return list(self.cache.dir.glob("*.cwasm"))

    def names(self) -> set[str]:
        return {f.name for f in self.repo.list_functions()}


def make_env(data_dir: Path, db_url: str | None = None, **settings) -> Env:
    settings.setdefault("default_timeout_ms", 5000)
    settings.setdefault("max_instances", 0)  # no pooling allocator: see runtime/support.py
    cfg = Settings(data_dir=data_dir, database_url=db_url, **settings)
    engine = build_engine(cfg)
    cache = CompileCache(data_dir / "cache", engine, engine_fingerprint(cfg))
    blobs = BlobStore(data_dir / "blobs")
    sql = make_engine(cfg.db_url)
    upgrade(sql)
    repo = Repository(make_sessionmaker(sql))
    changes = ChangeSignal(data_dir)
    return Env(Deployer(cfg, engine, cache, blobs, repo, changes), repo, blobs, cache, changes,
               data_dir)  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield make_env(tmp_path)


def unique(prefix: str = "fn") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_too_many_functions_are_refused_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function count is checked on the raw sections, before wasmtime compiles (which
    costs ~65 us per function): an over-limit module never reaches the compiler. (This
    replaces timing the refusal in tests/api/test_bad_input.py.)"""
    env = make_env(tmp_path, max_module_functions=10)
    compiled: list[bytes] = []
    real_module = wasmtime.Module

    def spy(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
        compiled.append(bytes(wasm))
        return real_module(engine, wasm)

    monkeypatch.setattr(wasmtime, "Module", spy)
    for n in (11, 1000):
        with pytest.raises(InvalidRequest, match=f"{n} functions.*max_module_functions"):
            env.deployer.parse(("(module " + "(func)" * n + ")").encode())
    assert compiled == []
    env.deployer.parse(("(module " + "(func)" * 10 + ")").encode())  # the spy does see
    assert len(compiled) == 1  # a module within the limit compiled


def rejected(env: Env, data: bytes, update: SpecUpdate | None = None, name: str = "fn"):
    """Deploy must fail with InvalidRequest and leave nothing behind."""
    generation = env.changes.generation
    with pytest.raises(InvalidRequest) as exc:
        env.deployer.deploy(name, data, update or SpecUpdate())
    assert env.blob_files() == []
    assert env.artifacts() == []
    assert env.names() == set()
    assert env.changes.generation == generation
    return exc.value


# -- accepted -------------------------------------------------------------------------------


def test_wat_is_converted_and_stored(env: Env) -> None:
    view, created = env.deployer.deploy("gcd", GCD, SpecUpdate())
    assert created
    active = view.active_version
    wasm = wasm_bytes(GCD_WAT)
    assert active.module_digest == digest_of(wasm)
    assert env.blobs.get(active.module_digest) == wasm  # the binary, not the text
    assert active.size == len(wasm)
    assert env.cache.path(active.module_digest).exists()
    assert active.spec["abi"] == "core"
    assert active.spec["export"] == "gcd"
    assert active.spec["reuse"] is True
    assert active.spec["timeout_ms"] == 5000
    assert active.exports["gcd"]["names"] == ["a", "b"]
    assert env.changes.generation == 1


def test_same_bytes_twice_is_idempotent(env: Env) -> None:
    first, created = env.deployer.deploy("gcd", GCD, SpecUpdate())
    again, created_again = env.deployer.deploy("gcd", wasm_bytes(GCD_WAT), SpecUpdate())
    assert created and not created_again
    assert again.active_version.digest == first.active_version.digest
    assert again.version_count == 1
    assert len(env.blob_files()) == 1


def test_wasi_command_gets_wasi_cgi_defaults(env: Env) -> None:
    view, _ = env.deployer.deploy("hello", HELLO_WASM.read_bytes(), SpecUpdate())
    spec = view.active_version.spec
    assert (spec["abi"], spec["export"], spec["reuse"]) == ("wasi-cgi", "_start", False)
    assert view.active_version.wasi is True


def test_spec_values_are_stored(env: Env) -> None:
    update = SpecUpdate(timeout_ms=250, memory_mb=8, fuel=10_000, env={"A": "1"}, pool_size=2)
    spec = env.deployer.deploy("gcd", GCD, update)[0].active_version.spec
    assert spec["timeout_ms"] == 250
    assert spec["memory_mb"] == 8
    assert spec["fuel"] == 10_000
    assert spec["env"] == {"A": "1"}
    assert spec["pool_size"] == 2


# -- rejected, nothing stored ---------------------------------------------------------------


def test_bad_magic(env: Env) -> None:
    err = rejected(env, b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    assert "bad magic" in err.message


def test_wat_syntax_error(env: Env) -> None:
    err = rejected(env, b"(module (fnuc $oops))")
    assert err.message.startswith("WAT syntax error")


def test_invalid_module(env: Env) -> None:
    err = rejected(env, b"\0asm\x01\0\0\0\x01\xff\xff")
    assert err.message.startswith("invalid wasm module")
    err = rejected(env, b'(module (func (export "f") (result i32)))')  # parses, fails validation
    assert err.message.startswith("invalid wasm module")


def test_component_rejected(env: Env) -> None:
    err = rejected(env, b"\0asm\x0d\0\x01\0")
    assert "component" in err.message


def test_empty_module(env: Env) -> None:
    assert "empty" in rejected(env, b"").message


def test_unknown_import_named(env: Env) -> None:
    err = rejected(env, (FIXTURES / "needs_import.wat").read_bytes(), SpecUpdate(export="run"))
    assert "env.secret_host_fn" in err.message


def test_missing_export(env: Env) -> None:
    err = rejected(env, GCD, SpecUpdate(export="nope"))
    assert "'nope'" in err.message


def test_export_must_be_chosen_when_several(env: Env) -> None:
    err = rejected(env, MULTI_WAT.read_bytes())
    assert "choose the export" in err.message
    assert "divmod" in err.message


def test_reuse_with_wasi_cgi_rejected(env: Env) -> None:
    err = rejected(env, ECHO_WASM.read_bytes(), SpecUpdate(reuse=True))
    assert "fresh instance" in err.message


def test_unknown_abi_rejected(env: Env) -> None:
    assert "unknown abi" in rejected(env, GCD, SpecUpdate(abi="nope")).message


def test_limits_over_the_maximum_rejected(tmp_path: Path) -> None:
    env = make_env(tmp_path, max_timeout_ms=1000, max_memory_mb=32)
    assert "timeout_ms" in rejected(env, GCD, SpecUpdate(timeout_ms=1001)).message
    assert "memory_mb" in rejected(env, GCD, SpecUpdate(memory_mb=33)).message


@pytest.mark.parametrize("name", ["Upper", "../etc", "a/b", "", "x" * 64, "a..b"])
def test_invalid_name_rejected(env: Env, name: str) -> None:
    assert "invalid function name" in rejected(env, GCD, name=name).message


def test_size_limit(tmp_path: Path) -> None:
    env = make_env(tmp_path, max_module_bytes=100)
    with pytest.raises(PayloadTooLarge, match="limit is 100") as exc:
        env.deployer.deploy("gcd", GCD, SpecUpdate())
    assert exc.value.status == 413
    assert env.blob_files() == []
    assert env.names() == set()


# -- patch, rollback, delete ----------------------------------------------------------------


def test_patch_creates_a_version_with_the_same_module(env: Env) -> None:
    first = env.deployer.deploy("gcd", GCD, SpecUpdate())[0].active_version
    generation = env.changes.generation
    patched = env.deployer.patch("gcd", SpecUpdate(env={"A": "b"}))
    active = patched.active_version
    assert patched.version_count == 2
    assert active.digest != first.digest
    assert active.module_digest == first.module_digest
    assert active.spec["env"] == {"A": "b"}
    assert active.seq == 2
    assert env.changes.generation == generation + 1
    assert len(env.blob_files()) == 1


def test_patch_keeps_fields_it_does_not_set(env: Env) -> None:
    update = SpecUpdate(timeout_ms=1234, memory_mb=8, pool_size=3, fuel=99_999)
    env.deployer.deploy("gcd", GCD, update)
    spec = env.deployer.patch("gcd", SpecUpdate(env={"A": "b"})).active_version.spec
    assert (spec["timeout_ms"], spec["memory_mb"], spec["pool_size"], spec["fuel"]) == (
        1234,
        8,
        3,
        99_999,
    )


def test_patch_keeps_grants_it_does_not_set(env: Env) -> None:
    env.deployer.deploy("gcd", GCD, SpecUpdate(env={"A": "1"}, fuel=5000))
    spec = env.deployer.patch("gcd", SpecUpdate(config={"k": "v"})).active_version.spec
    assert spec["env"] == {"A": "1"}
    assert spec["config"] == {"k": "v"}
    assert spec["fuel"] == 5000


def test_patch_validates(env: Env) -> None:
    env.deployer.deploy("gcd", GCD, SpecUpdate())
    with pytest.raises(InvalidRequest, match="'nope'"):
        env.deployer.patch("gcd", SpecUpdate(export="nope"))
    assert env.repo.get_function("gcd").version_count == 1
    with pytest.raises(NotFound):
        env.deployer.patch("ghost", SpecUpdate(timeout_ms=5))


def test_rollback(env: Env) -> None:
    v1 = env.deployer.deploy("gcd", GCD, SpecUpdate())[0].active_version
    v2 = env.deployer.patch("gcd", SpecUpdate(timeout_ms=77)).active_version
    generation = env.changes.generation
    view = env.deployer.rollback("gcd", v1.digest[:15])
    assert view.active_version.digest == v1.digest
    assert env.changes.generation == generation + 1
    assert env.repo.active_version("gcd").digest == v1.digest
    assert env.deployer.rollback("gcd", v2.digest).active_version.digest == v2.digest
    with pytest.raises(NotFound):
        env.deployer.rollback("gcd", "0" * 64)


def test_delete_collects_a_blob_only_when_unreferenced(env: Env) -> None:
    a = env.deployer.deploy("first", GCD, SpecUpdate())[0].active_version
    env.deployer.deploy("second", GCD, SpecUpdate(timeout_ms=9))
    env.deployer.deploy("third", MULTI_WAT.read_bytes(), SpecUpdate(export="noop"))
    digest = a.module_digest
    assert len(env.blob_files()) == 2
    assert env.deployer.delete("first") == 0  # still used by "second"
    assert env.blobs.exists(digest)
    assert env.cache.path(digest).exists()
    generation = env.changes.generation
    assert env.deployer.delete("second") == 1
    assert env.changes.generation == generation + 1
    assert not env.blobs.exists(digest)
    assert not env.cache.path(digest).exists()
    assert len(env.blob_files()) == 1  # "third" keeps its module
    assert env.names() == {"third"}
    with pytest.raises(NotFound):
        env.deployer.delete("second")


def test_delete_racing_a_deploy_of_the_same_module(env: Env) -> None:
    env.deployer.deploy("old", GCD, SpecUpdate())
    snapshot = env.repo.referenced_modules
    racer: list[threading.Thread] = []

    def referenced_then_concurrent_deploy() -> set[str]:
        referenced = snapshot()
        # Another request deploys the same bytes under a new name right now: it must wait
        # for the collection to finish rather than rely on a blob about to be deleted.
        thread = threading.Thread(
            target=env.deployer.deploy, args=("new", GCD, SpecUpdate(timeout_ms=10))
        )
        thread.start()
        racer.append(thread)
        thread.join(0.3)
        assert thread.is_alive(), "the deploy did not wait for the garbage collection"
        return referenced

    env.repo.referenced_modules = referenced_then_concurrent_deploy  # type: ignore[method-assign]
    env.deployer.delete("old")
    racer[0].join(10)
    env.repo.referenced_modules = snapshot  # type: ignore[method-assign]
    active = env.repo.active_version("new")
    assert env.blobs.exists(active.module_digest), "the live version's module was deleted"


def test_garbage_collection_spares_other_candidates(env: Env) -> None:
    env.deployer.deploy("gcd", GCD, SpecUpdate())
    stray = env.blobs.put(b"uploaded, not yet deployed")
    assert env.deployer.collect_garbage(set()) == 0
    assert env.blobs.exists(stray)
    assert env.deployer.collect_garbage() == 1  # a full sweep removes it
    assert not env.blobs.exists(stray)
    assert len(env.blob_files()) == 1


def test_lifecycle_on_both_databases(tmp_path: Path, db_url: str) -> None:
    env = make_env(tmp_path, db_url if db_url.startswith("postgresql") else None)
    name = unique()
    # Bytes of its own: the PostgreSQL database is shared by the session, and a module
    # another test still references is rightly not collected.
    module = GCD.replace(b"(module", f"(module ${name}".encode(), 1)  # named: other bytes
    v1 = env.deployer.deploy(name, module, SpecUpdate())[0].active_version
    env.deployer.patch(name, SpecUpdate(timeout_ms=42))
    assert env.deployer.rollback(name, v1.digest).active_version.digest == v1.digest
    assert env.deployer.delete(name) == 1
    assert env.blob_files() == []
    with pytest.raises(NotFound):
        env.repo.get_function(name)


def test_memory_larger_than_memory_mb_is_refused(env: Env) -> None:
    wat = b'(module (memory 32) (func (export "f") (result i32) (i32.const 1)))'  # 2 MiB
    message = rejected(env, wat, SpecUpdate(abi="core", memory_mb=1)).message
    assert "starts at 2 MiB" in message and "memory_mb (1)" in message
    view, _ = env.deployer.deploy("roomy", wat, SpecUpdate(abi="core", memory_mb=2))
    assert view.active_version is not None
