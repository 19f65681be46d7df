"""`wasmlet doctor`: do the registry's rows and the files in the data dir agree?

A deploy writes its blob (and compiled artifact) before the transaction that records the
version, and every other registry change is one transaction, so a crash (kill -9, power
loss) can only leave *extra* things behind: a blob or artifact no version refers to, or a
`*.tmp` file of an interrupted write. Those are garbage the doctor removes on `repair`.
What it cannot make up is a module a version needs whose bytes are missing or damaged: that
is an error naming the function and version, fixed by deploying the same module again.

The doctor works on the data dir and the database directly, so it runs while the server is
down; it holds the registry lock (registry/locks.py) so it is also safe while the server
runs: no deploy, rollback or delete interleaves with it. Two writers do not take that lock,
the raw blob upload (`POST /api/v1/blobs`, whose blob waits for a compat deploy) and the
compile cache refilling itself; so orphan blobs and temp files younger than `grace_s` are
only noted, never removed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, inspect, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from wasmlet.config import Settings
from wasmlet.registry.blobs import TEMP_SUFFIX, file_digest, is_digest
from wasmlet.registry.changes import ChangeSignal
from wasmlet.registry.db import make_engine
from wasmlet.registry.locks import registry_lock
from wasmlet.registry.models import Function, InvocationRecord, Version, utcnow

DEFAULT_GRACE_S = 600.0

# error: needs a person (nothing on this node holds the right bytes);
# problem: inconsistent, and `repair` fixes it; note: worth knowing, not wrong.
Severity = Literal["error", "problem", "note"]

_HEX = frozenset("0123456789abcdef")
_ARTIFACT_SUFFIX = ".cwasm"
_REQUIRED_TABLES = ("functions", "versions", "invocations")


@dataclass
class Finding:
    code: str
    severity: Severity
    message: str
    function: str | None = None
    version: str | None = None
    path: str | None = None
    count: int | None = None
    repaired: bool = False


@dataclass
class DoctorReport:
    data_dir: str
    database: str
    repair: bool
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def remaining(self) -> list[Finding]:
        """Errors and problems that are still there (repaired ones and notes are not)."""
        return [f for f in self.findings if f.severity != "note" and not f.repaired]

    @property
    def healthy(self) -> bool:
        return not self.remaining

    @property
    def exit_code(self) -> int:
        return 0 if self.healthy else 1

    def codes(self, severity: Severity | None = None) -> list[str]:
        return [f.code for f in self.findings if severity in (None, f.severity)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "database": self.database,
            "repair": self.repair,
            "healthy": self.healthy,
            "checked": dict(self.checked),
            "findings": [asdict(f) for f in self.findings],
        }


def examine(
    settings: Settings, *, repair: bool = False, grace_s: float = DEFAULT_GRACE_S
) -> DoctorReport:
    """Check the data dir and database of `settings`; with `repair`, fix what can be fixed."""
    report = DoctorReport(
        data_dir=str(settings.data_dir),
        database=make_url(settings.db_url).render_as_string(hide_password=True),
        repair=repair,
    )
    if not settings.data_dir.is_dir():
        report.findings.append(
            Finding("data_dir_missing", "error", f"no data dir at {settings.data_dir}")
        )
        return report
    problem = _database_problem(settings.db_url)
    if problem:
        report.findings.append(Finding("database_unavailable", "error", problem))
        return report
    engine = make_engine(settings.db_url)
    try:
        with registry_lock(settings.data_dir):
            _Examination(settings, engine, report, grace_s).run()
    except SQLAlchemyError as exc:
        report.findings.append(
            Finding("database_error", "error", f"database {report.database}: {_first_line(exc)}")
        )
    finally:
        engine.dispose()
    return report


def _database_problem(url: str) -> str | None:
    """Why the database cannot be examined, without creating one as a side effect."""
    parsed = make_url(url)
    on_disk = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, ":memory:")
    if on_disk and parsed.database and not Path(parsed.database).is_file():
        return f"no database at {parsed.database} (has a server run with this data dir?)"
    try:
        engine = make_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        return f"cannot open the database: {_first_line(exc)}"
    missing = [t for t in _REQUIRED_TABLES if t not in tables]
    if missing:
        return f"the database has no wasmlet schema (tables missing: {', '.join(missing)})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _hex_name(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


@dataclass
class _VersionRow:
    id: int
    function_id: int
    seq: int
    digest: str
    module_digest: str
    spec: dict[str, Any]


@dataclass
class _Use:
    """A version that needs a module: the main one, or one linked by name."""

    function: str
    seq: int
    version: str
    linked_as: str | None = None

    def describe(self) -> str:
        role = f"linked module {self.linked_as!r}" if self.linked_as else "module"
        return f"function {self.function!r} version {self.seq} ({_short(self.version)}): {role}"


class _Examination:
    def __init__(
        self, settings: Settings, engine: Engine, report: DoctorReport, grace_s: float
    ) -> None:
        self.data_dir = settings.data_dir
        self.blob_root = settings.data_dir / "blobs" / "sha256"
        self.cache_root = settings.data_dir / "cache"
        self.engine = engine
        self.report = report
        self.repair = report.repair
        self.grace_s = grace_s
        self.now = time.time()
        self.registry_changed = False
        # Filled by _registry(): function name -> its version digests; module digest -> uses.
        self.known: dict[str, set[str]] = {}
        self.uses: dict[str, list[_Use]] = defaultdict(list)

    def run(self) -> None:
        self._registry()
        self._modules()
        self._blob_store()
        self._compile_cache()
        self._invocations()
        if self.registry_changed:
            ChangeSignal(self.data_dir).bump()  # running workers reload the name table

    def _add(self, finding: Finding) -> Finding:
        self.report.findings.append(finding)
        return finding

    # -- functions and versions ------------------------------------------------------------

    def _registry(self) -> None:
        with self.engine.connect() as conn:
            functions = conn.execute(
                select(Function.id, Function.name, Function.active_version_id)
            ).all()
            versions = [
                _VersionRow(*row)
                for row in conn.execute(
                    select(
                        Version.id,
                        Version.function_id,
                        Version.seq,
                        Version.digest,
                        Version.module_digest,
                        Version.spec,
                    )
                )
            ]
        self.report.checked["functions"] = len(functions)
        self.report.checked["versions"] = len(versions)
        names = {fid: name for fid, name, _ in functions}
        by_function: dict[int, list[_VersionRow]] = defaultdict(list)
        stray: list[_VersionRow] = []
        for v in versions:
            (by_function[v.function_id] if v.function_id in names else stray).append(v)

        fixes: list[tuple[Finding, Any]] = []
        for v in stray:
            finding = self._add(
                Finding(
                    "version_without_function",
                    "problem",
                    f"version {_short(v.digest)} (row {v.id}) belongs to no function; "
                    "repair removes it",
                    version=v.digest,
                )
            )
            fixes.append((finding, delete(Version).where(Version.id == v.id)))
        for fid, name, active_id in functions:
            own = by_function.get(fid, [])
            if not own:
                finding = self._add(
                    Finding(
                        "function_without_versions",
                        "problem",
                        f"function {name!r} has no versions; repair removes it",
                        function=name,
                    )
                )
                fixes.append((finding, delete(Function).where(Function.id == fid)))
                if not self.repair:
                    self.known[name] = set()  # still there: its records are not orphans
                continue
            self.known[name] = {v.digest for v in own}
            if active_id in {v.id for v in own}:
                continue
            newest = max(own, key=lambda v: v.seq)
            why = (
                "has no active version"
                if active_id is None
                else f"points at version row {active_id}, which is not one of its versions"
            )
            finding = self._add(
                Finding(
                    "active_version_invalid",
                    "problem",
                    f"function {name!r} {why}; repair activates its newest, version "
                    f"{newest.seq} ({_short(newest.digest)})",
                    function=name,
                    version=newest.digest,
                )
            )
            fixes.append(
                (
                    finding,
                    update(Function)
                    .where(Function.id == fid)
                    .values(active_version_id=newest.id, updated_at=utcnow()),
                )
            )
        if self.repair and fixes:
            with self.engine.begin() as conn:
                for _finding, statement in fixes:
                    conn.execute(statement)
            for finding, _statement in fixes:
                finding.repaired = True
            self.registry_changed = True

        for fid, name, _active in functions:
            if name not in self.known:
                continue
            for v in by_function[fid]:
                self.uses[v.module_digest].append(_Use(name, v.seq, v.digest))
                for linked, digest in ((v.spec or {}).get("modules") or {}).items():
                    self.uses[digest].append(_Use(name, v.seq, v.digest, linked_as=linked))

    # -- the modules versions need ---------------------------------------------------------

    def _modules(self) -> None:
        for digest, uses in sorted(self.uses.items()):
            if not is_digest(digest):
                for use in uses:
                    self._add(
                        Finding(
                            "bad_module_digest",
                            "error",
                            f"{use.describe()} is {digest!r}, which is not a sha256 digest",
                            function=use.function,
                            version=use.version,
                        )
                    )
                continue
            path = self._blob_path(digest)
            try:
                actual: str | None = file_digest(path)
            except FileNotFoundError:
                actual = None
            if actual == digest:
                continue
            if actual is None:
                code, state = "missing_blob", "is missing"
            else:
                code, state = "corrupt_blob", f"is damaged (its bytes hash to {_short(actual)})"
            still = " (a compiled artifact still serves it)" if self._artifacts(digest) else ""
            for use in uses:
                self._add(
                    Finding(
                        code,
                        "error",
                        f"{use.describe()} {digest} {state}{still}; deploy the same module "
                        "again to restore it",
                        function=use.function,
                        version=use.version,
                        path=str(path),
                    )
                )

    def _blob_path(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.blob_root / hexd[:2] / hexd

    def _artifacts(self, digest: str) -> list[Path]:
        if not self.cache_root.is_dir():
            return []
        name = digest.removeprefix("sha256:") + _ARTIFACT_SUFFIX
        return [d / name for d in self.cache_root.iterdir() if (d / name).is_file()]

    # -- files on disk ---------------------------------------------------------------------

    def _blob_store(self) -> None:
        count = 0
        if self.blob_root.is_dir():
            for sub in sorted(self.blob_root.iterdir()):
                entries = sorted(sub.iterdir()) if sub.is_dir() else [sub]
                for path in entries:
                    if path.name.endswith(TEMP_SUFFIX):
                        self._temp_file(path, "an interrupted blob write")
                    elif sub.is_dir() and _hex_name(path.name) and path.name[:2] == sub.name:
                        count += 1
                        if "sha256:" + path.name not in self.uses:
                            self._orphan_blob(path)
                    else:
                        self._unexpected(path)
        self.report.checked["blobs"] = count

    def _orphan_blob(self, path: Path) -> None:
        digest = "sha256:" + path.name
        age = self._age(path)
        if age is None:
            return
        if age < self.grace_s:
            self._add(
                Finding(
                    "orphan_blob",
                    "note",
                    f"blob {_short(digest)} is used by no version but is only {age:.0f} s old "
                    "(kept: it may be waiting for a deploy)",
                    path=str(path),
                )
            )
            return
        finding = self._add(
            Finding(
                "orphan_blob",
                "problem",
                f"blob {_short(digest)} is used by no version (left by an interrupted deploy "
                "or delete); repair removes it and its compiled artifacts",
                path=str(path),
            )
        )
        if self.repair:
            for artifact in self._artifacts(digest):
                artifact.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            finding.repaired = True

    def _compile_cache(self) -> None:
        count = 0
        if self.cache_root.is_dir():
            for engine_dir in sorted(self.cache_root.iterdir()):
                if not engine_dir.is_dir():
                    self._unexpected(engine_dir)
                    continue
                for path in sorted(engine_dir.iterdir()):
                    if path.name.endswith(TEMP_SUFFIX):
                        self._temp_file(path, "an interrupted compiled-artifact write")
                    elif path.suffix == _ARTIFACT_SUFFIX and _hex_name(path.stem):
                        count += 1
                        self._artifact(path)
                    else:
                        self._unexpected(path)
        self.report.checked["artifacts"] = count

    def _artifact(self, path: Path) -> None:
        digest = "sha256:" + path.stem
        try:
            empty = path.stat().st_size == 0
        except FileNotFoundError:
            return
        if empty:
            why = "is empty (a write cut short); it is compiled again when next needed"
        elif digest not in self.uses and not self._blob_path(digest).exists():
            why = "belongs to no stored module"
        else:
            return  # a needed module whose blob is missing keeps its artifact: it still serves
        finding = self._add(
            Finding(
                "stale_artifact",
                "problem",
                f"compiled artifact {_short(digest)} in {path.parent.name} {why}; "
                "repair removes it",
                path=str(path),
            )
        )
        if self.repair:
            path.unlink(missing_ok=True)
            finding.repaired = True

    def _temp_file(self, path: Path, what: str) -> None:
        age = self._age(path)
        if age is None:
            return
        if age < self.grace_s:
            self._add(
                Finding(
                    "temp_file",
                    "note",
                    f"{path.name} is only {age:.0f} s old (kept: a write may be in progress)",
                    path=str(path),
                )
            )
            return
        finding = self._add(
            Finding(
                "temp_file",
                "problem",
                f"{path.name} is left over from {what}; repair removes it",
                path=str(path),
            )
        )
        if self.repair:
            path.unlink(missing_ok=True)
            finding.repaired = True

    def _unexpected(self, path: Path) -> None:
        self._add(
            Finding(
                "unexpected_file",
                "note",
                f"{path} is not something wasmlet writes there (left alone)",
                path=str(path),
            )
        )

    def _age(self, path: Path) -> float | None:
        """Seconds since last modified; None if it vanished meanwhile (a writer finished)."""
        try:
            return max(0.0, self.now - path.stat().st_mtime)
        except FileNotFoundError:
            return None

    # -- invocation records ----------------------------------------------------------------

    def _invocations(self) -> None:
        record = InvocationRecord
        with self.engine.connect() as conn:
            self.report.checked["invocations"] = conn.scalar(select(func.count(record.id))) or 0
            groups = conn.execute(
                select(record.function, record.version, func.count(record.id)).group_by(
                    record.function, record.version
                )
            ).all()
            invalid_rule = or_(
                record.status < 100,
                record.status > 599,
                record.duration_ms < 0,
                record.started_at.is_(None),
            )
            invalid = conn.scalar(select(func.count(record.id)).where(invalid_rule)) or 0

        fixes: list[tuple[Finding, Any]] = []
        orphans: dict[str, int] = defaultdict(int)
        for name, version, n in groups:
            if name not in self.known:
                orphans[name] += n
            elif version not in self.known[name]:
                finding = self._add(
                    Finding(
                        "invocations_unknown_version",
                        "problem",
                        f"{n} invocation records of function {name!r} name version "
                        f"{_short(version)}, which it does not have; repair removes them",
                        function=name,
                        version=version,
                        count=n,
                    )
                )
                fixes.append(
                    (
                        finding,
                        delete(record).where(record.function == name, record.version == version),
                    )
                )
        for name, n in sorted(orphans.items()):
            finding = self._add(
                Finding(
                    "invocations_unknown_function",
                    "problem",
                    f"{n} invocation records name function {name!r}, which does not exist; "
                    "repair removes them",
                    function=name,
                    count=n,
                )
            )
            fixes.append((finding, delete(record).where(record.function == name)))
        if invalid:
            finding = self._add(
                Finding(
                    "invocations_invalid",
                    "problem",
                    f"{invalid} invocation records have an impossible status, duration or "
                    "start time; repair removes them",
                    count=invalid,
                )
            )
            fixes.append((finding, delete(record).where(invalid_rule)))
        if self.repair and fixes:
            with self.engine.begin() as conn:
                for _finding, statement in fixes:
                    conn.execute(statement)
            for finding, _statement in fixes:
                finding.repaired = True
