"""kill -9 the server (a) in the middle of a deploy, (b) with 100 invocations in flight,
(c) during rollbacks; after a restart nothing half-done is visible, every version that was
deployed serves, invocation records add up, and `wasmlet doctor` agrees (or repairs garbage
and then agrees). Against SQLite and PostgreSQL, each test with a database of its own."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import wasmtime

from tests.api.support import GCD_WAT, deployed, function_names, invoke, result_of
from tests.crash import findings, fresh_postgres, run_doctor
from tests.helpers import ServerProcess
from tests.runtime.support import clean_env
from wasmlet.config import Settings
from wasmlet.registry.doctor import examine
from wasmlet.registry.models import InvocationRecord

pytestmark = pytest.mark.integration

SPIN = b"""(module
  (func (export "spin") (param $n i32) (result i32)
    (local $i i32)
    (loop $again
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $i)))"""
SLOW_SPINS = 150_000_000  # ~0.3 s of guest time per call on the test machine


def constant(value: int) -> bytes:
    return f'(module (func (export "which") (result i32) (i32.const {value})))'.encode()


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch, tmp_path)  # the in-process doctor reads settings too


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None  # the default: wasmlet.db in the data dir
    else:
        with fresh_postgres() as url:
            yield url


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "data", database_url=database_url) as proc:
        yield proc


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def doctor_now(server: ServerProcess) -> dict[str, Any]:
    """The doctor in-process, no grace period: what a crash left, as findings by severity."""
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    report = examine(settings, grace_s=0)
    return {
        severity: sorted(f.code for f in report.findings if f.severity == severity)
        for severity in ("error", "problem", "note")
    }


def assert_doctor_clean(server: ServerProcess) -> None:
    code, report = run_doctor(server.data_dir, server.database_url, "--grace", "0")
    assert (code, findings(report)) == (0, []), report


def versions_of(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/functions/{name}/versions")
    assert resp.status_code == 200, resp.text
    return resp.json()["versions"]


def active_digest(client: httpx.Client, name: str) -> str:
    resp = client.get(f"/api/v1/functions/{name}")
    assert resp.status_code == 200, resp.text
    return resp.json()["active_version"]["digest"]


def rollback(client: httpx.Client, name: str, digest: str) -> None:
    resp = client.post(f"/api/v1/functions/{name}/rollback", json={"digest": digest})
    assert resp.status_code == 200, resp.text


# -- (a) kill -9 in the middle of a deploy -------------------------------------------------------

_TAG = b"TAG-0123456789abcdef"


@functools.cache
def _big_module_template() -> bytes:
    """~4 MiB of data segment and 1000 functions: uploading and compiling take a while."""
    funcs = "\n".join(
        f'(func (export "f{i}") (param i32) (result i32) '
        f"(i32.add (i32.mul (local.get 0) (i32.const {i})) (i32.const {i + 1})))"
        for i in range(1000)
    )
    wat = (
        '(module (memory (export "memory") 66)\n'
        f'(data (i32.const 0) "{_TAG.decode()}")\n'
        f'(data (i32.const 64) "{"x" * (4 << 20)}")\n'
        f"{funcs}\n"
        '(func (export "echo") (param i32) (result i32) (local.get 0)))'
    )
    return bytes(wasmtime.wat2wasm(wat))


class Upload:
    """A deploy of a new big module, sent from a thread with its multipart body produced
    piece by piece, so the test knows how far it got (and can hold it half-sent)."""

    def __init__(self, server: ServerProcess, role: str, *, hold: bool = False) -> None:
        self.name = f"{role}-{uuid.uuid4().hex[:8]}"
        tag = self.name.encode().ljust(len(_TAG), b"-")[: len(_TAG)]
        self.module = _big_module_template().replace(_TAG, tag, 1)  # new bytes, new blob
        hexd = hashlib.sha256(self.module).hexdigest()
        self.digest = "sha256:" + hexd
        self.blob = server.data_dir / "blobs" / "sha256" / hexd[:2] / hexd
        self.artifacts = [d / f"{hexd}.cwasm" for d in (server.data_dir / "cache").iterdir()]
        boundary = uuid.uuid4().hex
        head = "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in {"name": self.name, "abi": "core", "export": "echo"}.items()
        )
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.wasm"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        step = 256 * 1024
        m = self.module
        self.parts = [head.encode()] + [m[i : i + step] for i in range(0, len(m), step)]
        self.parts.append(f"\r\n--{boundary}--\r\n".encode())
        self.server = server
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self.hold = hold
        self.half_sent = threading.Event()
        self.body_sent = threading.Event()
        self.answered = threading.Event()
        self.release = threading.Event()
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _body(self) -> Iterator[bytes]:
        for i, part in enumerate(self.parts):
            if i == len(self.parts) // 2:
                self.half_sent.set()
                if self.hold:
                    self.release.wait(60)
            yield part
        self.body_sent.set()

    def _send(self) -> None:
        try:
            with self.server.client() as client:  # carries the server's key
                self.response = client.post(
                    "/api/v1/functions",
                    content=self._body(),
                    headers={"content-type": self.content_type},
                )
        except httpx.HTTPError:
            pass  # the server was killed under it
        finally:
            self.answered.set()

    def temp_file(self) -> bool:
        try:
            return any(n.endswith(".tmp") for n in os.listdir(self.blob.parent))
        except FileNotFoundError:
            return False

    def finish(self) -> None:
        self.release.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def kill_when(server: ServerProcess, trigger: Callable[[], bool], upload: Upload) -> bool:
    """Watch for the moment (as fast as the test can look), then kill -9; True if it came
    before the deploy was answered."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not trigger() and not upload.answered.is_set():
        pass
    server.kill()
    return trigger() and upload.response is None


# Each round kills the server once, with several deploys at different stages:
# - held: its body half-sent, the server waiting for the rest;
# - compiling: its body fully sent, the server checking and compiling it (the kill point);
# - answered: a deploy that completed before the kill, so it must survive it;
# - blob_tmp / blob / artifact: killed while the blob's temp file is being written, once the
#   blob is in place, once the compiled artifact is; all before the version's commit, unless
#   the commit won the race.
ROUNDS = ["compiling", "blob_tmp", "blob", "artifact"]
# Until the version's commit the database plays no part; on PostgreSQL (fewer restarts) the
# rounds with a commit just before the kill and the kill closest to one.
PG_ROUNDS = ["compiling", "artifact"]


def deploy_round(server: ServerProcess, point: str) -> dict[str, tuple[Upload, str]]:
    """Run one round; returns role -> (upload, what must have become of it)."""
    held = Upload(server, "held", hold=True)
    assert held.half_sent.wait(30)
    uploads = {"held": (held, "absent")}
    if point == "compiling":
        answered = Upload(server, "answered")
        answered.thread.join(timeout=60)
        assert answered.response is not None and answered.response.status_code == 201
        subject = Upload(server, "compiling")
        on_time = kill_when(server, subject.body_sent.is_set, subject)
        assert on_time, "the deploy finished before the kill"
        uploads |= {"answered": (answered, "deployed"), "compiling": (subject, "absent")}
    else:
        subject = Upload(server, point.replace("_", "-"))
        trigger = {
            "blob_tmp": subject.temp_file,
            "blob": subject.blob.exists,
            "artifact": lambda: any(p.exists() for p in subject.artifacts),
        }[point]
        on_time = kill_when(server, trigger, subject)
        uploads[point] = (subject, "either" if on_time else "deployed")
    for upload, _ in uploads.values():
        upload.finish()
    return uploads


def test_kill_during_deploy(server: ServerProcess) -> None:
    with server.client() as client:
        deployed(client, "steady", GCD_WAT)
    outcomes: list[str] = []
    orphans: list[Path] = []
    for point in PG_ROUNDS if server.database_url else ROUNDS:
        uploads = deploy_round(server, point)

        # Server down: a crash may leave garbage (a blob no version uses, a temp file),
        # never a version without its module.
        found = doctor_now(server)
        assert found["error"] == [], (point, found)
        assert set(found["problem"]) <= {"orphan_blob", "temp_file"}, (point, found)

        server.restart()
        with server.client() as client:
            assert result_of(invoke(client, "steady", [12, 18])) == 6
            names = function_names(client)
            for role, (upload, expected) in uploads.items():
                listed = upload.name in names
                outcomes.append(f"{point}/{role}: {'deployed' if listed else 'absent'}")
                assert expected in ("either", "deployed" if listed else "absent"), outcomes
                if listed:  # all of it: its version, its module, and it serves
                    [version] = versions_of(client, upload.name)
                    assert version["module_digest"] == upload.digest and version["active"]
                    assert sha256(upload.blob.read_bytes()) == upload.digest
                    assert result_of(invoke(client, upload.name, [41])) == 41
                    continue
                assert client.get(f"/api/v1/functions/{upload.name}").status_code == 404
                assert invoke(client, upload.name, [41]).status_code == 404
                if expected == "absent":  # refused or cut off before anything was stored
                    assert not upload.blob.exists(), outcomes
                elif upload.blob.exists():
                    orphans.append(upload.blob)

    # Fresh garbage is only noted with the default grace period: the server may be about to
    # use it. With none, repair removes it; what is deployed keeps its blobs and serves.
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    report = examine(settings)
    assert report.healthy, report.findings
    code, repaired = run_doctor(server.data_dir, server.database_url, "--repair", "--grace", "0")
    assert code == 0, repaired
    assert all(not p.exists() for p in orphans), outcomes
    assert_doctor_clean(server)
    with server.client() as client:
        for name in function_names(client):
            args, expected = ([12, 18], 6) if name == "steady" else ([7], 7)
            assert result_of(invoke(client, name, args)) == expected, outcomes


# -- (b) kill -9 with 100 invocations in flight --------------------------------------------------


def _records(server: ServerProcess) -> list[dict[str, Any]]:
    url = server.database_url or f"sqlite:///{server.data_dir / 'wasmlet.db'}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(InvocationRecord.__table__))
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def test_kill_with_invocations_in_flight(server: ServerProcess) -> None:
    client = server.client(limits=httpx.Limits(max_connections=120))
    deployed(client, "spin", SPIN, abi="core", export="spin")
    deployed(client, "steady", GCD_WAT)
    versions: dict[str, dict[str, int]] = {"which": {}}  # digest -> what it answers
    for value in (1, 2):
        view = deployed(client, "which", constant(value), abi="core", export="which")
        versions["which"][view["active_version"]["digest"]] = value
    resp = client.patch("/api/v1/functions/steady", json={"timeout_ms": 4000})
    assert resp.status_code == 200, resp.text  # steady: two versions of one module
    known = {
        name: {v["digest"] for v in versions_of(client, name)}
        for name in ("spin", "steady", "which")
    }
    active = {name: active_digest(client, name) for name in known}

    for _ in range(3):  # records that are committed before the crash must survive it
        assert result_of(invoke(client, "steady", [12, 18])) == 6
        assert result_of(invoke(client, "which", [])) == 2
    committed = client.get("/api/v1/functions/steady/invocations").json()["invocations"]
    committed += client.get("/api/v1/functions/which/invocations").json()["invocations"]
    assert len(committed) == 6

    started = datetime.now(UTC)
    done = threading.Semaphore(0)
    answers: list[tuple[bool, int]] = []  # (slow call?, status)

    def call(i: int) -> None:
        try:
            if i % 5 < 2:  # 40 slow calls, of different lengths
                resp = invoke(client, "spin", [SLOW_SPINS // (1 + i % 3)])
            elif i % 2:
                resp = invoke(client, "steady", [i, 6])
            else:
                resp = invoke(client, "which", [])
            answers.append((i % 5 < 2, resp.status_code))
        except httpx.HTTPError:
            pass  # killed mid-call
        finally:
            done.release()

    sent = 100
    with ThreadPoolExecutor(max_workers=sent) as pool:
        for i in range(sent):
            pool.submit(call, i)
        for _ in range(20):  # some have finished, some records been flushed ...
            assert done.acquire(timeout=30)
        time.sleep(1.2)
        answered_before_kill = len(answers)
        server.kill()  # ... and the rest are in flight
        killed_at = datetime.now(UTC)
    client.close()
    slow_answered = sum(slow for slow, _ in answers[:answered_before_kill])
    assert answered_before_kill >= 20 and slow_answered < 40, answers  # slow calls in flight

    # Records: every row whole, naming a function and one of its versions; no more than
    # were sent; the ones committed before the crash still there.
    rows = _records(server)
    ids = {r["id"] for r in rows}
    assert {r["id"] for r in committed} <= ids
    storm = [r for r in rows if _utc(r["started_at"]) >= started]
    assert len(storm) <= sent
    assert len(rows) == len(storm) + len(committed)
    for r in rows:
        assert r["function"] in known and r["version"] in known[r["function"]], r
        assert 100 <= r["status"] <= 599 and r["duration_ms"] >= 0, r
        assert r["via"] == "api" and r["logs"] is not None, r
        assert _utc(r["started_at"]) <= killed_at + timedelta(seconds=1), r
        assert (r["error_code"] is None) == (r["status"] < 400), r

    server.restart()
    assert_doctor_clean(server)
    with server.client() as client:
        assert {name: active_digest(client, name) for name in known} == active
        assert result_of(invoke(client, "spin", [1000])) == 1000
        for digest, value in versions["which"].items():  # every version serves, not just
            rollback(client, "which", digest)  # the active one
            assert result_of(invoke(client, "which", [])) == value
        for digest in sorted(known["steady"]):
            rollback(client, "steady", digest)
            assert result_of(invoke(client, "steady", [12, 18])) == 6
        for name, digest in active.items():
            rollback(client, name, digest)


# -- (c) kill -9 during rollbacks ---------------------------------------------------------------


class Flipper:
    """Threads rolling a function back and forth between two versions until the server
    dies; counts the rollbacks that succeeded and keeps any unexpected answer."""

    def __init__(self, server: ServerProcess, name: str, order: list[str], threads: int) -> None:
        self.client = server.client(limits=httpx.Limits(max_connections=threads))
        self.name = name
        self.order = order
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.unexpected: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(w,)) for w in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, worker: int) -> None:
        order = self.order[::-1] if worker % 2 else self.order
        n = 0
        while not self.stop.is_set():
            try:
                resp = self.client.post(
                    f"/api/v1/functions/{self.name}/rollback", json={"digest": order[n % 2]}
                )
            except httpx.HTTPError:
                return  # killed
            if resp.status_code != 200:
                self.unexpected.append(f"{resp.status_code} {resp.text}")
                return
            n += 1
            with self.lock:
                self.count += 1

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count and not self.unexpected and time.monotonic() < deadline:
            time.sleep(0.005)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        self.client.close()


def test_kill_during_rollbacks(server: ServerProcess) -> None:
    with server.client() as client:
        digests = {}
        for value in (1, 2):
            view = deployed(client, "flip", constant(value), abi="core", export="which")
            digests[view["active_version"]["digest"]] = value
        deployed(client, "steady", GCD_WAT)

    for then in (0.0, 0.25):  # kill as soon as rollbacks flow, and a while later
        flipper = Flipper(server, "flip", sorted(digests), threads=4)
        flipper.wait_for(8)
        time.sleep(then)
        server.kill()
        flipper.join()
        assert flipper.unexpected == [] and flipper.count >= 8, (flipper.count, flipper.unexpected)

        server.restart()
        with server.client() as client:
            versions = versions_of(client, "flip")
            assert {v["digest"] for v in versions} == set(digests)
            [current] = [v["digest"] for v in versions if v["active"]]
            assert active_digest(client, "flip") == current
            assert result_of(invoke(client, "flip", [])) == digests[current]
            assert result_of(invoke(client, "steady", [12, 18])) == 6
    assert_doctor_clean(server)
