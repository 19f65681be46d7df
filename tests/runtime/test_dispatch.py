"""CallStats: inline while the moving average stays under the budget."""

from __future__ import annotations

from wasmlet.runtime.dispatch import CallStats


def test_starts_inline_and_stays_for_short_calls() -> None:
    stats = CallStats(1000, inline=True)
    assert stats.inline
    for _ in range(100):
        stats.observe(900)
    assert stats.inline
    assert 850 < stats.ewma_us <= 900


def test_demoted_once_the_average_exceeds_the_budget() -> None:
    stats = CallStats(1000, inline=True)
    # ewma after k calls of 1200 us: 1200 * (1 - 0.8**k); over 1000 from k = 9.
    for _ in range(8):
        stats.observe(1200)
        assert stats.inline
    stats.observe(1200)
    assert not stats.inline
    assert stats.ewma_us > 1000


def test_one_long_call_does_not_demote_a_fast_function() -> None:
    stats = CallStats(1000, inline=True)
    for _ in range(20):
        stats.observe(100)
    stats.observe(3000)
    assert stats.inline


def test_one_outlier_does_not_move_a_fast_function_off_the_loop() -> None:
    stats = CallStats(1000, inline=True)
    stats.observe(20_000)  # e.g. a preemption: clamped to 3x the budget
    assert stats.inline
    stats.observe(20_000)  # but a function that stays slow moves in a few calls
    assert not stats.inline


def test_re_promoted_when_calls_get_short_again() -> None:
    stats = CallStats(1000, inline=True)
    for _ in range(5):
        stats.observe(20_000)
    assert not stats.inline
    promoted_after = None
    for i in range(1, 100):
        stats.observe(10)
        if stats.inline:
            promoted_after = i
            break
    assert promoted_after is not None
    assert stats.ewma_us < 500  # hysteresis: only under half the budget
    # clamped samples: ewma ~2000 after five slow calls, * 0.8 per short call: under 500
    # after about six more.
    assert 4 <= promoted_after <= 8


def test_between_half_and_full_budget_keeps_the_current_mode() -> None:
    offloaded = CallStats(1000, inline=True)
    offloaded.demote(5000)
    for _ in range(200):
        offloaded.observe(700)
    assert not offloaded.inline
    inline = CallStats(1000, inline=True)
    for _ in range(200):
        inline.observe(700)
    assert inline.inline


def test_demote_offloads_and_raises_the_average() -> None:
    stats = CallStats(1000, inline=True)
    stats.observe(100)
    stats.demote(50_000)
    assert not stats.inline
    assert stats.ewma_us == 50_000
    stats.demote(10)  # never lowers the average
    assert stats.ewma_us == 50_000


def test_zero_budget_never_inline() -> None:
    stats = CallStats(0, inline=True)
    assert not stats.inline
    for _ in range(50):
        stats.observe(0)
    assert not stats.inline


def test_never_inline_when_not_allowed() -> None:
    # runtime/invoker.py passes inline=(replayable and fuel_metering): False means the calls
    # must always go to the executor (dispatch.py docstring: "others always go to the
    # executor"); without fuel metering an inline call has no fuel cap to stop it early.
    stats = CallStats(1000, inline=False)
    assert not stats.inline
    for _ in range(50):
        stats.observe(10)
    assert not stats.inline
