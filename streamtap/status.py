"""Live per-stream status lines while a capture runs, and the summary at its end.

The readers live in the worker processes. On the local runners (Prism, FnApiRunner, Flink with
LOOPBACK workers) the workers are threads of this process, so the status reads the readers'
counters directly; on remote workers the same numbers are Beam metrics (streamtap namespace) in
the runner's UI.

The lines are INFO records of the `streamtap.status` logger, as text or one JSON object per
stream (`--status-format json`); a stream the rate watch flags (streamtap.io.ratewatch) shows its
shortfall in its line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone

from streamtap.io.hub import hub
from streamtap.io.ratewatch import LOW, OK, STALLED, format_bytes, format_rate
from streamtap.io.sinks.activity import all_sink_activity
from streamtap.io.stream_state import StreamStats

__all__ = ["STATUS_FORMATS", "STATUS_LOGGER", "StatusPrinter", "stream_status", "summary_lines"]

#: The status lines are INFO records of this logger (one message per line). `streamtap run`
#: gives it a handler of its own on stdout, so they show at the default log level and a log
#: shipper or Airflow (which logs a task's stderr lines as warnings) reads them apart.
STATUS_LOGGER = "streamtap.status"
STATUS_FORMATS = ("text", "json")

# How a text status line names a stream the rate watch flags.
_FLAGS = {LOW: "LOW RATE", STALLED: "STALLED"}
# Past this many streams, a text report lists only the streams with problems.
_MAX_LISTED_STREAMS = 20

_LOGGER = logging.getLogger(STATUS_LOGGER)


class StatusPrinter:
    """Logs a status line per stream every `interval` seconds until stopped.

    format "text": `[00:00:10] radio1   16.0 kB/s  chunks 10 ...`; "json": one JSON object per
    stream (and per sink) and interval, with the same numbers (see stream_status()).
    """

    def __init__(self, interval: float, format: str = "text", logger: logging.Logger = _LOGGER):
        if format not in STATUS_FORMATS:
            raise ValueError(f"status format must be one of {STATUS_FORMATS}, got {format!r}")
        self._interval = interval
        self._format = format
        self._log = logger
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
            try:
                self._print()
            except Exception:  # a status line must never end the capture's status for good
                logging.getLogger(__name__).exception("status report failed")

    def report(self) -> list[dict]:
        """This interval's status of every stream read in this process (stream_status())."""
        now = time.monotonic()
        elapsed = now - self._last_time
        self._last_time = now
        readers = dict(hub().readers)
        report = []
        for stream_id, reader in sorted(readers.items()):
            stats = reader.stats
            rate = (stats.bytes - self._last_bytes.get(stream_id, 0)) / max(elapsed, 1e-6)
            self._last_bytes[stream_id] = stats.bytes
            report.append(stream_status(stream_id, stats, rate, now - self._started))
        return report

    def _print(self) -> None:
        report = self.report()
        clock = _clock(time.monotonic() - self._started)
        sinks = all_sink_activity()
        if self._format == "json":
            for entry in report:
                self._log.info("%s", json.dumps(entry))
            for activity in sinks:
                self._log.info("%s", json.dumps(
                    {"time": report[0]["time"] if report else _now(), "sink": activity.name,
                     **activity.counts()}
                ))
            return
        if not report:
            self._log.info("[%s] no stream is read in this process yet", clock)
            return
        lines = []
        listed = [
            entry for entry in report
            if len(report) <= _MAX_LISTED_STREAMS
            or entry["errors"] or entry["reconnects"] or entry["rate_state"] != OK
        ]
        if len(report) > _MAX_LISTED_STREAMS:
            total_rate = sum(entry["rate"] for entry in report)
            lines.append(
                f"[{clock}] {len(report)} streams, {format_rate(total_rate)} in all; "
                "listing only streams with reconnects, errors or a rate flag"
            )
        lines += [f"[{clock}] {status_text(entry)}" for entry in listed]
        lines += [f"[{clock}] {activity.line()}" for activity in sinks]
        for line in lines:
            self._log.info("%s", line)


def stream_status(stream_id: str, stats: StreamStats, rate: float, elapsed: float) -> dict:
    """One stream's status as a JSON-able dict: what a JSON status line holds and a text line
    shows (`rate`: bytes/s over the last interval)."""
    shortfall = stats.shortfall
    return {
        "time": _now(),
        "elapsed": round(elapsed, 3),
        "stream": stream_id,
        "rate": round(rate, 1),
        "bytes": stats.bytes,
        "chunks": stats.chunks,
        "reconnects": stats.reconnects,
        "discontinuities": stats.discontinuities,
        "errors": stats.errors,
        "state": stats.state,
        "last_error": stats.last_error or None,
        "expected_rate": stats.expected_rate,
        "rate_state": stats.rate_state,
        "shortfall": None if shortfall is None else {
            "state": shortfall.state,
            "since": datetime.fromtimestamp(shortfall.since, timezone.utc).isoformat(),
            "seconds": round(shortfall.seconds, 3),
            "missing_bytes": shortfall.missing_bytes,
            "rate": round(shortfall.rate, 1),
        },
    }


def status_text(entry: dict) -> str:
    """A stream_status() entry as a text status line (without the clock)."""
    flag = ""
    if entry["shortfall"] is not None:
        shortfall = entry["shortfall"]
        flag = f"{_FLAGS[shortfall['state']]} for {shortfall['seconds']:.1f} s"
        if shortfall["missing_bytes"] is not None:
            flag += f", {format_bytes(shortfall['missing_bytes'])} short"
        flag += "  "
    text = (
        f"{entry['stream']:<16} {format_rate(entry['rate']):>11}  {flag}chunks {entry['chunks']}  "
        f"reconnects {entry['reconnects']}  discontinuities {entry['discontinuities']}  "
        f"errors {entry['errors']}  {entry['state']}"
    )
    if entry["errors"] and entry["last_error"]:
        text += f"  last error: {entry['last_error']}"
    return text


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
