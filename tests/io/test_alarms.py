"""Timers shared by a loop's readers (streamtap.io.alarms): never early, at most a slot late,
one asyncio timer per slot, and one failing callback does not cost the others their call."""

from __future__ import annotations

import asyncio
import time

from streamtap.io import alarms


def test_callbacks_come_after_their_delay_and_at_most_a_slot_later():
    async def main():
        loop = asyncio.get_running_loop()
        fired: dict[float, float] = {}
        start = time.monotonic()
        for delay in (0.0, 0.013, 0.05, 0.2):
            alarms.call_later(loop, delay, lambda d=delay: fired.setdefault(d, time.monotonic()))
        await asyncio.sleep(0.35)
        return start, fired

    start, fired = asyncio.run(main())
    assert sorted(fired) == [0.0, 0.013, 0.05, 0.2]
    for delay, at in fired.items():
        assert at - start >= delay
        # a slot late at most, plus what a busy test machine adds to any asyncio timer
        assert at - start < delay + alarms.SLOT_SECONDS + 0.1


def test_callbacks_due_in_one_slot_share_one_asyncio_timer():
    async def main():
        loop = asyncio.get_running_loop()
        before = len(loop._scheduled)
        calls = []
        # 1,000 cuts due at once (every stream's window end): one timer in the loop's heap
        for index in range(1000):
            alarms.call_later(loop, 0.05, lambda index=index: calls.append(index))
        added = len(loop._scheduled) - before
        await asyncio.sleep(0.2)
        return added, calls

    added, calls = asyncio.run(main())
    assert added <= 2  # the 1,000 fall into one slot, or two if the clock crossed a slot edge
    assert calls == list(range(1000))  # in the order they were set


def test_a_failing_callback_does_not_stop_the_others(caplog):
    def fail():
        raise RuntimeError("a reader's bug")

    async def main():
        loop = asyncio.get_running_loop()
        calls = []
        alarms.call_later(loop, 0.01, fail)
        alarms.call_later(loop, 0.01, lambda: calls.append("after"))
        await asyncio.sleep(0.1)
        return calls

    assert asyncio.run(main()) == ["after"]
    assert "a reader's timer failed" in caplog.text
