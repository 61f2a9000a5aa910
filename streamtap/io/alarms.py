"""Timers shared by the readers of one event loop, gathered into 10-ms slots.

Every reader arms a timer for when the chunk it is filling is due (chunk.max_seconds after its
first byte, or its window's end). With an asyncio timer each, 1,000 streams kept ~1,000 timers
in the loop's heap, and every push and pop compares them in Python (`TimerHandle.__lt__`); the
window-end cuts of all streams fall on the same instant anyway. Here callbacks due within the
same 10 ms share one asyncio timer: a cut comes at most 10 ms after it is due, never before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Callable

__all__ = ["SLOT_SECONDS", "call_later"]

_LOGGER = logging.getLogger(__name__)

SLOT_SECONDS = 0.01


class _Alarms:
    """The slots of one event loop: slot number -> callbacks due in it."""

    def __init__(self) -> None:
        # No reference to the loop itself: it is this object's key in _ALARMS (weak).
        self._slots: dict[int, list[Callable[[], None]]] = {}

    def call_later(self, loop: asyncio.AbstractEventLoop, delay: float,
                   callback: Callable[[], None]) -> None:
        slot = math.ceil((loop.time() + max(delay, 0.0)) / SLOT_SECONDS)
        callbacks = self._slots.get(slot)
        if callbacks is None:
            callbacks = self._slots[slot] = []
            loop.call_at(slot * SLOT_SECONDS, self._fire, slot)
        callbacks.append(callback)

    def _fire(self, slot: int) -> None:
        for callback in self._slots.pop(slot, ()):
            try:
                callback()
            except Exception:  # one reader's bug must not delay the others' cuts
                _LOGGER.exception("a reader's timer failed")


_ALARMS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Alarms]" = (
    weakref.WeakKeyDictionary()
)


def call_later(loop: asyncio.AbstractEventLoop, delay: float,
               callback: Callable[[], None]) -> None:
    """Calls `callback` on `loop` at least `delay` seconds from now, at most SLOT_SECONDS later
    (like loop.call_later, on the loop's own thread; it cannot be cancelled)."""
    found = _ALARMS.get(loop)
    if found is None:
        found = _ALARMS[loop] = _Alarms()
    found.call_later(loop, delay, callback)
