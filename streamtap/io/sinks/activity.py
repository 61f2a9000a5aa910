"""What each sink of a run did in this process (records put, retried, throttled), for the status.

Sink writers run in the worker; on the local runners (Prism, FnApiRunner, Flink with LOOPBACK
workers) those are threads of `streamtap run`, so the status lines and the summary
(`streamtap.status`) read these counts directly. On remote workers the same numbers are Beam
counters in the runner's UI. A run's writers share one entry per sink; the first writer of a
later run in the same process (tests, Airflow) clears what the earlier run counted.
"""

from __future__ import annotations

import bisect
import threading
import time
import uuid

from apache_beam.metrics import Metrics

__all__ = [
    "ERRORS",
    "LAG_BUCKETS",
    "RETRIES",
    "SinkActivity",
    "all_sink_activity",
    "run_token",
    "sink_activity",
]

#: Count names with a meaning across sinks (the Prometheus metrics streamtap_sink_retries_total
#: and streamtap_sink_errors_total): records sent again after a retriable failure (any count
#: named `*_retried` or `*_retries` adds to it), and failed writes that failed a bundle, which the
#: runner retries (any count named `errors` or `*_errors`).
RETRIES = "records_retried"
ERRORS = "errors"
#: Upper bounds in seconds of the lag histogram: from a chunk's first byte to its sink commit.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class SinkActivity:
    """Counts of one sink, in a fixed order of names. Thread-safe."""

    def __init__(self, name: str, run: str, counts: tuple[str, ...]):
        self.name = name
        self.run = run
        self._counts = dict.fromkeys(counts, 0)
        self._lock = threading.Lock()
        # Per stream: [chunks committed, payload bytes, lag of the latest one in seconds].
        self._streams: dict[str, list] = {}
        self._lag_buckets = [0] * (len(LAG_BUCKETS) + 1)
        self._lag_sum = 0.0
        # The same lags as a Beam distribution (`kafka.lag_ms`, ...) for the runner's metrics.
        self._lag_ms = Metrics.distribution("streamtap", f"{name.split()[0]}.lag_ms")

    def add(self, what: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[what] = self._counts.get(what, 0) + amount

    def wrote(self, stream_id: str, payload_bytes: int, event_time: float) -> None:
        """One chunk the sink committed (acknowledged, published): counted per stream, with
        its lag from arrival (its event time) to now. Call it in the writing DoFn's thread."""
        lag = max(time.time() - event_time, 0.0)
        bucket = bisect.bisect_left(LAG_BUCKETS, lag)
        with self._lock:
            entry = self._streams.get(stream_id)
            if entry is None:
                entry = self._streams[stream_id] = [0, 0, 0.0]
            entry[0] += 1
            entry[1] += payload_bytes
            entry[2] = lag
            self._lag_buckets[bucket] += 1
            self._lag_sum += lag
        self._lag_ms.update(int(lag * 1000))

    def streams(self) -> dict[str, tuple[int, int, float]]:
        """{stream id: (chunks committed, payload bytes, lag of the latest in seconds)}."""
        with self._lock:
            return {stream_id: tuple(entry) for stream_id, entry in self._streams.items()}

    def lag_histogram(self) -> tuple[list[int], float]:
        """(chunks per LAG_BUCKETS bucket, the last one above them all; sum of the lags)."""
        with self._lock:
            return list(self._lag_buckets), self._lag_sum

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def line(self) -> str:
        """`kinesis raw-streams  records put 120  retried 4  throttled 2 ...`"""
        counts = "  ".join(
            f"{name.replace('_', ' ')} {value}" for name, value in self.counts().items()
        )
        return f"{self.name:<16} {counts}"


_ACTIVITY: dict[str, SinkActivity] = {}
_LOCK = threading.Lock()
_CURRENT_RUN = {"run": ""}


def sink_activity(name: str, run: str, counts: tuple[str, ...]) -> SinkActivity:
    """The entry of sink `name` (e.g. "kinesis raw-streams") in run `run` (a token unique to
    one pipeline, `run_token`); the first entry of a new run drops those of the run before."""
    with _LOCK:
        if run != _CURRENT_RUN["run"]:
            _ACTIVITY.clear()
            _CURRENT_RUN["run"] = run
        activity = _ACTIVITY.get(name)
        if activity is None:
            activity = _ACTIVITY[name] = SinkActivity(name, run, counts)
        return activity


def run_token(pipeline) -> str:
    """A token unique to `pipeline`, the same for every sink in it (kept on the pipeline)."""
    token = getattr(pipeline, "_streamtap_run_token", None)
    if token is None:
        token = uuid.uuid4().hex
        pipeline._streamtap_run_token = token
    return token


def all_sink_activity() -> list[SinkActivity]:
    with _LOCK:
        return [_ACTIVITY[name] for name in sorted(_ACTIVITY)]
