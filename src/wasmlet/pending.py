"""Checks that answer at once when they can and say what to wait for when they cannot.

The request path's checks (which key is this, which version is active, are the quotas
fresh) almost always answer from memory. Written as plain functions that raise `Pending`
in the rare case that needs I/O, the same code serves the HTTP fast lane (which cannot
wait, and hands such a request to the ASGI path) and the ASGI path (which waits for what
`Pending` names, then asks again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from wasmlet.errors import Overloaded

T = TypeVar("T")

# A check that is still pending after this many waits is chasing a registry that changes
# faster than it can be read: give up with a retryable error rather than loop.
_MAX_WAITS = 8


class Pending(Exception):  # a signal, not an error
    """Raised by a check that needs to wait for `settle()` before it can answer."""

    def __init__(self, settle: Callable[[], Awaitable[object]]) -> None:
        super().__init__()
        self.settle = settle


async def settled(check: Callable[[], T]) -> T:
    """Run `check`, waiting for whatever it is pending on, until it answers."""
    for _ in range(_MAX_WAITS):
        try:
            return check()
        except Pending as pending:
            await pending.settle()
    raise Overloaded("the registry kept changing while this request was admitted; retry")
