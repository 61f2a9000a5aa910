"""When a group of streams is polled: the delay the reading SDF defers its remainder by.

Every poll walks every stream of the group (its reader, its next chunks, its watermark) and
rebuilds the group's restriction, so the number of polls is a cost of its own: at 1,000 radio
streams the polls were a quarter of the capture's CPU, and with nothing flowing nearly half.

- `read.poll_seconds` set: that, always.
- chunks released as they are cut: chunk.max_seconds, at most 1 s (measured at 100 radio streams
  to Kafka on Prism: 0.2 s -> 1 s polls took the capture from 0.26 to 0.16 cores; a poll faster
  than chunks are cut mostly finds nothing new).
- chunks held until their window closes (Parquet-only captures): nothing leaves mid-window but
  from a stream holding over its limit, so the group polls every MID_WINDOW_POLL_SECONDS, once
  right after each window ends, and every WAITING_POLL_SECONDS while an ended window waits for a
  stream of the group to close it: a fifth of the polls of a steady 0.2 s, and windows leave as
  soon after their end as before.
"""

from __future__ import annotations

import time

from streamtap.config import ChunkSettings
from streamtap.io.cutting import event_micros

__all__ = ["MID_WINDOW_POLL_SECONDS", "WAITING_POLL_SECONDS", "PollSchedule"]

MID_WINDOW_POLL_SECONDS = 1.0
WAITING_POLL_SECONDS = 0.2
# The first poll after a window's end: the readers cut the window's last chunks on timers due at
# its end; this leaves them a moment.
_AFTER_WINDOW_END_SECONDS = 0.05


class PollSchedule:
    """The delay before a group's next poll (see the module)."""

    def __init__(self, poll_seconds: float | None, chunking: ChunkSettings,
                 release_by_window: float | None):
        self._fixed = poll_seconds
        self._window_micros = int(release_by_window * 1e6) if release_by_window else None
        self._released_poll = min(1.0, chunking.max_seconds)

    def next(self, group_release: int | None) -> float:
        """Seconds to the next poll; `group_release`: the start (µs) of the earliest window a
        stream of the group has not closed yet (None: chunks are not held by window)."""
        if self._fixed:
            return self._fixed
        if self._window_micros is None or group_release is None:
            return self._released_poll if self._window_micros is None else WAITING_POLL_SECONDS
        now = event_micros(time.time())
        window_start = now - now % self._window_micros
        if group_release < window_start:
            return WAITING_POLL_SECONDS
        until_end = (window_start + self._window_micros - now) / 1e6
        return min(MID_WINDOW_POLL_SECONDS, until_end + _AFTER_WINDOW_END_SECONDS)
