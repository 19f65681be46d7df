"""Content-addressed module bytes under `<data_dir>/blobs/sha256/<ab>/<digest>`.

Crash safety: a blob is written to a temp file (`*.tmp`) in its final directory, fsynced,
renamed over its name and the directory fsynced, so a reader (or a restart after kill -9 or
power loss) sees the whole blob or none of it. A crash can leave a `*.tmp` file or a blob
no version refers to yet; `wasmlet doctor` (registry/doctor.py) finds and removes both.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from wasmlet.errors import NotFound

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
TEMP_SUFFIX = ".tmp"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.fullmatch(value))


def file_digest(path: Path) -> str:
    """The digest of a file's bytes, read in chunks (modules may be tens of MB)."""
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (the entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "sha256"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        hexd = digest.removeprefix("sha256:")
        return self.root / hexd[:2] / hexd

    def put(self, data: bytes) -> str:
        """Store `data` under its digest.

        A blob already there is kept only if it holds exactly these bytes: one damaged on
        disk is replaced, so deploying the same module again is how a corrupt blob is
        repaired (the doctor says so).
        """
        digest = digest_of(data)
        path = self.path(digest)
        if self._holds(path, data):
            return digest
        if not path.parent.is_dir():
            path.parent.mkdir(exist_ok=True)
            fsync_dir(self.root)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
        return digest

    @staticmethod
    def _holds(path: Path, data: bytes) -> bool:
        try:
            if path.stat().st_size != len(data):
                return False
            view = memoryview(data)
            with open(path, "rb") as f:
                for start in range(0, len(data), _CHUNK):
                    if f.read(_CHUNK) != view[start : start + _CHUNK]:
                        return False
            return True
        except FileNotFoundError:
            return False

    def get(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def verify(self, digest: str) -> bool | None:
        """True if the stored bytes hash to `digest`, False if not, None if missing."""
        try:
            return file_digest(self.path(digest)) == digest
        except FileNotFoundError:
            return None

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        """Every stored blob (temp files and anything else in the tree are not blobs)."""
        for sub in self.root.iterdir():
            if sub.is_dir():
                for f in sub.iterdir():
                    if _HEX_RE.fullmatch(f.name) and f.name[:2] == sub.name:
                        yield "sha256:" + f.name
