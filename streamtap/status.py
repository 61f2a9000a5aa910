"""Live per-stream status lines while a capture runs, and the summary at its end.

The readers live in the worker processes. On the local runners (Prism, FnApiRunner, Flink with
LOOPBACK workers) the workers are threads of this process, so the status reads the readers'
counters directly; on remote workers the same numbers are Beam metrics (streamtap namespace) in
the runner's UI.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, TextIO

from streamtap.io.hub import hub
from streamtap.io.reader import StreamStats
from streamtap.io.sinks.activity import all_sink_activity

__all__ = ["StatusPrinter", "summary_lines"]

# Past this many streams, a status report lists only the streams with problems.
_MAX_LISTED_STREAMS = 20


class StatusPrinter:
    """Prints a status line per stream every `interval` seconds until stopped."""

    def __init__(self, out: TextIO, interval: float):
        self._out = out
        self._interval = interval
        self._stopped = threading.Event()
        self._started = time.monotonic()
        self._last_bytes: dict[str, int] = {}
        self._last_time = self._started
        self._thread = threading.Thread(target=self._loop, name="streamtap-status", daemon=True)

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self._print()

    def _print(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last_time
        self._last_time = now
        readers = dict(hub().readers)
        clock = _clock(now - self._started)
        if not readers:
            self._out.write(f"[{clock}] no stream is read in this process yet\n")
            self._out.flush()
            return
        lines = []
        total_rate = 0.0
        for stream_id, reader in sorted(readers.items()):
            stats = reader.stats
            rate = (stats.bytes - self._last_bytes.get(stream_id, 0)) / max(elapsed, 1e-6)
            self._last_bytes[stream_id] = stats.bytes
            total_rate += rate
            if len(readers) <= _MAX_LISTED_STREAMS or stats.errors or stats.reconnects:
                lines.append(f"[{clock}] {stream_id:<16} {_rate(rate):>11}  {_counts(stats)}")
        if len(readers) > _MAX_LISTED_STREAMS:
            lines.insert(
                0,
                f"[{clock}] {len(readers)} streams, {_rate(total_rate)} in all; "
                "listing only streams with reconnects or errors",
            )
        lines += [f"[{clock}] {activity.line()}" for activity in all_sink_activity()]
        self._out.write("\n".join(lines) + "\n")
        self._out.flush()


def summary_lines(stream_ids: Iterable[str]) -> list[str]:
    """One line per stream of `stream_ids` this process read, then one per sink that counts
    what it did (streamtap.io.sinks.activity): totals at the end of a capture."""
    streams: dict[str, StreamStats] = dict(hub().finished)
    streams.update({stream_id: reader.stats for stream_id, reader in hub().readers.items()})
    return [
        f"{stream_id:<16} {streams[stream_id].bytes:>12} bytes  {_counts(streams[stream_id])}"
        for stream_id in sorted(stream_ids)
        if stream_id in streams
    ] + [activity.line() for activity in all_sink_activity()]


def _counts(stats: StreamStats) -> str:
    text = (
        f"chunks {stats.chunks}  reconnects {stats.reconnects}  "
        f"discontinuities {stats.discontinuities}  errors {stats.errors}  {stats.state}"
    )
    if stats.errors and stats.last_error:
        text += f"  last error: {stats.last_error}"
    return text


def _rate(bytes_per_second: float) -> str:
    for unit in ("B/s", "kB/s", "MB/s"):
        if bytes_per_second < 1000:
            return f"{bytes_per_second:.1f} {unit}"
        bytes_per_second /= 1000
    return f"{bytes_per_second:.1f} GB/s"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
