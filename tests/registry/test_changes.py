"""ChangeSignal: every process sharing a data dir sees each bump once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from wasmlet.registry.changes import ChangeSignal


def test_first_call_reports_a_change(tmp_path: Path) -> None:
    signal = ChangeSignal(tmp_path)
    assert signal.changed()
    assert not signal.changed()
    assert signal.generation == 0


def test_bump_seen_once_by_every_instance(tmp_path: Path) -> None:
    a, b = ChangeSignal(tmp_path), ChangeSignal(tmp_path)
    assert a.changed() and b.changed()
    assert not a.changed() and not b.changed()
    a.bump()
    assert b.generation == 1
    assert b.changed()
    assert not b.changed()
    assert a.changed()  # the bumping instance also sees its own change
    assert not a.changed()
    b.bump()
    b.bump()
    assert a.changed()  # two bumps between looks: one change
    assert not a.changed()
    assert a.generation == 3


def test_generation_persists_in_the_data_dir(tmp_path: Path) -> None:
    first = ChangeSignal(tmp_path)
    first.bump()
    first.bump()
    later = ChangeSignal(tmp_path)
    assert later.generation == 2
    assert (tmp_path / "registry.gen").stat().st_size == 8


def _bump_many(path: str, n: int) -> None:
    signal = ChangeSignal(Path(path))
    for _ in range(n):
        signal.bump()


def test_bumps_from_other_processes_are_counted(tmp_path: Path) -> None:
    watcher = ChangeSignal(tmp_path)
    watcher.changed()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump_many, args=(str(tmp_path), 200)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert watcher.changed()
    assert watcher.generation == 600  # the file lock makes each increment atomic
