"""Deadlines for many waiting things (request heads, request bodies), kept by one timer.

A timer per request (`loop.call_later`, or asyncio.timeout) costs ~1-4 us to arm and
cancel on uvloop; a dict entry a fraction of that. One timer ticks every TICK seconds, and
only while something is watched, so deadlines are kept to within a tick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable


class Deadlines:
    TICK = 0.1

    def __init__(self) -> None:
        self._watched: dict[Hashable, tuple[float, Callable[[], None]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, key: Hashable, when: float, expire: Callable[[], None]) -> None:
        """Call `expire()` once `time.monotonic()` passes `when`, unless `key` is unwatched."""
        self._watched[key] = (when, expire)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.TICK, self._sweep)

    def unwatch(self, key: Hashable) -> None:
        self._watched.pop(key, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        due = [(key, expire) for key, (when, expire) in self._watched.items() if when <= now]
        for key, expire in due:
            del self._watched[key]
            expire()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.TICK, self._sweep) if self._watched else None
