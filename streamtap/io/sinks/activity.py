"""What each sink of a run did in this process (records put, retried, throttled), for the status.

Sink writers run in the worker; on the local runners (Prism, FnApiRunner, Flink with LOOPBACK
workers) those are threads of `streamtap run`, so the status lines and the summary
(`streamtap.status`) read these counts directly. On remote workers the same numbers are Beam
counters in the runner's UI. A run's writers share one entry per sink; the first writer of a
later run in the same process (tests, Airflow) clears what the earlier run counted.
"""

from __future__ import annotations

import threading
import uuid

__all__ = ["SinkActivity", "all_sink_activity", "run_token", "sink_activity"]


class SinkActivity:
    """Counts of one sink, in a fixed order of names. Thread-safe."""

    def __init__(self, name: str, run: str, counts: tuple[str, ...]):
        self.name = name
        self.run = run
        self._counts = dict.fromkeys(counts, 0)
        self._lock = threading.Lock()

    def add(self, what: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[what] = self._counts.get(what, 0) + amount

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
