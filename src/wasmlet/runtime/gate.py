"""Admission to a pool: at most `size` calls at once, later ones queue with a deadline.

asyncio.Semaphore would do, but its acquire is a coroutine even when a slot is free; this
gate's free path is a plain integer decrement, which matters at tens of thousands of calls a
second. Waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    __slots__ = ("_waiters", "free", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_enter(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def enter(self, timeout: float) -> None:
        """Wait for a slot; raises TimeoutError after `timeout` seconds."""
        if self.try_enter():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # we were handed a slot just as we gave up: pass it on
            else:
                waiter.cancel()
            raise

    def leave(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next waiter
                return
        self.free += 1
