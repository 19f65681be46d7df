"""host/preopens.py: preopen folders checked and opened by descriptor, never through a link."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from tests.runtime.support import FIXTURES, make_pool, run
from wasmlet.errors import GuestError
from wasmlet.host.preopens import check_paths, opened

RACE = FIXTURES / "extism_preopen_race.wasm"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    (tmp_path / "admin.key").write_text("wl_secret\n")
    return tmp_path / "files" / "fn"


# -- the spec check -------------------------------------------------------------------------


def test_paths_are_normalised() -> None:
    assert check_paths({"./a//b/": "/x/", "ro:c\\d": "//y/./z"}) == {
        "a/b": "/x",
        "ro:c/d": "/y/z",
    }
    assert check_paths({"data": "/"}) == {"data": "/"}


@pytest.mark.parametrize(
    ("paths", "says"),
    [
        ({"a": "/a", "a/b": "/b"}, "overlap"),
        ({"a/b": "/b", "a": "/a"}, "overlap"),
        ({"a": "/a", "ro:a/": "/b"}, "overlap"),
        ({".": "/a"}, "itself"),
        ({"ro:./": "/a"}, "itself"),
        ({"a/../b": "/a"}, "relative"),
        ({"/etc": "/a"}, "relative"),
        ({"\\etc": "/a"}, "relative"),
        ({"a\x00": "/a"}, "relative"),
        ({"a": "x"}, "absolute"),
        ({"a": "/x/../y"}, "absolute"),
        ({"a": "/x", "b": "/x/."}, "both map"),
    ],
)
def test_refused_paths(paths: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_paths(paths)


# -- opening ---------------------------------------------------------------------------------


def test_opens_by_descriptor_and_makes_missing_folders(files_dir: Path) -> None:
    before = _fds()
    with opened(files_dir, {"a/b": "/b", "ro:c": "/c"}) as items:
        assert [(i.guest, i.read_only) for i in items] == [("/b", False), ("/c", True)]
        assert all(i.path.startswith("/proc/self/fd/") for i in items)
        assert os.path.samefile(items[0].path, files_dir / "a" / "b")
    assert (files_dir / "c").is_dir()
    assert _fds() == before


@pytest.mark.parametrize("where", ["a", "a/b", "files", "fn"])
def test_a_link_on_the_way_is_refused(files_dir: Path, where: str) -> None:
    """Wherever the link is (the function folder, `files` itself, or inside), nothing of
    the data dir is opened and nothing is made there."""
    data = files_dir.parent.parent
    at = {"files": data / "files", "fn": files_dir}.get(where, files_dir / where)
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(os.path.relpath(data, at.parent))
    before = set(os.listdir(data))
    fds = _fds()
    with pytest.raises(GuestError, match="link"), opened(files_dir, {"a/b/c": "/c"}):
        pass
    assert set(os.listdir(data)) == before
    assert _fds() == fds


def test_a_file_on_the_way_is_refused(files_dir: Path) -> None:
    files_dir.mkdir(parents=True)
    (files_dir / "a").write_text("not a folder")
    with pytest.raises(GuestError, match="not a folder"), opened(files_dir, {"a/b": "/b"}):
        pass


def test_nested_paths_stored_earlier_are_refused(files_dir: Path) -> None:
    with pytest.raises(GuestError, match="overlap"), opened(files_dir, {"a": "/a", "a/b": "/b"}):
        pass
    assert not files_dir.exists()  # refused before anything is opened or made


def test_wasmtime_opens_the_folder_when_preopened(files_dir: Path) -> None:
    """What `opened` relies on: wasmtime holds its own handle from `preopen_dir` on, so
    closing ours afterwards (and any later change to the path) cannot redirect it."""
    with opened(files_dir, {"a": "/a"}) as items:
        config = wasmtime.WasiConfig()
        fds = _fds()
        config.preopen_dir(items[0].path, "/a")
        assert _fds() == fds + 1
    del config


# -- through the Extism ABI -------------------------------------------------------------------


def _pool(rt, files_dir: Path, paths: dict[str, str]) -> Any:
    pool = make_pool(
        rt, RACE, name=f"race-{uuid.uuid4().hex[:8]}", abi="extism", export="read", wasi=True,
        reuse=False, allowed_paths=paths,
    )  # fmt: skip
    pool.files_dir = files_dir
    return pool


def test_plugin_reads_its_preopen_and_leaks_no_descriptor(rt, files_dir: Path) -> None:
    pool = _pool(rt, files_dir, {"data/sub": "/sub"})
    (files_dir / "data" / "sub").mkdir(parents=True)
    (files_dir / "data" / "sub" / "mine.txt").write_text("x")
    run(pool, export="read")  # warm: wasmtime's own descriptors, caches
    before = _fds()
    for _ in range(20):
        assert b"mine.txt" in run(pool, export="read").body
    assert _fds() == before


def test_plugin_through_a_link_fails_cleanly_without_leaking(rt, files_dir: Path) -> None:
    pool = _pool(rt, files_dir, {"data/sub": "/sub"})
    (files_dir / "data").mkdir(parents=True)
    (files_dir / "data" / "sub").symlink_to("../../..")
    before = _fds()
    for _ in range(20):
        with pytest.raises(GuestError, match="link"):
            run(pool, export="read")
    assert _fds() == before


def test_plugin_with_stored_nested_paths_is_refused(rt, files_dir: Path) -> None:
    pool = _pool(rt, files_dir, {"data": "/data", "data/sub": "/sub"})
    with pytest.raises(GuestError, match="overlap"):
        run(pool, export="read")
