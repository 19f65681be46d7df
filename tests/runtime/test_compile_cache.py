"""CompileCache: compile once, deserialize after, recompile what cannot be loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from tests.runtime.support import GCD_WAT, wasm_bytes
from wasmlet.registry.blobs import digest_of
from wasmlet.runtime.compile_cache import CompileCache
from wasmlet.wasm.fastcall import fast_func

WASM = wasm_bytes(GCD_WAT)
DIGEST = digest_of(WASM)


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


class Source:
    """The module bytes, counting how often the cache asked for them."""

    def __init__(self, wasm: bytes = WASM) -> None:
        self.wasm = wasm
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.wasm


def works(engine: wasmtime.Engine, module: wasmtime.Module) -> bool:
    store = wasmtime.Store(engine)
    inst = wasmtime.Instance(store, module, [])
    return fast_func(store, inst.exports(store)["gcd"])(1071, 462) == [21]


def test_miss_compiles_and_writes_an_artifact(engine, tmp_path: Path) -> None:
    cache = CompileCache(tmp_path, engine, "fp1")
    source = Source()
    module = cache.load(DIGEST, source)
    assert works(engine, module)
    assert (cache.hits, cache.misses, source.calls) == (0, 1, 1)
    path = cache.path(DIGEST)
    assert path == tmp_path / "fp1" / f"{DIGEST.removeprefix('sha256:')}.cwasm"
    assert path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_hit_deserializes_without_the_bytes(engine, tmp_path: Path) -> None:
    CompileCache(tmp_path, engine, "fp").load(DIGEST, Source())
    again = CompileCache(tmp_path, engine, "fp")  # as a restarted process would
    source = Source()
    module = again.load(DIGEST, source)
    assert (again.hits, again.misses, source.calls) == (1, 0, 0)
    assert works(engine, module)
    again.load(DIGEST, source)
    assert again.hits == 2


def test_fingerprints_are_separate_directories(engine, tmp_path: Path) -> None:
    CompileCache(tmp_path, engine, "one").load(DIGEST, Source())
    other = CompileCache(tmp_path, engine, "two")
    source = Source()
    other.load(DIGEST, source)
    assert (other.misses, source.calls) == (1, 1)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_artifact_is_recompiled_and_replaced(engine, tmp_path: Path, damage) -> None:
    cache = CompileCache(tmp_path, engine, "fp")
    cache.load(DIGEST, Source())
    path = cache.path(DIGEST)
    good = path.read_bytes()
    path.write_bytes(
        {"garbage": b"not an artifact" * 10, "truncated": good[: len(good) // 2], "empty": b""}[
            damage
        ]
    )
    fresh = CompileCache(tmp_path, engine, "fp")
    source = Source()
    module = fresh.load(DIGEST, source)
    assert (fresh.hits, fresh.misses, source.calls) == (0, 1, 1)
    assert works(engine, module)
    # The artifact was rewritten: the next process gets a hit.
    assert path.stat().st_size == len(good)
    later = CompileCache(tmp_path, engine, "fp")
    assert works(engine, later.load(DIGEST, Source()))
    assert later.hits == 1


def test_artifact_from_an_incompatible_engine_is_recompiled(engine, tmp_path: Path) -> None:
    config = wasmtime.Config()
    config.consume_fuel = True
    foreign = wasmtime.Module(wasmtime.Engine(config), WASM)
    cache = CompileCache(tmp_path, engine, "fp")
    cache.path(DIGEST).write_bytes(foreign.serialize())
    source = Source()
    assert works(engine, cache.load(DIGEST, source))
    assert (cache.hits, cache.misses, source.calls) == (0, 1, 1)


def test_invalid_wasm_on_a_miss_raises_and_stores_nothing(engine, tmp_path: Path) -> None:
    cache = CompileCache(tmp_path, engine, "fp")
    bad = b"\0asm\x01\0\0\0\xff\xff"
    with pytest.raises(wasmtime.WasmtimeError):
        cache.load(digest_of(bad), Source(bad))
    assert list(cache.dir.iterdir()) == []


def test_store_then_discard(engine, tmp_path: Path) -> None:
    cache = CompileCache(tmp_path, engine, "fp")
    cache.store(DIGEST, wasmtime.Module(engine, WASM))
    assert cache.path(DIGEST).exists()
    cache.discard(DIGEST)
    assert not cache.path(DIGEST).exists()
    cache.discard(DIGEST)  # discarding twice is fine
    source = Source()
    cache.load(DIGEST, source)
    assert (cache.misses, source.calls) == (1, 1)
