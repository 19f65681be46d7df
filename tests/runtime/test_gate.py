"""Gate: at most `size` holders, FIFO waiters, timeouts and cancellation leak nothing."""

from __future__ import annotations

import asyncio

import pytest

from wasmlet.runtime.gate import Gate


def test_try_enter_up_to_size() -> None:
    gate = Gate(3)
    assert [gate.try_enter() for _ in range(4)] == [True, True, True, False]
    assert gate.free == 0
    gate.leave()
    assert gate.free == 1
    assert gate.try_enter()
    assert not gate.try_enter()


def test_enter_without_waiting_when_free() -> None:
    async def main() -> None:
        gate = Gate(1)
        await gate.enter(0.01)
        assert gate.free == 0
        gate.leave()
        assert gate.free == 1

    asyncio.run(main())


def test_waiters_get_the_slot_in_arrival_order() -> None:
    async def main() -> None:
        gate = Gate(1)
        assert gate.try_enter()
        order: list[str] = []

        async def worker(tag: str) -> None:
            await gate.enter(5)
            order.append(tag)
            await asyncio.sleep(0.01)
            gate.leave()

        tasks = []
        for tag in "abc":
            tasks.append(asyncio.create_task(worker(tag)))
            await asyncio.sleep(0)  # let it queue before the next one
        assert gate.free == 0
        assert not gate.try_enter()  # queued waiters come first
        gate.leave()  # handed straight to "a", not counted as free
        assert gate.free == 0
        await asyncio.gather(*tasks)
        assert order == ["a", "b", "c"]
        assert gate.free == 1

    asyncio.run(main())


def test_try_enter_refused_while_others_wait() -> None:
    async def main() -> None:
        gate = Gate(2)
        gate.try_enter()
        gate.try_enter()
        waiter = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        gate.leave()
        # The freed slot belongs to the waiter, even before it has run.
        assert not gate.try_enter()
        await waiter
        assert gate.free == 0
        gate.leave()
        gate.leave()
        assert gate.free == 2

    asyncio.run(main())


def test_timeout_raises_and_does_not_leak_a_slot() -> None:
    async def main() -> None:
        gate = Gate(2)
        assert gate.try_enter() and gate.try_enter()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await gate.enter(0.05)
        assert loop.time() - started >= 0.04  # it waited its time (load only lengthens it)
        # The holders leave: the dead waiter must not swallow a slot.
        gate.leave()
        gate.leave()
        assert gate.free == 2
        assert gate.try_enter() and gate.try_enter()
        assert not gate.try_enter()

    asyncio.run(main())


def test_timed_out_waiter_is_skipped_for_a_live_one() -> None:
    async def main() -> None:
        gate = Gate(1)
        gate.try_enter()
        doomed = asyncio.create_task(gate.enter(0.02))
        await asyncio.sleep(0)
        patient = asyncio.create_task(gate.enter(5))
        with pytest.raises(TimeoutError):
            await doomed
        gate.leave()
        await asyncio.wait_for(patient, 1)
        assert gate.free == 0
        gate.leave()
        assert gate.free == 1

    asyncio.run(main())


def test_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    async def main() -> None:
        gate = Gate(1)
        gate.try_enter()
        first = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        second = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        gate.leave()  # resolves first's future ...
        first.cancel()  # ... and first is cancelled before it could run
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 1)  # the slot went on to second
        assert gate.free == 0
        gate.leave()
        assert gate.free == 1

    asyncio.run(main())


def test_cancelled_waiter_with_nobody_behind_frees_the_slot() -> None:
    async def main() -> None:
        gate = Gate(1)
        gate.try_enter()
        only = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        gate.leave()
        only.cancel()
        with pytest.raises(asyncio.CancelledError):
            await only
        assert gate.free == 1

    asyncio.run(main())


def test_many_contenders_never_exceed_size() -> None:
    async def main() -> None:
        gate = Gate(3)
        inside = peak = 0
        done = 0

        async def worker(i: int) -> None:
            nonlocal inside, peak, done
            if not gate.try_enter():
                try:
                    await gate.enter(0.05 if i % 7 == 0 else 5)
                except TimeoutError:
                    return
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.002)
            inside -= 1
            done += 1
            gate.leave()

        await asyncio.gather(*(worker(i) for i in range(60)))
        assert peak == 3
        assert done >= 60 - 9
        assert gate.free == 3

    asyncio.run(main())


def test_borrow_takes_a_free_place_and_gives_it_back() -> None:
    gate = Gate(1)
    how = gate.borrow(True)
    assert how and gate.free == 0
    assert not gate.try_enter() and not gate.borrow(True)
    gate.give_back(how)
    assert gate.free == 1 and gate.try_enter()


def test_borrow_uses_a_place_handed_to_a_waiter_that_has_not_run() -> None:
    """Between `leave` handing a place to a waiter and the waiter's task running, a call
    that finishes synchronously may use it; the waiter still gets it, and no more than
    `size` calls ever hold places at once."""

    async def main() -> None:
        gate = Gate(1)
        assert gate.try_enter()
        entered: list[str] = []

        async def waiter(tag: str) -> None:
            await gate.enter(5)
            entered.append(tag)
            gate.leave()

        tasks = [asyncio.create_task(waiter(t)) for t in "ab"]
        await asyncio.sleep(0)  # both queue
        assert not gate.borrow(True)  # the holder still holds it: nothing to lend
        gate.leave()  # handed to "a", whose task has not run yet
        assert gate.free == 0 and gate.handed == 1
        assert not gate.try_enter()  # FIFO callers still wait their turn
        assert not gate.borrow(False)  # a long call does not go ahead of the waiters
        for _ in range(3):  # short synchronous calls borrow it and give it back
            how = gate.borrow(True)
            assert how
            assert not gate.borrow(True)  # one place: lent once at a time
            gate.give_back(how)
        await asyncio.gather(*tasks)
        assert entered == ["a", "b"]
        assert gate.free == 1 and gate.handed == 0

    asyncio.run(main())


def test_a_queue_drains_under_synchronous_calls() -> None:
    """Callers that queued once (a pool being built) must not make every later synchronous
    call queue behind them: they are served while synchronous calls keep borrowing."""

    async def main() -> None:
        gate = Gate(2)
        assert gate.try_enter() and gate.try_enter()
        served = 0

        async def queued() -> None:
            nonlocal served
            await gate.enter(5)
            served += 1
            gate.leave()

        tasks = [asyncio.create_task(queued()) for _ in range(20)]
        await asyncio.sleep(0)
        gate.leave()
        gate.leave()
        borrowed = refused = 0
        while served < 20:
            how = gate.borrow(True)
            if how:
                borrowed += 1
                gate.give_back(how)
            else:
                refused += 1
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert borrowed >= 10 and refused == 0  # never refused while the queue drained
        assert gate.free == 2 and gate.handed == 0
        assert gate.borrow(True) == 1  # FREE: the queue is gone

    asyncio.run(main())
