"""One writer at a time for the registry of a node (all threads and worker processes).

Deploys write a blob and then rows; garbage collection reads rows and then deletes blobs.
Interleaved, a collection could delete a blob a concurrent deploy of the same bytes has
just come to rely on, and SQLite cannot lock the rows a version number is computed from.
An exclusive flock on `<data_dir>/registry.lock` serialises these short critical sections
across threads (each opens its own file description) and processes alike.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def registry_lock(data_dir: Path) -> Iterator[None]:
    with open(Path(data_dir) / "registry.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
