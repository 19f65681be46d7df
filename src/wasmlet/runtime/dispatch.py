"""Deciding where a call runs: on the event loop thread, or on the executor.

A hop to a thread costs 100-150 us of CPU on 2 cores (the GIL changes hands twice), more
than a small guest call (~2-40 us). So calls whose recent average is under
`inline_budget_us` run inline on the event loop, and longer ones run on the executor.
An inline call is armed with a short deadline (`inline_deadline_ms`): if a usually-fast
function suddenly runs long, the event loop is stalled for at most that long, the call is
abandoned (its instance discarded, so nothing it did survives) and replayed on the
executor with the time it has left. Only functions whose calls have no effects outside
their own instance are run this way ("replayable"); others always go to the executor.
"""

from __future__ import annotations


class CallStats:
    __slots__ = ("allowed", "budget_us", "ewma_us", "inline")

    ALPHA = 0.2

    def __init__(self, budget_us: float, inline: bool) -> None:
        self.budget_us = budget_us
        self.ewma_us = 0.0
        self.allowed = inline and budget_us > 0  # never inline otherwise, however short
        self.inline = self.allowed

    def observe(self, duration_us: float) -> None:
        # Clamped: one call stretched by a preemption or a GC pause must not by itself move a
        # function off the loop; a function that is really slow gets there in a few calls.
        sample = min(duration_us, 3 * self.budget_us)
        self.ewma_us += self.ALPHA * (sample - self.ewma_us)
        if self.inline and self.ewma_us > self.budget_us:
            self.inline = False
        elif not self.inline and self.allowed and self.ewma_us < self.budget_us / 2:
            self.inline = True

    def demote(self, duration_us: float) -> None:
        """An inline call overran its inline deadline: offload until calls are short again."""
        self.inline = False
        self.ewma_us = max(self.ewma_us, duration_us)
