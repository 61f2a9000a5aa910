"""The rate watch's rules on their own: no socket, no event loop, no clock.

Each test feeds a byte counter at the times the hub would (every `period`: a quarter of the
chunk interval) and checks when the stream is flagged, what the shortfall says, and when the
flag clears.
"""

from __future__ import annotations

import pytest

from streamtap.io.ratewatch import LOW, OK, STALLED, RateWatch


class Feed:
    """Drives a RateWatch as the hub does: a check every period, bytes at a given rate."""

    def __init__(self, watch: RateWatch):
        self.watch = watch
        self.now = 0.0
        self.bytes = 0
        self.changes = []  # (time, change)

    def run(self, seconds: float, rate: float) -> None:
        """`seconds` of checks while `rate` bytes/s arrive (whole bytes, as a counter moves)."""
        end = self.now + seconds
        exact = float(self.bytes)
        while self.now + self.watch.period <= end + 1e-9:
            self.now += self.watch.period
            exact += rate * self.watch.period
            self.bytes = int(exact)
            change = self.watch.check(self.now, self.bytes)
            if change is not None:
                self.changes.append((self.now, change))

    def flagged_at(self, state: str) -> float:
        return next(t for t, change in self.changes if change.after == state)


def test_a_steady_stream_at_its_expected_rate_is_never_flagged():
    feed = Feed(RateWatch(1.0, expected_rate=16_000))
    feed.run(60, rate=16_000)
    assert feed.changes == [] and feed.watch.state == OK
    assert feed.watch.rate == pytest.approx(16_000, rel=0.01)
    # Without an expected rate only stalls count: a slow stream is fine.
    feed = Feed(RateWatch(1.0))
    feed.run(60, rate=10)
    assert feed.changes == []


@pytest.mark.parametrize("interval", [0.4, 1.0, 2.5])
@pytest.mark.parametrize("expected", [None, 16_000])
def test_a_stall_is_flagged_within_two_chunk_intervals_of_the_last_byte(interval, expected):
    feed = Feed(RateWatch(interval, expected_rate=expected))
    feed.run(10 * interval, rate=16_000)
    last_byte = feed.now
    feed.run(5 * interval, rate=0)
    stalled = feed.flagged_at(STALLED)
    # Sampled every quarter interval: flagged 1.75 to 2 intervals after the last byte.
    assert 1.75 * interval - 1e-9 <= stalled - last_byte <= 2 * interval + 1e-9
    shortfall = feed.watch.shortfall
    assert shortfall.state == STALLED and shortfall.seconds == feed.now - shortfall.since
    if expected is None:
        assert shortfall.since == pytest.approx(last_byte)
        # Bytes short: the stream's own rate before it stalled, times the time.
        assert shortfall.missing_bytes == pytest.approx(16_000 * shortfall.seconds, rel=0.01)
    else:
        # Flagged low first (half the window empty), which is where the shortfall began.
        assert feed.changes[0][1].after == LOW and shortfall.since < last_byte
        delivered = feed.bytes - feed.watch._since_bytes
        assert shortfall.missing_bytes == pytest.approx(
            16_000 * shortfall.seconds - delivered, abs=2
        )
    assert "STALLED for" in shortfall.describe() and "kB short" in shortfall.describe()


def test_a_stalled_stream_without_expected_rate_clears_on_its_first_byte():
    feed = Feed(RateWatch(1.0))
    feed.run(5, rate=1000)
    feed.run(4, rate=0)
    assert feed.watch.state == STALLED and feed.watch.flags == 1
    feed.run(0.25, rate=1000)
    time, change = feed.changes[-1]
    assert (change.before, change.after) == (STALLED, OK) and time == pytest.approx(9.25)
    # The cleared change carries the final shortfall: ~4 s of 1000 B/s.
    assert change.shortfall.state == STALLED
    assert change.shortfall.seconds == pytest.approx(4.0, abs=0.3)
    assert change.shortfall.missing_bytes == pytest.approx(4000, rel=0.1)
    assert feed.watch.shortfall is None


def test_a_stream_that_never_delivers_is_stalled_with_an_unknown_shortfall():
    feed = Feed(RateWatch(1.0))
    feed.run(3, rate=0)
    assert feed.flagged_at(STALLED) <= 2.0
    assert feed.watch.shortfall.missing_bytes is None
    assert feed.watch.shortfall.describe().endswith("no byte")
    # With an expected rate the shortfall is known from the start.
    feed = Feed(RateWatch(1.0, expected_rate=1000))
    feed.run(3, rate=0)
    assert feed.watch.shortfall.missing_bytes == 3000


@pytest.mark.parametrize("share", [0.0001, 0.25, 0.45])
def test_a_rate_drop_below_half_is_flagged_low_within_two_intervals(share):
    feed = Feed(RateWatch(1.0, expected_rate=16_000))
    feed.run(10, rate=16_000)
    dropped = feed.now
    feed.run(4, rate=16_000 * share)
    low = feed.flagged_at(LOW)
    assert low - dropped <= 2.0 + 1e-9
    shortfall = feed.watch.shortfall
    assert shortfall.state == LOW
    assert shortfall.rate == pytest.approx(16_000 * share, rel=0.02, abs=2)
    assert shortfall.expected_rate == 16_000
    # Short by (expected - actual) per second since the start of the window that was short.
    missing = 16_000 * shortfall.seconds - (feed.bytes - shortfall_bytes_since(feed, shortfall))
    assert shortfall.missing_bytes == pytest.approx(missing, abs=2)
    assert "LOW RATE for" in shortfall.describe() and "16.0 kB/s expected" in shortfall.describe()


def shortfall_bytes_since(feed: Feed, shortfall) -> float:
    return feed.watch._since_bytes


def test_low_clears_at_sixty_percent_and_does_not_flap_around_half():
    feed = Feed(RateWatch(1.0, expected_rate=10_000))
    feed.run(10, rate=10_000)
    feed.run(5, rate=4_000)
    assert feed.watch.state == LOW
    feed.run(10, rate=5_500)  # above half, below 60%: still low, no flapping
    assert feed.watch.state == LOW and len(feed.changes) == 1
    feed.run(5, rate=10_000)
    assert feed.watch.state == OK
    assert [(c.before, c.after) for _, c in feed.changes] == [(OK, LOW), (LOW, OK)]
    # Recovered within two intervals of the rate coming back.
    assert feed.changes[-1][0] - 25 <= 2.0


def test_a_stall_with_an_expected_rate_recovers_through_low():
    feed = Feed(RateWatch(1.0, expected_rate=1000))
    feed.run(5, rate=1000)
    feed.run(5, rate=0)
    feed.run(5, rate=1000)
    path = [(c.before, c.after) for _, c in feed.changes]
    assert path[0] == (OK, LOW)  # half the window empty after one interval
    assert (LOW, STALLED) in path and path[-1][1] == OK
    assert feed.watch.flags == 1  # one shortfall, however its state changed
    final = feed.changes[-1][1].shortfall
    # From the start of the short window to recovery; ~5 s of 1000 B/s missing.
    assert final.missing_bytes == pytest.approx(5000, rel=0.15)


def test_nothing_is_flagged_low_before_a_whole_window_was_seen():
    feed = Feed(RateWatch(1.0, expected_rate=1_000_000))
    feed.run(1.5, rate=1000)  # far too slow, but less than two intervals since the start
    assert feed.changes == []
    feed.run(0.5, rate=1000)
    assert feed.watch.state == LOW


def test_irregular_and_frequent_checks_give_the_same_verdicts():
    # The hub sweeps at the shortest period of all its readers: a watch may be checked more often.
    watch = RateWatch(2.0, expected_rate=1000)
    now, total = 0.0, 0
    for _ in range(100):  # 10 s at 1000 B/s, checked every 0.1 s
        now += 0.1
        total += 100
        assert watch.check(now, total) is None
    while watch.state != STALLED:
        now += 0.1
        watch.check(now, total)
    assert 10 + 3.5 - 1e-9 <= now <= 10 + 4.0 + 1e-9


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="interval"):
        RateWatch(0)
    with pytest.raises(ValueError, match="expected_rate"):
        RateWatch(1.0, expected_rate=0)
