"""Prometheus metrics of a running capture: `streamtap run ... --metrics-port 9108`.

Served in the Prometheus text format (prometheus_client) from a thread of `streamtap run`. Each
scrape reads what the status lines read: the readers of this process (streamtap.io.hub; on the
local runners, Prism, the FnApiRunner and Flink with LOOPBACK workers, every stream is read in
this process) and what the sinks did (streamtap.io.sinks.activity). Nothing is counted for the
metrics on the reading path: a scrape costs the capture nothing between scrapes.

Streams are a `stream` label, sinks a `sink` label ("kafka raw-streams"), never part of a metric
name. Streams read on remote workers (EXTERNAL environments) are not in this process: their
numbers are Beam metrics, which Flink reports (README: Metrics).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server

from streamtap.io.hub import hub
from streamtap.io.ratewatch import LOW, OK, STALLED
from streamtap.io.sinks.activity import ERRORS, LAG_BUCKETS, RETRIES, all_sink_activity
from streamtap.io.stream_state import StreamStats

__all__ = ["CaptureCollector", "MetricsServer", "serve_metrics"]

_LOGGER = logging.getLogger(__name__)

_RATE_STATES = (OK, LOW, STALLED)
# (metric, StreamStats field, help): the counters of every stream.
_STREAM_COUNTERS = (
    ("streamtap_stream_bytes", "bytes", "Bytes received from the source."),
    ("streamtap_stream_chunks", "chunks", "Chunks cut from the received bytes."),
    (
        "streamtap_stream_committed_bytes",
        "committed_bytes",
        "Payload bytes of the chunks the runner committed (handed on to the sinks).",
    ),
    (
        "streamtap_stream_committed_chunks",
        "committed_chunks",
        "Chunks the runner committed (handed on to the sinks).",
    ),
    ("streamtap_stream_sessions", "sessions", "Sessions (connections, opens) started."),
    ("streamtap_stream_reconnects", "reconnects", "Reconnect attempts."),
    (
        "streamtap_stream_discontinuities",
        "discontinuities",
        "Chunks marked as a discontinuity (bytes may be missing before them).",
    ),
    ("streamtap_stream_errors", "errors", "Session failures (each is retried)."),
    ("streamtap_stream_rate_flags", "rate_flags", "Times the rate watch flagged the stream."),
)


class CaptureCollector:
    """A prometheus_client collector of the streams in `stream_ids` and the run's sinks."""

    def __init__(self, stream_ids: Iterable[str]):
        self._stream_ids = set(stream_ids)

    def describe(self) -> list[Metric]:
        return []  # metrics are only known at a scrape (streams appear as they start)

    def collect(self) -> Iterator[Metric]:
        streams: dict[str, StreamStats] = {
            stream_id: stats
            for stream_id, stats in hub().finished.items()
            if stream_id in self._stream_ids
        }
        streams.update(
            (stream_id, reader.stats)
            for stream_id, reader in list(hub().readers.items())
            if stream_id in self._stream_ids
        )
        yield from _stream_metrics(streams)
        yield from _sink_metrics()


def _stream_metrics(streams: dict[str, StreamStats]) -> Iterator[Metric]:
    ordered = sorted(streams.items())
    for name, field, text in _STREAM_COUNTERS:
        family = CounterMetricFamily(name, text, labels=["stream"])
        for stream_id, stats in ordered:
            family.add_metric([stream_id], getattr(stats, field))
        yield family
    alert = GaugeMetricFamily(
        "streamtap_stream_rate_alert",
        "1 while the rate watch flags the stream (delivering under half its expected_rate, "
        "or no byte for two chunk intervals), else 0.",
        labels=["stream"],
    )
    state = GaugeMetricFamily(
        "streamtap_stream_rate_state",
        "The rate watch's state: 1 for the stream's current state (ok, low, stalled).",
        labels=["stream", "state"],
    )
    seconds = GaugeMetricFamily(
        "streamtap_stream_shortfall_seconds",
        "How long the current shortfall has lasted (0 while the stream is not flagged).",
        labels=["stream"],
    )
    missing = GaugeMetricFamily(
        "streamtap_stream_shortfall_bytes",
        "Bytes short of the expected rate (without one: of the stream's rate before it "
        "stalled) during the current shortfall (0 while not flagged).",
        labels=["stream"],
    )
    expected = GaugeMetricFamily(
        "streamtap_stream_expected_rate_bytes_per_second",
        "The stream's declared expected_rate (streams that declare one).",
        labels=["stream"],
    )
    for stream_id, stats in ordered:
        shortfall = stats.shortfall
        alert.add_metric([stream_id], 0 if stats.rate_state == OK else 1)
        for name in _RATE_STATES:
            state.add_metric([stream_id, name], 1 if stats.rate_state == name else 0)
        seconds.add_metric([stream_id], shortfall.seconds if shortfall else 0.0)
        missing.add_metric([stream_id], (shortfall.missing_bytes or 0) if shortfall else 0)
        if stats.expected_rate:
            expected.add_metric([stream_id], stats.expected_rate)
    yield from (alert, state, seconds, missing, expected)


def _sink_metrics() -> Iterator[Metric]:
    activities = all_sink_activity()
    chunks = CounterMetricFamily(
        "streamtap_sink_chunks", "Chunks the sink committed (acknowledged, published).",
        labels=["sink", "stream"],
    )
    payload = CounterMetricFamily(
        "streamtap_sink_bytes", "Payload bytes of the chunks the sink committed.",
        labels=["sink", "stream"],
    )
    last_lag = GaugeMetricFamily(
        "streamtap_sink_last_lag_seconds",
        "Seconds from the arrival of the latest committed chunk's first byte to its commit.",
        labels=["sink", "stream"],
    )
    retries = CounterMetricFamily(
        "streamtap_sink_retries", "Records sent again after a retriable failure.", labels=["sink"]
    )
    errors = CounterMetricFamily(
        "streamtap_sink_errors", "Failed writes that failed a bundle (the runner retries it).",
        labels=["sink"],
    )
    counts = CounterMetricFamily(
        "streamtap_sink_events",
        "Every count a sink keeps for its status line (records_put, records_throttled, ...).",
        labels=["sink", "event"],
    )
    lag = HistogramMetricFamily(
        "streamtap_sink_lag_seconds",
        "Seconds from the arrival of a chunk's first byte to the sink's commit of it.",
        labels=["sink"],
    )
    for activity in activities:
        for stream_id, (count, size, latest) in sorted(activity.streams().items()):
            chunks.add_metric([activity.name, stream_id], count)
            payload.add_metric([activity.name, stream_id], size)
            last_lag.add_metric([activity.name, stream_id], latest)
        values = activity.counts()
        retries.add_metric([activity.name], sum(
            value for event, value in values.items()
            if event == RETRIES or event.endswith(("_retried", "_retries"))
        ))
        errors.add_metric([activity.name], sum(
            value for event, value in values.items()
            if event == ERRORS or event.endswith("_errors")
        ))
        for event, value in values.items():
            counts.add_metric([activity.name, event], value)
        buckets, total = activity.lag_histogram()
        cumulative, running = [], 0
        for bound, count in zip([*map(str, LAG_BUCKETS), "+Inf"], buckets):
            running += count
            cumulative.append((bound, running))
        lag.add_metric([activity.name], cumulative, total)
    yield from (chunks, payload, last_lag, retries, errors, counts, lag)


class MetricsServer:
    """The HTTP server of the metrics (a daemon thread); close() stops it."""

    def __init__(self, server, thread: threading.Thread):
        self._server = server
        self._thread = thread
        self.host, self.port = server.server_address[:2]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(port: int, stream_ids: Iterable[str], host: str = "127.0.0.1") -> MetricsServer:
    """Serves the capture's metrics at http://host:port/metrics (port 0: any free port).

    Raises OSError when the address cannot be bound (the message names it).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CaptureCollector(stream_ids))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise OSError(
            error.errno, f"cannot serve metrics on {host}:{port}: {error.strerror or error}"
        ) from error
    metrics = MetricsServer(server, thread)
    _LOGGER.info("metrics at http://%s:%d/metrics", metrics.host, metrics.port)
    return metrics
