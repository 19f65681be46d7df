"""Telling every worker process that the registry changed.

Workers of one node share the data dir. A change replaces `<data_dir>/registry.gen`
atomically (new inode), and each worker compares that file's inode and mtime with what it
last saw: one stat() per request, ~1 us, so a delete or rollback is seen by the very next
request in every worker. (Scale-out across machines will use a Redis channel instead.)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


class ChangeSignal:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "registry.gen"
        self._seen: tuple[int, int] | None = None
        if not self.path.exists():
            self.bump()

    def bump(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".gen")
        with os.fdopen(fd, "w") as f:
            f.write(str(time.time_ns()))
        os.replace(tmp, self.path)

    def changed(self) -> bool:
        """True once after each change since the previous call (and on the first call)."""
        try:
            st = os.stat(self.path)
            token = (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            token = (0, 0)
        if token != self._seen:
            self._seen = token
            return True
        return False
