"""Admission to a pool: at most `size` calls at once, later ones queue with a deadline.

asyncio.Semaphore would do, but its acquire is a coroutine even when a slot is free; this
gate's free path is a plain integer decrement, which matters at tens of thousands of calls a
second. Waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import deque

# What `borrow` took, for `give_back`.
FREE = 1
HANDED = 2


class Gate:
    __slots__ = ("_waiters", "free", "handed", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.handed = 0  # places handed to woken waiters whose tasks have not run yet
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
                self.handed -= 1
                self.leave()  # we were handed a slot just as we gave up: pass it on
            else:
                waiter.cancel()
            raise
        self.handed -= 1  # the handed place is held now

    def borrow(self, ahead: bool) -> int:
        """A place for a call that gives it back (`give_back`) before the event loop runs
        anything else: a free one, or, when the caller may go `ahead` of the waiters (its
        call delays the one it borrows from by very little), one handed to a waiter that
        cannot run before then. 0 when there is none."""
        if self.try_enter():
            return FREE
        if ahead and self.handed > 0:
            self.handed -= 1
            return HANDED
        return 0

    def give_back(self, how: int) -> None:
        if how == HANDED:
            self.handed += 1
        else:
            self.leave()

    def leave(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.handed += 1
                waiter.set_result(None)  # the slot passes straight to the next waiter
                return
        self.free += 1
