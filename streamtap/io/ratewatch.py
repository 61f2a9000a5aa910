"""The rate watch: is a stream delivering what it should? Pure: no socket, no event loop, no
thread, no clock (the caller passes the time), like `streamtap.io.cutting`.

A `RateWatch` is shown one stream's byte counter (`StreamStats.bytes`) every `period` seconds, a
quarter of the chunk interval (chunk.max_seconds), by the hub's event loop (`streamtap.io.hub`):
reading a stream costs nothing more than the counter it keeps anyway. It flags the stream

- **stalled**: no byte for two chunk intervals, with or without an expected rate. The counter is
  sampled every quarter interval, so a stall is flagged 1¾ to 2 intervals after the stream's last
  byte. A stream that has not delivered a byte two intervals after it started (unreachable,
  reconnecting) is stalled too.
- **low**: with an `expected_rate`, under half the expected bytes arrived in the last two chunk
  intervals. A stream that drops below half its rate shows it in that window within two intervals.

and clears the flag when the stream recovers: a stall once bytes arrive again (with an expected
rate, once they reach the rate a low stream must reach), a low rate once the last two intervals
hold at least 60% of the expected bytes (a stream hovering around half its rate does not flap).

Every flag carries its shortfall: since when (the stream's last byte for a stall, the start of
the window that was short for a low rate), how long that is, and how many bytes short of the
expected rate (or, without one, of the stream's own rate before it stalled) it is so far.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

__all__ = ["LOW", "OK", "STALLED", "RateChange", "RateWatch", "Shortfall", "log_rate_change"]

# The rate watch's flags (WARNING) and recoveries (INFO): `streamtap run` shows both by default.
_RATE_LOGGER = logging.getLogger("streamtap.ratewatch")

OK, LOW, STALLED = "ok", "low", "stalled"

#: Flagged low below this share of the expected rate (over two chunk intervals) ...
LOW_FRACTION = 0.5
#: ... and cleared at this share or more.
RECOVERED_FRACTION = 0.6
#: The watch samples the counter at least this far apart, whatever the chunk interval.
MIN_PERIOD = 0.05


@dataclass(frozen=True)
class Shortfall:
    """A stream's current shortfall (times in the caller's clock, epoch seconds).

    Attributes:
      state: LOW or STALLED.
      since: when it began: the stream's last byte (a stall), or the start of the window that was
        short (a low rate).
      seconds: how long it has lasted, at the last check.
      missing_bytes: bytes short of the reference rate over those seconds; None when there is no
        reference (no expected rate, and the stream never delivered).
      rate: bytes per second over the last two chunk intervals.
      expected_rate: the declared rate (bytes per second), or None.
    """

    state: str
    since: float
    seconds: float
    missing_bytes: int | None
    rate: float
    expected_rate: float | None

    def describe(self) -> str:
        """`STALLED for 6.0 s: no byte, 96.0 kB short`, `LOW RATE for 4.1 s: 3.2 kB/s of ...`."""
        if self.state == STALLED:
            text = f"STALLED for {self.seconds:.1f} s: no byte"
        else:
            text = (
                f"LOW RATE for {self.seconds:.1f} s: {format_rate(self.rate)} of "
                f"{format_rate(self.expected_rate or 0.0)} expected"
            )
        if self.missing_bytes is not None:
            text += f", {format_bytes(self.missing_bytes)} short"
        return text


@dataclass(frozen=True)
class RateChange:
    """What a check changed: `before` -> `after` (OK, LOW, STALLED), with the shortfall (the
    final one when the stream recovered)."""

    before: str
    after: str
    shortfall: Shortfall


class RateWatch:
    """The rate watch of one stream (see the module).

    Attributes:
      state: OK, LOW or STALLED.
      shortfall: the current Shortfall, None while OK.
      rate: bytes per second over the last two chunk intervals (once that much time has passed).
      flags: how many times the stream was flagged.
    """

    def __init__(
        self,
        interval: float,
        expected_rate: float | None = None,
        start: float = 0.0,
        start_bytes: int = 0,
    ):
        """
        Args:
          interval: the chunk interval (chunk.max_seconds), seconds.
          expected_rate: the stream's declared rate, bytes per second; None: only stalls flag.
          start: when the stream started (the caller's clock); its first byte is due within two
            intervals of it.
          start_bytes: the byte counter at `start`.
        """
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        if expected_rate is not None and expected_rate <= 0:
            raise ValueError(f"expected_rate must be > 0 bytes/s, got {expected_rate}")
        self.interval = interval
        self.expected_rate = expected_rate
        #: How often to call check(), in seconds.
        self.period = max(interval / 4, MIN_PERIOD)
        self._window = 2 * interval
        # The counter is seen to move up to a period after the byte came: flag a stall after
        # 2 intervals less a period of seen silence, so the flag comes within 2 intervals.
        self._stall_after = max(self._window - self.period, self.period)
        self._start = start
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(start, start_bytes)])
        self._last_bytes = start_bytes
        self._moved_at = start
        self._recent_rate: float | None = None
        self._since = start
        self._since_bytes = start_bytes
        self.state = OK
        self.shortfall: Shortfall | None = None
        self.rate = 0.0
        self.flags = 0

    def check(self, now: float, total_bytes: int) -> RateChange | None:
        """Takes the byte counter at `now`; returns the change of state, if any."""
        samples = self._samples
        samples.append((now, total_bytes))
        # Keep one sample at or before the window's start: the base of the window's rate.
        horizon = now - self._window
        while len(samples) > 1 and samples[1][0] <= horizon:
            samples.popleft()
        base_time, base_bytes = samples[0]
        full_window = base_time <= horizon
        if now > base_time:
            self.rate = (total_bytes - base_bytes) / (now - base_time)
        if total_bytes != self._last_bytes:
            self._last_bytes = total_bytes
            self._moved_at = now
            if full_window and self.state == OK:
                self._recent_rate = self.rate  # the reference of a stall without expected_rate

        state = OK
        if now - self._moved_at >= self._stall_after:
            state = STALLED
        elif self.expected_rate is not None and full_window:
            share = self.rate / self.expected_rate
            if share < LOW_FRACTION or (self.state != OK and share < RECOVERED_FRACTION):
                state = LOW
        before = self.state
        if before == OK and state != OK:
            self.flags += 1
            if state == STALLED:
                self._since, self._since_bytes = self._moved_at, total_bytes
            else:
                self._since, self._since_bytes = base_time, base_bytes
        self.state = state
        if state == before == OK:  # the common case: no Shortfall to build (4,000 a second at
            self.shortfall = None  # 1,000 streams, each a frozen dataclass)
            return None
        shortfall = self._shortfall(now, total_bytes, state if state != OK else before)
        self.shortfall = shortfall if state != OK else None
        if state == before:
            return None
        return RateChange(before, state, shortfall)

    def _shortfall(self, now: float, total_bytes: int, state: str) -> Shortfall:
        seconds = max(now - self._since, 0.0)
        reference = self.expected_rate if self.expected_rate is not None else self._recent_rate
        missing = None
        if reference is not None:
            missing = max(0, round(reference * seconds - (total_bytes - self._since_bytes)))
        return Shortfall(state, self._since, seconds, missing, self.rate, self.expected_rate)


def format_rate(bytes_per_second: float) -> str:
    """`16.0 kB/s`: decimal units, as the status lines show rates."""
    return format_bytes(bytes_per_second, "/s")


def format_bytes(count: float, suffix: str = "") -> str:
    """`96.0 kB`: decimal units."""
    for unit in ("B", "kB", "MB"):
        if abs(count) < 1000:
            return f"{count:.1f} {unit}{suffix}"
        count /= 1000
    return f"{count:.1f} GB{suffix}"


def log_rate_change(stream_id: str, change: RateChange) -> None:
    """Logs a change of a stream's rate state: a flag at WARNING, a recovery at INFO (the one
    side effect of this module; the reader calls it)."""
    shortfall = change.shortfall
    expected = (
        f"expected_rate {shortfall.expected_rate:g} B/s" if shortfall.expected_rate else
        "no expected_rate"
    )
    if change.after == OK:
        _RATE_LOGGER.info(
            "%s: rate watch: recovered; it was %s", stream_id, shortfall.describe()
        )
    else:
        _RATE_LOGGER.warning("%s: rate watch: %s (%s)", stream_id, shortfall.describe(), expected)

