"""Reading slow streams' sockets on one timer: the `http` source's gathering without per-read
event-loop work.

A live radio stream sends ~16 kB a second in ~12 packets. Read through the event loop with its
packets let gather (pause reading, a timer per read, resume), each read cost an epoll wake-up,
two epoll_ctl calls with asyncio's selector bookkeeping, a TimerHandle and the transport's
dispatch: in a profile of 1,000 such streams, pausing and resuming alone was ~30% of the
reading CPU. A stream whose reads come in small (`BodyReceiver`) instead leaves the event loop's
selector for good and joins a `PollTicker`: one timer per event loop and gather period that
reads every member's socket once per period with a plain non-blocking `os.read`. A read of
16 KiB or more sends the stream back to the event loop (it is fast: read as it comes).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol

__all__ = ["PollTicker", "Polled"]

# Per event loop: {gather period in seconds: its ticker}.
_TICKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Polled(Protocol):
    def poll(self) -> None:
        """Reads the socket once, without waiting (called by the ticker every period)."""


class PollTicker:
    """Calls `poll()` of each member once every `period` seconds, on one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float):
        self._loop = loop
        self._period = period
        self._members: dict[Polled, None] = {}  # insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, period: float) -> PollTicker:
        """The ticker of `loop` for `period` (made on first use)."""
        tickers = _TICKERS.setdefault(loop, {})
        ticker = tickers.get(period)
        if ticker is None:
            ticker = tickers[period] = cls(loop, period)
        return ticker

    def add(self, member: Polled) -> None:
        self._members[member] = None
        if self._timer is None:
            self._timer = self._loop.call_at(self._loop.time() + self._period, self._tick)

    def discard(self, member: Polled) -> None:
        self._members.pop(member, None)

    def _tick(self) -> None:
        started = self._loop.time()
        for member in list(self._members):
            if member in self._members:  # one poll can end another's membership
                member.poll()
        if self._members:
            # The next tick a period after this one started, so the period holds on average.
            self._timer = self._loop.call_at(started + self._period, self._tick)
        else:
            self._timer = None
