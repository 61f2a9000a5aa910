"""`streamtap plan` for a Parquet sink: bytes and files per hour and day, worked by hand."""

from __future__ import annotations

import pytest

from streamtap.io.sinks.parquet import plan as parquet_plan
from streamtap.io.streams import _MAX_HELD_BYTES
from streamtap.planning import make_plan
from streamtap.plugins import parse_config

RADIO = 16_000  # 128 kbit/s in bytes per second


def _plan(sources, window_seconds=10, sinks=None, **sink):
    config = parse_config({
        "sources": sources,
        "window_seconds": window_seconds,
        "sinks": sinks or [{"type": "parquet", "path": "/tmp/streamtap-plan", **sink}],
    })
    return {f.what: f for f in make_plan(config, {}).figures if f.scope == "sinks[0] (parquet)"}


def _radios(count):
    return [{"id": f"radio{i}", "type": "http", "url": "http://127.0.0.1:1/x",
             "expected_rate": "128kbit/s"} for i in range(count)]


def test_ten_radios_in_10_s_windows_make_small_files_and_the_remedy_is_named():
    figures = _plan(_radios(10))
    # 10 x 16,000 B/s x 3,600 s = 576,000,000 bytes an hour, 24 times that a day.
    assert figures["bytes per hour"].value == 576_000_000
    assert figures["bytes per day"].value == 13_824_000_000
    # A file per stream and window: 10 x 360 windows an hour.
    assert figures["files per hour"].value == 3_600
    assert figures["files per day"].value == 86_400
    # 160,000 bytes a file (10 s of one radio): under 8 MiB. 8,388,608 / 16,000 = 524.3 s.
    average = figures["average file"]
    assert average.value == 160_000
    assert "files average 0.15 MiB, under 8 MiB" in average.warning
    assert "raise window_seconds from 10 to at least 525" in average.warning


def test_radios_in_10_minute_windows_make_files_of_9_6_mb():
    figures = _plan(_radios(10), window_seconds=600)
    assert figures["files per hour"].value == 60  # 10 streams x 6 windows
    assert figures["average file"].value == 9_600_000 and not figures["average file"].warning


def test_a_fast_stream_is_written_in_a_file_per_32_mib_of_its_window():
    assert parquet_plan._PIECE_BYTES == _MAX_HELD_BYTES  # the reader's hand-over pieces
    fast = [{"id": "fast", "type": "tcp", "address": "127.0.0.1:9", "expected_rate": "10MB/s"}]
    figures = _plan(fast)
    # 10 s x 10 MB/s = 100,000,000 bytes a window = 2.98 pieces of 32 MiB: 3 files a window.
    assert figures["files per hour"].value == 3 * 360
    assert figures["average file"].value == pytest.approx(36_000_000_000 / 1_080)
    assert not figures["average file"].warning
    # With another sink beside it, a window of a stream goes into one file after a shuffle.
    kafka = {"type": "kafka", "bootstrap_servers": "127.0.0.1:9092", "topic": "t"}
    figures = _plan(fast, sinks=[{"type": "parquet", "path": "/tmp/x"}, kafka])
    assert figures["files per hour"].value == 360


def test_streams_too_slow_even_for_daily_windows_are_told_to_compact():
    slow = [{"id": "s", "type": "tcp", "address": "127.0.0.1:9", "expected_rate": 50}]
    average = _plan(slow, window_seconds=3600)["average file"]
    # 50 B/s x 3,600 s = 180,000 bytes a file; 8 MiB needs 167,773 s, past a day.
    assert average.value == 180_000
    assert "even daily windows stay small" in average.warning and "compact" in average.warning


def test_a_thousand_radios_in_the_many_streams_layout_make_files_near_the_target():
    figures = _plan(_radios(1000), layout="many_streams", target_file_size="64MiB")
    # 1,000 x 16,000 B/s x 10 s = 160,000,000 bytes a window: 2.38 targets of 64 MiB, 3 files.
    assert figures["files per hour"].value == 3 * 360
    assert figures["files per day"].value == 25_920  # the per-stream layout: 8,640,000
    assert figures["average file"].value == pytest.approx(160_000_000 / 3)
    assert not figures["average file"].warning
    per_stream = _plan(_radios(1000))
    assert per_stream["files per day"].value == 8_640_000
    assert "set layout: many_streams" in per_stream["average file"].warning


def test_few_slow_streams_in_the_many_streams_layout_are_told_to_widen_the_window():
    average = _plan(_radios(2), layout="many_streams")["average file"]
    # 2 x 16,000 B/s x 10 s = 320,000 bytes a window; 8 MiB needs 262.1 s of both.
    assert average.value == 320_000
    assert "raise window_seconds from 10 to at least 263 (8 MiB per window" in average.warning
