"""When a group is polled: fixed, per chunk, or around window ends (streamtap.io.polling)."""

from __future__ import annotations

import pytest

from streamtap.config import ChunkSettings
from streamtap.io import polling
from streamtap.io.polling import PollSchedule

WINDOW = 10_000_000  # µs


def _at(monkeypatch, seconds: float) -> None:
    monkeypatch.setattr(polling.time, "time", lambda: seconds)


def test_a_set_poll_seconds_is_kept_whatever_the_windows(monkeypatch):
    _at(monkeypatch, 1000.5)
    assert PollSchedule(0.3, ChunkSettings(), 10.0).next(1000 * 1_000_000) == 0.3
    assert PollSchedule(0.3, ChunkSettings(), None).next(None) == 0.3


def test_chunks_released_as_cut_are_polled_per_chunk_at_most_every_second():
    assert PollSchedule(None, ChunkSettings(max_seconds=0.5), None).next(None) == 0.5
    assert PollSchedule(None, ChunkSettings(max_seconds=5.0), None).next(None) == 1.0


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (1000.0, 3.0),  # a window just began and every stream is in it
        (1006.0, 3.0),
        (1008.0, 2.05),  # the next poll comes just after the window's end
        (1009.99, 0.06),
    ],
)
def test_quiet_held_windows_are_polled_every_3_s_and_just_after_a_window_ends(
    monkeypatch, now, expected
):
    _at(monkeypatch, now)
    schedule = PollSchedule(None, ChunkSettings(), 10.0)
    assert schedule.next(1000 * 1_000_000, held_bytes=160_000) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("now", "expected"), [(1000.0, 1.0), (1009.5, 0.55)])
def test_a_group_with_a_stream_holding_more_is_polled_each_second(monkeypatch, now, expected):
    _at(monkeypatch, now)
    schedule = PollSchedule(None, ChunkSettings(), 10.0)
    held = polling.QUIET_HELD_BYTES
    assert schedule.next(1000 * 1_000_000, held_bytes=held) == pytest.approx(expected, abs=1e-6)


def test_a_stopping_capture_is_polled_quickly_so_it_drains_soon(monkeypatch):
    _at(monkeypatch, 1000.0)
    schedule = PollSchedule(None, ChunkSettings(), 10.0)
    assert schedule.next(1000 * 1_000_000, stopping=True) == polling.WAITING_POLL_SECONDS


def test_an_ended_window_a_stream_has_not_closed_yet_is_polled_for_quickly(monkeypatch):
    _at(monkeypatch, 1010.1)
    schedule = PollSchedule(None, ChunkSettings(), 10.0)
    assert schedule.next(1000 * 1_000_000) == polling.WAITING_POLL_SECONDS
    assert schedule.next(1010 * 1_000_000) == pytest.approx(3.0)
    assert schedule.next(None) == polling.WAITING_POLL_SECONDS  # every stream has ended
