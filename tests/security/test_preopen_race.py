"""Break 1 of issue 10: a guest swaps a preopen's folder for a link to the data dir.

A tenant's Extism plugin (tests/fixtures/src/extism_preopen_race.c) loops
`symlink("../../..", "/data/sub")` / `unlink` in one call while concurrent calls read what
the host preopened as /sub. Before the fix the host resolved and checked the path, then
wasmtime walked it again, following the link swapped in meanwhile: with several compute
slots a few percent of the reads listed the data dir and returned admin.key.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.support import assert_error, deploy
from tests.helpers import ServerProcess
from tests.security.support import client_with, mint_key

FIXTURE = Path(__file__).parents[1] / "fixtures" / "extism_preopen_race.wasm"
NAMESPACE = "prace"
# Enough reads that the old code leaked every run (it leaked in about 1-3% of them).
READS = 600
SWAP_ROUNDS = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("preopen") / "data"
    with ServerProcess(data, env={"WASMLET_COMPUTE_SLOTS": "4"}) as proc:
        yield proc


@pytest.fixture(scope="module")
def tenant(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as operator:
        token = mint_key(operator, NAMESPACE)
    with client_with(server, token) as client:
        client.timeout = httpx.Timeout(120)
        yield client


def _deploy(client: httpx.Client, name: str, paths: dict[str, str]) -> httpx.Response:
    return deploy(
        client, name, FIXTURE, abi="extism", wasi="true", export="read", reuse="false",
        timeout_ms="50000", spec={"allowed_paths": paths},
    )  # fmt: skip


def _patch(client: httpx.Client, name: str, paths: dict[str, str]) -> httpx.Response:
    return client.patch(f"/api/v1/functions/{name}", json={"allowed_paths": paths})


def _call(client: httpx.Client, name: str, export: str, body: bytes = b"") -> httpx.Response:
    return client.post(f"/api/v1/functions/{name}/invoke/{export}", content=body)


def _folder(server: ServerProcess, name: str) -> Path:
    return server.data_dir / "files" / f"{NAMESPACE}~{name}"


def _leaks(server: ServerProcess, resp: httpx.Response) -> bool:
    """Did this answer show anything of the data dir (admin.key, the database)?"""
    text = resp.text
    return server.admin_key() in text or "admin.key" in text or "wasmlet.db" in text


class Readers:
    """Concurrent calls of `read`, and what they answered."""

    def __init__(self, server: ServerProcess, client: httpx.Client, name: str) -> None:
        self.server, self.client, self.name = server, client, name
        self.answers: list[httpx.Response] = []
        self.lock = threading.Lock()

    def run(self, done: threading.Event, reads: int = 0, threads: int = 6) -> None:
        """Read until `done` is set and `reads` more answers came."""
        goal = len(self.answers) + reads

        def loop() -> None:
            while not done.is_set() or len(self.answers) < goal:
                resp = _call(self.client, self.name, "read")
                with self.lock:
                    self.answers.append(resp)

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def tally(self) -> str:
        ok = sum(r.status_code == 200 for r in self.answers)
        leaked = len(self.leaked())
        return f"{len(self.answers)} reads: {ok} answered, {leaked} leaked the data dir"

    def leaked(self) -> list[str]:
        return [r.text[:300] for r in self.answers if _leaks(self.server, r)]


def _wait_for_link(path: Path, swapper: threading.Thread) -> None:
    """Until the guest's swap loop is seen running (a link at `path`), or it has ended."""
    while swapper.is_alive() and not path.is_symlink():
        time.sleep(0.001)


def test_nested_preopens_deploy_refused(tenant: httpx.Client) -> None:
    r = _deploy(tenant, "nested", {"data": "/data", "data/sub": "/sub"})
    assert_error(r, 422, "invalid_request", "overlap")
    r = deploy(
        tenant, "nested-form", FIXTURE, abi="extism", wasi="true", export="read",
        allowed_path=["data:/data", "data/sub:/sub"],
    )  # fmt: skip
    assert_error(r, 422, "invalid_request", "overlap")
    r = deploy(
        tenant, "twice-form", FIXTURE, abi="extism", wasi="true", export="read",
        allowed_path=["data:/a", "data:/b"],
    )  # fmt: skip
    assert_error(r, 422, "invalid_request", "twice")


@pytest.mark.parametrize(
    "paths",
    [
        {"data/": "/a", "./data/sub": "/b"},
        {"ro:data": "/a", "data//sub/": "/b"},
        {"data": "/a", "ro:data": "/b"},
        {"a/./b": "/a", "a/b": "/b"},
        {"a\\b": "/a", "a/b/c": "/b"},
        {".": "/all"},
        {"./": "/all"},
        {"ro:.//": "/all"},
        {"a": "/x", "b": "/x/"},
        {"a": "/x", "b": "/./x"},
    ],
)
def test_overlapping_spellings_refused_at_deploy_and_patch(
    tenant: httpx.Client, paths: dict[str, str]
) -> None:
    assert_error(_deploy(tenant, "spelled", paths), 422, "invalid_request")
    assert _deploy(tenant, "spelled-ok", {"data": "/data"}).status_code in (200, 201)
    assert_error(_patch(tenant, "spelled-ok", paths), 422, "invalid_request")


def test_swap_under_a_sibling_version_cannot_escape(
    server: ServerProcess, tenant: httpx.Client
) -> None:
    """No nesting in any one version: v1 preopens `data`, v2 `data/sub`. A swap loop still
    running on v1 while calls of v2 open `data/sub` must not redirect them."""
    name = "sibling"
    assert _deploy(tenant, name, {"data": "/data"}).status_code == 201
    link = _folder(server, name) / "data" / "sub"
    readers = Readers(server, tenant, name)
    swaps: list[httpx.Response] = []
    while len(readers.answers) < READS:
        assert _patch(tenant, name, {"data": "/data"}).status_code == 200
        done = threading.Event()

        def swap(done: threading.Event = done) -> None:
            swaps.append(_call(tenant, name, "swap", str(SWAP_ROUNDS).encode()))
            done.set()

        swapper = threading.Thread(target=swap)
        swapper.start()
        _wait_for_link(link, swapper)
        assert _patch(tenant, name, {"data/sub": "/sub"}).status_code == 200
        readers.run(done)
        swapper.join()
    assert all(s.status_code == 200 for s in swaps), [s.text for s in swaps]
    print(readers.tally())
    assert not readers.leaked(), f"{readers.tally()}: {readers.leaked()[:2]}"
    for resp in readers.answers:  # a clean listing of the real folder, or a clear refusal
        if resp.status_code != 200:
            assert_error(resp, 500, "guest_error")


def _store_nested_version(server: ServerProcess, name: str) -> None:
    """Make a version with nested preopens active, as a server before the fix stored it."""
    from wasmlet.registry.changes import ChangeSignal
    from wasmlet.registry.db import make_engine, make_sessionmaker
    from wasmlet.registry.locks import registry_lock
    from wasmlet.registry.repository import Repository

    engine = make_engine(f"sqlite:///{server.data_dir / 'wasmlet.db'}")
    try:
        repo = Repository(make_sessionmaker(engine))
        active = repo.active_version(name)
        spec: dict[str, Any] = json.loads(json.dumps(active.spec))
        spec["allowed_paths"] = {"data": "/data", "data/sub": "/sub"}
        with registry_lock(server.data_dir):
            repo.add_version(
                name, module_digest=active.module_digest, size=active.size, abi=active.abi,
                spec=spec, exports=active.exports,
            )  # fmt: skip
        ChangeSignal(server.data_dir).bump()
    finally:
        engine.dispose()


def test_stored_nested_version_cannot_escape(server: ServerProcess, tenant: httpx.Client) -> None:
    """A nested version stored before the fix is refused at instantiate, even while its
    own swap loop and one run by someone else on the host hammer `data/sub`."""
    name = "stored"
    assert _deploy(tenant, name, {"data": "/data"}).status_code == 201
    _store_nested_version(server, f"{NAMESPACE}~{name}")
    shown = tenant.get(f"/api/v1/functions/{name}").json()
    assert shown["active_version"]["spec"]["allowed_paths"] == {"data": "/data", "data/sub": "/sub"}
    link = _folder(server, name) / "data" / "sub"
    done = threading.Event()
    swaps: list[httpx.Response] = []

    def guest_swap() -> None:
        while not done.is_set():
            swaps.append(_call(tenant, name, "swap", str(SWAP_ROUNDS).encode()))

    def host_swap() -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        while not done.is_set():
            try:
                os.symlink("../../..", link)
                os.unlink(link)
            except OSError:
                with contextlib.suppress(OSError):
                    os.rmdir(link)

    swappers = [threading.Thread(target=guest_swap), threading.Thread(target=host_swap)]
    for t in swappers:
        t.start()
    readers = Readers(server, tenant, name)
    stop = threading.Event()
    stop.set()  # the swappers run until the readers are done
    try:
        readers.run(stop, READS)
    finally:
        done.set()
        for t in swappers:
            t.join()
    print(readers.tally())
    assert not readers.leaked(), f"{readers.tally()}: {readers.leaked()[:2]}"

    for resp in readers.answers + swaps:
        assert_error(resp, 500, "guest_error", "overlap")


def test_link_left_on_disk_is_not_followed(server: ServerProcess, tenant: httpx.Client) -> None:
    """A guest plants `data/sub -> ../../..`; a later version preopening `data/sub` (or a
    folder below it) fails cleanly: nothing of the data dir is opened or created."""
    name = "planted"
    assert _deploy(tenant, name, {"data": "/data"}).status_code == 201
    planted = _call(tenant, name, "plant")
    assert planted.status_code == 200, planted.text
    link = _folder(server, name) / "data" / "sub"
    assert link.is_symlink() and os.readlink(link) == "../../.."
    before = set(os.listdir(server.data_dir))
    for paths in ({"data/sub": "/sub"}, {"data/sub/deeper": "/sub"}):
        assert _patch(tenant, name, paths).status_code == 200
        resp = _call(tenant, name, "read")
        assert not _leaks(server, resp), resp.text
        assert_error(resp, 500, "guest_error", "link")
    assert set(os.listdir(server.data_dir)) == before  # no `deeper` made in the data dir
    assert link.is_symlink()


def test_delete_removes_the_folder_without_following_links(
    server: ServerProcess, tenant: httpx.Client
) -> None:
    """Deleting a function removes its folder (a function deployed later under the name
    starts empty) without following the link a guest left in it out to the data dir."""
    name = "removed"
    assert _deploy(tenant, name, {"data": "/data"}).status_code == 201
    assert _call(tenant, name, "plant").status_code == 200
    folder = _folder(server, name)
    assert (folder / "data" / "sub").is_symlink()
    before = sorted(os.listdir(server.data_dir))
    assert tenant.delete(f"/api/v1/functions/{name}").status_code in (200, 204)
    assert not folder.exists()
    assert sorted(os.listdir(server.data_dir)) == before
    assert (server.data_dir / "admin.key").is_file()
