"""Writing chunks to Kafka: `WriteChunksToKafka`, one record per chunk (layout: record.py).

Delivery is at-least-once: the producer is idempotent (acks=all, retries on), a bundle finishes
only once the brokers acknowledged all of its records, and a record that fails for good fails the
bundle so the runner retries it. A retried bundle can write a chunk twice; readers drop the
duplicates by the chunk key (stream_id, session, seq). While the brokers are unreachable the
writer retries with backoff for up to the sink's `max_outage_seconds`.

Each record's timestamp is the chunk's event time (record.py). Counts: Beam counters
`kafka_records`, `kafka_bytes`, `kafka_retries` in the streamtap namespace (per stream too with
per-stream metrics), and the status lines and summary (`streamtap.io.sinks.activity`: records
and bytes acknowledged, per stream with their lag, and failed bundles).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from streamtap.chunk import Chunk
from streamtap.errors import SinkError
from streamtap.io.sinks.activity import ERRORS, run_token, sink_activity
from streamtap.io.sinks.kafka.client import open_client, unreachable
from streamtap.io.sinks.kafka.record import chunk_headers, record_timestamp_ms

__all__ = ["COUNTS", "WriteChunksToKafka", "producer_settings"]

# What the status lines and the summary show per Kafka sink: records and payload bytes the
# brokers acknowledged, and records sent again after a retriable failure.
COUNTS = ("records_written", "bytes_written", "records_retried")

log = logging.getLogger(__name__)

# process() flushes when this many payload bytes wait for acknowledgement, bounding memory when a
# runner hands over a large bundle (the bounded FnApiRunner passes whole PCollections).
_MAX_PENDING_BYTES = 32 * 1024 * 1024
_CONNECT_ATTEMPT_MS = 10_000
_REQUEST_TIMEOUT_MS = 30_000
_DELIVERY_TIMEOUT_MS = 120_000  # a record not acknowledged by then is resent by the writer
_MAX_BACKOFF_SECONDS = 30.0


class WriteChunksToKafka(beam.PTransform):
    """Writes a PCollection of Chunks (any windowing) to a Kafka topic, one record per chunk.

    Key: stream id; value: payload; headers: the other chunk fields (record.py).
    Unit of parallelism: one idempotent KafkaProducer per DoFn instance (worker thread).
    Delivery: at-least-once. Each bundle waits for acks=all of all its records; a record rejected
    for good (too large, not authorized) fails the bundle with the reason, and while the brokers
    are unreachable the writer retries with backoff for up to `max_outage_seconds`, then fails
    the bundle so the runner retries it. Readers drop duplicates by (stream_id, session, seq).

        WriteChunksToKafka(KafkaSink(bootstrap_servers="127.0.0.1:9092", topic="raw-streams"))
    """

    def __init__(self, sink, per_stream_metrics: bool = True, label: str | None = None):
        """
        Args:
          sink: the KafkaSink whose options to write with (every option lives there; it is
            validated here, without I/O, and ValueError lists every problem).
          per_stream_metrics: count per stream too (`<id>.kafka_records`, ...), besides the
            totals (`kafka_records`, `kafka_bytes`, `kafka_retries`).
          label: the transform's label.
        """
        super().__init__(label)
        errors = sink.validate(type(self).__name__)
        if errors:
            raise ValueError("; ".join(errors))
        self._sink = sink
        self._per_stream_metrics = per_stream_metrics

    def expand(self, chunks):
        return chunks | "WriteRecords" >> beam.ParDo(
            _WriteChunksFn(
                self._sink, run_token(chunks.pipeline),
                per_stream_metrics=self._per_stream_metrics,
            )
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self._sink.bootstrap_servers,
            "topic": self._sink.topic,
            "compression": self._sink.compression,
        }


def producer_settings(sink) -> dict[str, Any]:
    """The KafkaProducer settings for a KafkaSink, on top of its brokers and security."""
    return {
        "client_id": "streamtap-kafka-sink",
        "acks": "all",
        "enable_idempotence": True,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
        "compression_type": None if sink.compression == "none" else sink.compression,
        "linger_ms": sink.linger_ms,
        "batch_size": sink.batch_size,
        "max_request_size": sink.max_request_size,
        "bootstrap_timeout_ms": _CONNECT_ATTEMPT_MS,
        # Brokers that come back are found within ~5 s (kafka-python's default backs off to
        # 30 s between connection attempts).
        "reconnect_backoff_max_ms": 5000,
        "max_block_ms": 30_000,
        "request_timeout_ms": _REQUEST_TIMEOUT_MS,
        "delivery_timeout_ms": _DELIVERY_TIMEOUT_MS,
    }


_UNDECIDED = object()


class _WriteChunksFn(beam.DoFn):
    """Sends chunks with an idempotent producer; a bundle ends when all its records are acked."""

    def __init__(self, sink, run: str = "", *, per_stream_metrics: bool = True):
        self._sink = sink  # a KafkaSink: its repr hides the password
        self._per_stream_metrics = per_stream_metrics
        self._run = run
        self._producer = None

    def setup(self) -> None:
        self._counters: dict[str, Any] = {}
        self._activity = sink_activity(f"kafka {self._sink.topic}", self._run, COUNTS)
        self._pending: list[tuple[Any, Chunk]] = []
        self._pending_bytes = 0
        self._outage_since: float | None = None
        self._backoff = 1.0
        self._producer = self._connect()

    def start_bundle(self) -> None:
        self._pending = []
        self._pending_bytes = 0

    def process(self, chunk: Chunk):
        self._send(chunk)
        if self._pending_bytes >= _MAX_PENDING_BYTES:
            self._drain()
        return ()

    def finish_bundle(self) -> None:
        self._drain()

    def teardown(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            _close_producer(producer, timeout=10, where=self._where())

    # -- internals --

    def _where(self) -> str:
        return f"topic {self._sink.topic!r} at {self._sink.bootstrap_servers}"

    def _connect(self):
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        while True:
            attempt_started = time.monotonic()
            try:
                producer = open_client(
                    KafkaProducer,
                    self._sink.bootstrap_servers,
                    self._sink.security(),
                    **producer_settings(self._sink),
                )
                if self._outage_since is not None:
                    log.warning("reached Kafka at %s again", self._sink.bootstrap_servers)
                self._outage_since = None
                self._backoff = 1.0
                return producer
            except KafkaError as error:
                if not error.retriable:
                    self._activity.add(ERRORS)
                    raise SinkError(
                        f"cannot connect to Kafka at {self._sink.bootstrap_servers}: {error}"
                    ) from error
                self._wait_out(error, "connecting", since=attempt_started)

    def _wait_out(self, error: BaseException, doing: str, since: float | None = None) -> None:
        """Logs a retriable failure, sleeps with backoff; raises once the outage is too long.

        `since`: when the failed attempt began (the start of the outage if it is the first).
        """
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now if since is None else since
        elapsed = now - self._outage_since
        limit = self._sink.max_outage_seconds
        if limit is not None and elapsed >= limit:
            self._activity.add(ERRORS)
            raise SinkError(
                f"{unreachable(self._sink.bootstrap_servers, error)}; gave up {doing} after "
                f"{elapsed:.0f} s (max_outage_seconds={limit}); the bundle fails"
            ) from error
        log.error(
            "%s; still retrying %s (for %.0f s so far, next try in %.0f s)",
            unreachable(self._sink.bootstrap_servers, error),
            doing,
            elapsed,
            self._backoff,
        )
        time.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_SECONDS)

    def _send(self, chunk: Chunk) -> None:
        from kafka.errors import KafkaError

        while True:
            if self._producer is None:
                self._producer = self._connect()
            attempt_started = time.monotonic()
            try:
                future = self._producer.send(
                    self._sink.topic,
                    key=chunk.stream_id.encode("utf-8"),
                    value=bytes(chunk.payload),
                    headers=chunk_headers(chunk),
                    timestamp_ms=record_timestamp_ms(chunk),
                )
            except KafkaError as error:  # no metadata within max_block_ms
                if not error.retriable:
                    raise self._rejected(chunk, error, at_send=True) from error
                self._wait_out(error, "sending", since=attempt_started)
                continue
            self._pending.append((future, chunk))
            self._pending_bytes += len(chunk.payload)
            return

    def _drain(self) -> None:
        """Flushes and checks every pending record; resends the retriable failures."""
        while self._pending:
            started = time.monotonic()
            # Every record is decided within delivery_timeout_ms; the margin covers a request
            # in flight at that moment. Past it a record counts as lost and is sent again.
            deadline = time.monotonic() + (_DELIVERY_TIMEOUT_MS + _REQUEST_TIMEOUT_MS) / 1000 + 5
            self._flush(deadline)
            failed: list[Chunk] = []
            last_error: BaseException | None = None
            stuck = False
            for future, chunk in self._pending:
                error = self._outcome(future, deadline)
                if error is None:
                    self._count(chunk.stream_id, "kafka_records", 1)
                    self._count(chunk.stream_id, "kafka_bytes", len(chunk.payload))
                    self._activity.add("records_written")
                    self._activity.add("bytes_written", len(chunk.payload))
                    self._activity.wrote(chunk.stream_id, len(chunk.payload), chunk.event_time)
                    continue
                if error is _UNDECIDED:
                    stuck = True
                    error = _undecided_error(self._where())
                if not getattr(error, "retriable", False):
                    self._pending = []
                    self._reset_producer()
                    raise self._rejected(chunk, error) from error
                failed.append(chunk)
                last_error = error
                self._count(chunk.stream_id, "kafka_retries", 1)
                self._activity.add("records_retried")
            self._pending = []
            self._pending_bytes = 0
            if not failed:
                if self._outage_since is not None:
                    log.warning("Kafka at %s accepts writes again", self._sink.bootstrap_servers)
                self._outage_since = None
                self._backoff = 1.0
                return
            if stuck:
                # kafka-python can lose track of a batch that was in flight when its broker
                # died: its records never complete and every later flush() would wait for them.
                # A fresh producer (a new idempotent producer id) starts clean.
                log.warning(
                    "Kafka producer for %s has records without a delivery report after %.0f s; "
                    "replacing the producer and sending them again",
                    self._where(),
                    (_DELIVERY_TIMEOUT_MS + _REQUEST_TIMEOUT_MS) / 1000,
                )
                self._reset_producer()
            self._wait_out(last_error, f"sending {len(failed)} record(s)", since=started)
            for chunk in failed:
                self._send(chunk)

    def _flush(self, deadline: float) -> None:
        from kafka.errors import KafkaError

        while time.monotonic() < deadline:
            try:
                self._producer.flush(timeout=max(deadline - time.monotonic(), 0.001))
                return
            except KafkaError as error:
                # kafka-python 3's flush() returns early with "Future not done" when the sender
                # splits a batch the broker found too large, and raises KafkaTimeoutError at the
                # deadline. _outcome() checks each record either way.
                log.debug("Kafka producer flush for %s: %s", self._where(), error)
                time.sleep(0.01)

    def _outcome(self, future, deadline: float):
        """Waits until `deadline` for one record's delivery: None on success, else the error.

        Returns _UNDECIDED when the record has no outcome by then.
        """
        from kafka.errors import KafkaError

        if not future.is_done:
            try:
                future.get(timeout=max(deadline - time.monotonic(), 0.001))
            except KafkaError:
                pass  # a failure or the timeout: read below
        if not future.is_done:
            return _UNDECIDED
        return None if future.succeeded() else future.exception

    def _reset_producer(self) -> None:
        """Drops the producer after a fatal error: the next send starts with a fresh one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            _close_producer(producer, timeout=0, where=self._where())

    def _rejected(self, chunk: Chunk, error: BaseException, at_send: bool = False) -> SinkError:
        from kafka.errors import MessageSizeTooLargeError

        self._activity.add(ERRORS)
        what = f"chunk {chunk.stream_id} seq {chunk.seq} ({len(chunk.payload)} bytes)"
        if isinstance(error, MessageSizeTooLargeError) and at_send:
            return SinkError(
                f"{what} does not fit the producer's max_request_size="
                f"{self._sink.max_request_size} for {self._where()}: lower chunk.max_bytes or "
                "raise the sink's max_request_size (and the topic's max.message.bytes with it)"
            )
        if isinstance(error, MessageSizeTooLargeError):
            return SinkError(
                f"Kafka rejected {what} for {self._where()}: the record is larger than the "
                "topic's max.message.bytes (or the broker's message.max.bytes): lower "
                "chunk.max_bytes, or raise the topic's max.message.bytes "
                "(`streamtap validate` checks this before a run)"
            )
        return SinkError(f"Kafka rejected {what} for {self._where()}: {error}")

    def _count(self, stream_id: str, what: str, amount: int) -> None:
        """Counts `what` in all (`kafka_records`) and, with per-stream metrics, per stream
        (`<id>.kafka_records`)."""
        total = self._counters.get(what)
        if total is None:
            total = self._counters[what] = Metrics.counter("streamtap", what)
        total.inc(amount)
        if not self._per_stream_metrics:
            return
        name = f"{stream_id}.{what}"
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Metrics.counter("streamtap", name)
        counter.inc(amount)


def _close_producer(producer, timeout: float, where: str) -> None:
    """Closes a KafkaProducer, also one whose flush() cannot finish.

    kafka-python's close() flushes first and, when a batch never completes (see _drain), raises
    before it stops the sender thread; stop that thread directly then.
    """
    try:
        producer.close(timeout=timeout)
        return
    except Exception as error:  # noqa: BLE001 - closing must not mask the real failure
        log.debug("closing the Kafka producer for %s: %s; forcing it", where, error)
    try:
        sender = getattr(producer, "_sender", None)
        if sender is not None and sender.is_alive():
            sender.force_close()
        producer._closed = True  # its __del__ would otherwise try (and fail) to close it again
    except Exception as error:  # noqa: BLE001
        log.warning("could not close the Kafka producer for %s: %s", where, error)


def _undecided_error(where: str) -> BaseException:
    from kafka.errors import KafkaTimeoutError

    return KafkaTimeoutError(f"no delivery report for a record to {where} in time")
