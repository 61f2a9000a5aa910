"""When a group of streams is polled: the delay the reading SDF defers its remainder by.

Every poll walks every stream of the group (its reader, its next chunks, its watermark) and
rebuilds the group's restriction, so the number of polls is a cost of its own: at 1,000 radio
streams the polls were a quarter of the capture's CPU, and with nothing flowing nearly half.

- `read.poll_seconds` set: that, always.
- chunks released as they are cut: chunk.max_seconds, at most 1 s (measured at 100 radio streams
  to Kafka on Prism: 0.2 s -> 1 s polls took the capture from 0.26 to 0.16 cores; a poll faster
  than chunks are cut mostly finds nothing new).
- chunks held until their window closes (Parquet-only captures): nothing leaves mid-window but
  from a stream holding over its limit, so the group polls every QUIET_POLL_SECONDS while each
  of its streams holds little (radio, sensors: 160 kB in a 10-s window of 128 kbit/s), every
  MID_WINDOW_POLL_SECONDS once one holds more (a fast stream hands over what it holds past its
  limit, and must not wait long for that), once right after each window ends, and every
  WAITING_POLL_SECONDS while an ended window waits for a stream of the group to close it (or
  while the capture is stopping, so it drains soon). Windows leave as soon after their end as
  with a steady 0.2 s, at a tenth of its polls.
"""

from __future__ import annotations

import time

from streamtap.config import ChunkSettings
from streamtap.io.cutting import event_micros

__all__ = [
    "MID_WINDOW_POLL_SECONDS", "QUIET_HELD_BYTES", "QUIET_POLL_SECONDS", "WAITING_POLL_SECONDS",
    "PollSchedule",
]

MID_WINDOW_POLL_SECONDS = 1.0
QUIET_POLL_SECONDS = 3.0
# A group is quiet while no stream of it holds this much: even at 3 s between polls a stream
# must then grow by ~20 MB/s to reach the reader's buffer limit (64 MiB) before the next poll.
QUIET_HELD_BYTES = 256 * 1024
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

    def next(self, group_release: int | None, held_bytes: int = 0, stopping: bool = False) -> float:
        """Seconds to the next poll.

        group_release: the start (µs) of the earliest window a stream of the group has not
          closed yet (None: chunks are not held by window, or every stream has ended).
        held_bytes: the most bytes a stream of the group holds after this poll.
        stopping: the capture is stopping (Ctrl-C, a stop file).
        """
        if self._fixed:
            return self._fixed
        if self._window_micros is None:
            return self._released_poll
        if group_release is None or stopping:
            return WAITING_POLL_SECONDS
        now = event_micros(time.time())
        window_start = now - now % self._window_micros
        if group_release < window_start:
            return WAITING_POLL_SECONDS
        until_end = (window_start + self._window_micros - now) / 1e6
        mid_window = QUIET_POLL_SECONDS if held_bytes < QUIET_HELD_BYTES else MID_WINDOW_POLL_SECONDS
        return min(mid_window, until_end + _AFTER_WINDOW_END_SECONDS)
