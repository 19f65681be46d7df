"""Time and randomness, for guests without WASI (which would grant them a clock and a
random source along with much else)."""

from __future__ import annotations

import os
import time

from wasmlet.host.context import HostContext, HostError

MAX_RANDOM = 65536


def now_ms(ctx: HostContext) -> int:
    """Wall-clock time in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def random_bytes(ctx: HostContext, n: int) -> bytes:
    """`n` (1..65536) cryptographically random bytes."""
    if not 0 < n <= MAX_RANDOM:
        raise HostError(f"random_bytes: n must be 1..{MAX_RANDOM}")
    return os.urandom(n)
