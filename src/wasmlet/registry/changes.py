"""Telling every worker process that the registry changed.

Workers of one node share the data dir. `<data_dir>/registry.gen` holds an 8-byte
generation counter that every process maps into memory: a change increments it (under an
exclusive file lock), and each request compares it with the value its worker last saw.
That is a plain memory read — no syscall, no GIL release on the request path — and a
delete or rollback is seen by the very next request in every worker. (Scale-out across
machines will use a Redis channel instead.)
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

_SIZE = 8


class ChangeSignal:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "registry.gen"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._seen: int | None = None

    @property
    def generation(self) -> int:
        generation: int = struct.unpack_from("<Q", self._map)[0]
        return generation

    def bump(self) -> None:
        with open(self.path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            struct.pack_into("<Q", self._map, 0, self.generation + 1)

    def changed(self) -> bool:
        """True once after each change since the previous call (and on the first call)."""
        gen = struct.unpack_from("<Q", self._map)[0]
        if gen != self._seen:
            self._seen = gen
            return True
        return False
