"""How `streamtap run` reports a capture that a sink failed: one line, not the runner's tracebacks.

A sink that cannot write (disk full after its retries, brokers gone for longer than allowed)
raises a SinkError, whose message says what failed, where and what to do. The runner reports
that one failure many times over: Beam's SDK harness prints its traceback to stderr and logs
it, Beam's DoFn runner logs it, and Prism logs the bundle and the job failing, each with the
whole traceback again (180-690 lines for a full disk). While a run lasts, `SinkErrorReporting`
holds those back, and `failure_line` finds the SinkError's message in the runner's error.
Failures of any other kind are shown as before.
"""

from __future__ import annotations

import logging
import re
import sys
import threading

from streamtap.errors import SinkError

__all__ = ["SinkErrorReporting", "failure_line"]

# A SinkError as the runner reports it: a traceback's last line, with Beam's step name appended.
_SINK_ERROR = re.compile(
    r"streamtap\.errors\.SinkError: (.+?)(?: \[while running '[^']*'\])?$", re.M
)
_MARK = "streamtap.errors.SinkError"
# Loggers of the runner whose ERROR records, once a SinkError failed a bundle, only repeat it
# ("bundle error", "stage.Execute aborting", "job failed", each with the traceback).
_RUNNER_LOGGERS = ("PrismRunner", "apache_beam", "root")


def failure_line(error: BaseException) -> str:
    """What to print for a failed pipeline: a sink's own one-line error when a SinkError is
    what failed it, else the runner's error."""
    text = f"{_MARK}: {error}" if isinstance(error, SinkError) else str(error)
    found = _SINK_ERROR.findall(text)
    return found[-1] if found else text


class SinkErrorReporting(logging.Filter):
    """While installed: drops the runner's log records and stderr tracebacks of a SinkError,
    and, once one was seen, the runner's ERROR records of the failing bundle and job."""

    def __init__(self) -> None:
        super().__init__()
        self._seen = threading.Event()
        self._stderr = None

    def install(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        self._stderr = sys.stderr
        sys.stderr = _QuietStream(sys.stderr, self._seen)

    def remove(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)
        if self._stderr is not None and isinstance(sys.stderr, _QuietStream):
            sys.stderr = self._stderr
        self._stderr = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if (record.exc_info and isinstance(record.exc_info[1], SinkError)) or (
            _MARK in record.getMessage()
        ):
            self._seen.set()
            return False
        runner = record.name.split(".")[0] in _RUNNER_LOGGERS
        return not (runner and self._seen.is_set())


class _QuietStream:
    """sys.stderr, less the tracebacks of a SinkError that Beam's SDK harness prints there."""

    def __init__(self, stream, seen: threading.Event):
        self._stream = stream
        self._seen = seen
        self._dropped = False

    def write(self, text: str) -> int:
        if _MARK in text:
            self._seen.set()
            self._dropped = True
            return len(text)
        if self._dropped and text == "\n":  # print()'s line end after the traceback
            self._dropped = False
            return len(text)
        self._dropped = False
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
