"""One timer per event loop that checks every running stream reader for its end.

A reader ends on its deadline or a stop request (Ctrl-C, a stop file). A sleeping task per reader
that looked every TICK_SECONDS cost a loop wake-up each, 4,000 a second at 1,000 streams (and a
0.05 s tick, 20,000, starved the loop: chunks came out ~3 s late); one sweep over all of a loop's
readers does the same work with one timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Protocol

__all__ = ["TICK_SECONDS", "Checked", "ticker"]

_LOGGER = logging.getLogger(__name__)

# How often every reader is checked, in seconds.
TICK_SECONDS = 0.25


class Checked(Protocol):
    """What the ticker checks: a stream reader."""

    stream_id: str

    def check_end(self, now: float) -> None:
        """Ends the stream if its deadline passed or a stop was requested."""


class _Ticker:
    """The readers of one event loop, checked every TICK_SECONDS while any is running."""

    def __init__(self) -> None:
        # No reference to the loop itself: it is this ticker's key in _TICKERS (weak).
        self._readers: set[Checked] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, reader: Checked) -> None:
        self._readers.add(reader)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def discard(self, reader: Checked) -> None:
        self._readers.discard(reader)

    def _tick(self) -> None:
        self._timer = None
        now = time.time()
        for reader in list(self._readers):
            try:
                reader.check_end(now)
            except Exception:  # one reader's bug must not stop the others' deadlines
                _LOGGER.exception("%s: checking for the end of the stream failed", reader.stream_id)
        if self._readers:
            self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)


_TICKERS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticker]" = (
    weakref.WeakKeyDictionary()
)


def ticker(loop: asyncio.AbstractEventLoop) -> _Ticker:
    """The _Ticker of `loop` (called on the loop's own thread)."""
    found = _TICKERS.get(loop)
    if found is None:
        found = _TICKERS[loop] = _Ticker()
    return found
