"""Bounded byte sinks for guest output, so a chatty guest cannot exhaust host memory."""

from __future__ import annotations

import errno
from collections.abc import Callable


class BoundedBuffer:
    """Collects writes up to `limit` bytes.

    With `fail_when_full`, a write past the limit is refused (the guest sees EFBIG) and
    `overflowed` is set; otherwise the excess is dropped silently and noted in `dropped`.
    """

    __slots__ = (
        "_parts",
        "dropped",
        "fail_when_full",
        "limit",
        "on_overflow",
        "overflowed",
        "size",
    )

    def __init__(
        self,
        limit: int,
        *,
        fail_when_full: bool = False,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.limit = limit
        self.fail_when_full = fail_when_full
        self.on_overflow = on_overflow  # called at the first refused write
        self._parts: list[bytes] = []
        self.size = 0
        self.dropped = 0
        self.overflowed = False

    def write(self, data: bytes) -> int | None:
        room = self.limit - self.size
        if len(data) <= room:
            self._parts.append(data)
            self.size += len(data)
            return None
        if self.fail_when_full:
            if not self.overflowed and self.on_overflow is not None:
                self.on_overflow()
            self.overflowed = True
            return -errno.EFBIG
        if room > 0:
            self._parts.append(data[:room])
            self.size += room
        self.dropped += len(data) - max(room, 0)
        return None  # report the whole write as done: logs are best effort

    def room(self) -> int:
        """Bytes a write may still add."""
        return max(0, self.limit - self.size)

    def getvalue(self) -> bytes:
        if not self.size and not self.dropped:
            return b""
        data = b"".join(self._parts)
        if self.dropped:
            data += b"\n[... %d bytes dropped]" % self.dropped
        return data

    def clear(self) -> None:
        self._parts.clear()
        self.size = self.dropped = 0
        self.overflowed = False
