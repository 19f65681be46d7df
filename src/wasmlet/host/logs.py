"""Leveled guest logs, captured per invocation into its (bounded) log buffer."""

from __future__ import annotations

from wasmlet.host.context import HostContext


def log(ctx: HostContext, level: int, message: bytes) -> None:
    """Log a UTF-8 message at a level: 0 trace, 1 debug, 2 info, 3 warn, 4 error."""
    ctx.log(level, message.decode("utf-8", "replace"))


def log_level(ctx: HostContext) -> int:
    """The lowest level that is recorded."""
    return ctx.log_level
