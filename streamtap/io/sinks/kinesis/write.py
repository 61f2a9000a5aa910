"""WriteChunksToKinesis: every chunk as one Kinesis record, sent with PutRecords, none dropped.

How a bundle is written:

- Each chunk becomes one record (`envelope.py`), partition key = stream id (with
  `shards_per_stream: N`, an explicit hash key spreads the stream over N shards, `shards.py`).
- Records wait in one queue per target (stream, and spread position): a PutRecords call takes at
  most the first record of each queue, so a record that fails is sent again before any later
  chunk of its stream for that shard: every shard holds each stream's chunks in seq order.
  Calls carry up to 500 records and 5 MiB (data plus partition keys), the PutRecords limits.
- The per-shard rate limiter (`ratelimit.py`) admits a record only when its shard has room under
  1 MB/s and 1,000 records/s (the sink's shard_* settings); the others wait for the next call.
- A record the answer marks failed (ProvisionedThroughputExceeded, InternalFailure) and every
  record of a call that failed as a whole (throttled, 5xx, endpoint unreachable) is retried
  alone, after an exponential backoff with jitter of its own (0.1 s doubling to 5 s); records
  that succeeded are never sent again. Other errors (no such stream, access denied) fail the
  bundle at once, with the reason.
- The bundle finishes when every record is written. A record still failing `max_retry_seconds`
  after its first failure fails the bundle: the runner retries it and the source hands out the
  same chunks (at-least-once; `verify` and `reassemble` drop the repeats by their key).

Counts: Beam counters `kinesis.records_put`, `kinesis.bytes_put`, `kinesis.records_retried`,
`kinesis.records_throttled` in the streamtap namespace (per stream too, `<id>.kinesis.records_put`,
when per-stream metrics are on), and the status lines (`streamtap.io.sinks.activity`).
"""

from __future__ import annotations

import collections
import logging
import random
import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from streamtap.chunk import Chunk
from streamtap.io.sinks.activity import ERRORS, run_token, sink_activity
from streamtap.io.sinks.kinesis import envelope, shards
from streamtap.io.sinks.kinesis.client import (
    RETRIABLE_CODES,
    THROTTLE_CODES,
    describe_error,
    error_code,
    is_retriable,
    is_throttle,
    list_shards,
    make_client,
)
from streamtap.io.sinks.kinesis.ratelimit import shared_limiter

__all__ = ["COUNTS", "MAX_RECORD_BYTES", "WriteChunksToKinesis"]

log = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024  # data + partition keys of all records of a call
MAX_RECORD_BYTES = 1024 * 1024  # data + partition key of one record
COUNTS = ("records_put", "bytes_put", "records_retried", "records_throttled")

# process() starts sending once this many record bytes wait: bounds memory when a runner hands
# over a large bundle (the bounded FnApiRunner passes whole PCollections).
_SEND_AT_BYTES = 8 * 1024 * 1024
_INITIAL_BACKOFF_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 5.0
# A record answered from another shard than the map predicted means a reshard: list the shards
# again, at most this often.
_MAP_REFRESH_SECONDS = 5.0
_WARN_EVERY_SECONDS = 10.0


class WriteChunksToKinesis(beam.PTransform):
    """Writes a PCollection of Chunks (any windowing) to a Kinesis data stream, a record per chunk.

    Unit of parallelism: one boto3 client per DoFn instance (worker thread); the instances of
    a process share one per-shard rate limiter. Delivery: at-least-once, and within each shard
    a stream's chunks in seq order (see the module docstring); nothing is dropped: a record that
    cannot be written within the sink's max_retry_seconds fails the bundle.

        WriteChunksToKinesis(KinesisSink(stream="raw-streams", region="us-east-1"))
    """

    def __init__(self, sink, per_stream_metrics: bool = True, label: str | None = None):
        """
        Args:
          sink: the KinesisSink whose options to write with (every option lives there; it is
            validated here, without I/O, and ValueError lists every problem).
          per_stream_metrics: also count per stream (`<id>.kinesis.records_put`, ...).
          label: the transform's label.
        """
        super().__init__(label)
        errors = sink.validate(type(self).__name__)
        if errors:
            raise ValueError("; ".join(errors))
        self._sink = sink
        self._per_stream_metrics = per_stream_metrics

    def expand(self, chunks):
        # The token ties this pipeline's writers to its status entries (streamtap.status).
        run = run_token(chunks.pipeline)
        return chunks | "PutRecords" >> beam.ParDo(
            _PutRecordsFn(self._sink, self._per_stream_metrics, run)
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "stream": self._sink.stream,
            "region": self._sink.region or "(AWS chain)",
            "endpoint_url": self._sink.endpoint_url or "(AWS)",
            "shards_per_stream": self._sink.shards_per_stream,
        }


class _Record:
    """One chunk's record on its way: the bytes and where it stands with retries."""

    __slots__ = (
        "attempts",
        "data",
        "event_time",
        "explicit_hash_key",
        "first_failure",
        "hash_key",
        "last_error",
        "not_before",
        "payload_bytes",
        "seq",
        "shard",
        "size",
        "stream_id",
    )

    def __init__(self, chunk: Chunk, shards_per_stream: int):
        self.stream_id = chunk.stream_id
        self.seq = chunk.seq
        self.payload_bytes = len(chunk.payload)
        self.event_time = chunk.event_time
        self.data = envelope.encode(chunk)
        position = shards.target(chunk.seq, shards_per_stream)
        self.hash_key = shards.hash_key(chunk.stream_id, position, shards_per_stream)
        self.explicit_hash_key = str(self.hash_key) if shards_per_stream > 1 else None
        # Kinesis counts a record's data and its partition key against the size limits.
        self.size = len(self.data) + len(chunk.stream_id.encode("utf-8"))
        self.shard = ""
        self.attempts = 0
        self.first_failure: float | None = None
        self.not_before = 0.0
        self.last_error = ""

    def request(self) -> dict[str, Any]:
        entry = {"Data": self.data, "PartitionKey": self.stream_id}
        if self.explicit_hash_key is not None:
            entry["ExplicitHashKey"] = self.explicit_hash_key
        return entry


def _backoff(attempts: int) -> float:
    """Exponential backoff with jitter: half of the doubled delay fixed, half random."""
    delay = min(_MAX_BACKOFF_SECONDS, _INITIAL_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0))
    return delay / 2 + random.uniform(0, delay / 2)


class _PutRecordsFn(beam.DoFn):
    """Queues a bundle's records per target and sends them (see the module docstring)."""

    def __init__(self, sink, per_stream_metrics: bool, run: str):
        self._sink = sink
        self._per_stream_metrics = per_stream_metrics
        self._run = run
        self._client = None

    # -- DoFn lifecycle --

    def setup(self) -> None:
        sink = self._sink
        self._where = f"Kinesis stream {sink.stream!r} at {sink.endpoint_url or 'AWS'}"
        self._client = make_client(sink.region, sink.endpoint_url)
        self._limiter = shared_limiter(
            (sink.endpoint_url, sink.region, sink.stream),
            sink.shard_bytes_per_second,
            sink.shard_records_per_second,
        )
        self._map = shards.ShardMap([])
        self._map_listed = float("-inf")
        self._refresh_map()
        self._activity = sink_activity(f"kinesis {sink.stream}", self._run, COUNTS)
        self._totals = {name: Metrics.counter("streamtap", f"kinesis.{name}") for name in COUNTS}
        self._stream_counters: dict[str, dict[str, Any]] = {}
        self._call_not_before = 0.0
        self._call_failures = 0
        self._warned = float("-inf")
        self._queues: dict[tuple[str, int], collections.deque[_Record]] = {}
        self._queued_bytes = 0

    def start_bundle(self) -> None:
        # Records of a failed bundle are not kept: the runner retries that bundle whole.
        self._queues = {}
        self._queued_bytes = 0

    def process(self, chunk: Chunk):
        record = _Record(chunk, self._sink.shards_per_stream)
        if record.size > MAX_RECORD_BYTES:
            self._activity.add(ERRORS)
            raise ValueError(
                f"chunk {chunk.stream_id} seq {chunk.seq} makes a Kinesis record of {record.size} "
                f"bytes (payload {len(chunk.payload)}, envelope and partition key "
                f"{record.size - len(chunk.payload)}), over the {MAX_RECORD_BYTES}-byte record "
                "limit: lower chunk.max_bytes or shorten the tags"
            )
        key = (chunk.stream_id, shards.target(chunk.seq, self._sink.shards_per_stream))
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
        queue.append(record)
        self._queued_bytes += record.size
        while self._queued_bytes >= _SEND_AT_BYTES:
            self._send_round()
        return ()

    def finish_bundle(self) -> None:
        while self._queues:
            self._send_round()

    def teardown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as error:  # noqa: BLE001 - closing must not mask a real failure
                log.debug("closing the Kinesis client for %s: %s", self._sink.stream, error)

    # -- sending --

    def _send_round(self) -> None:
        """Sends one PutRecords call of what may go now, or waits until something may."""
        now = time.monotonic()
        if now < self._call_not_before:
            time.sleep(self._call_not_before - now)
            now = time.monotonic()
        batch: list[_Record] = []
        batch_bytes = 0
        wait = 1.0
        for queue in self._queues.values():
            record = queue[0]
            if record.not_before > now:
                wait = min(wait, record.not_before - now)
                continue
            if len(batch) == MAX_RECORDS_PER_CALL:
                break
            if batch_bytes + record.size > MAX_BYTES_PER_CALL:
                continue
            shard_id = self._map.shard_for(record.hash_key)
            delay = self._limiter.try_acquire(shard_id, record.size)
            if delay:
                wait = min(wait, delay)
                continue
            record.shard = shard_id
            batch.append(record)
            batch_bytes += record.size
        if batch:
            self._put(batch)
        else:
            time.sleep(max(wait, 0.0005))
        self._check_deadlines()

    def _put(self, batch: list[_Record]) -> None:
        sent_at = time.monotonic()
        try:
            response = self._client.put_records(
                StreamName=self._sink.stream, Records=[record.request() for record in batch]
            )
        except Exception as error:
            if not is_retriable(error):
                self._activity.add(ERRORS)
                raise RuntimeError(
                    f"{describe_error(error, self._sink.stream, self._sink.endpoint_url or 'AWS')}"
                    f" (writing {len(batch)} record(s)); the runner retries the bundle"
                ) from error
            code = error_code(error) or type(error).__name__
            throttled = is_throttle(error)
            for record in batch:
                self._failed(record, code, throttled, sent_at)
            self._call_failures += 1
            self._call_not_before = time.monotonic() + _backoff(self._call_failures)
            self._warn(
                f"PutRecords failed as a whole ({code}: {error}); retrying its "
                f"{len(batch)} record(s)"
            )
            return
        self._call_failures = 0
        results = response.get("Records", [])
        if len(results) != len(batch):
            self._activity.add(ERRORS)
            raise RuntimeError(
                f"{self._where} answered PutRecords of {len(batch)} records with "
                f"{len(results)} results; the runner retries the bundle"
            )
        failed, last_code = 0, ""
        for record, result in zip(batch, results):
            code = result.get("ErrorCode")
            if not code:
                self._written(record, result.get("ShardId", ""))
                continue
            if code not in RETRIABLE_CODES:
                self._activity.add(ERRORS)
                raise RuntimeError(
                    f"{self._where} rejected chunk {record.stream_id} seq {record.seq}: {code}: "
                    f"{result.get('ErrorMessage', '')}; the runner retries the bundle"
                )
            failed, last_code = failed + 1, code
            self._failed(record, code, code in THROTTLE_CODES, sent_at)
        if failed:
            self._warn(
                f"{failed} of {len(batch)} record(s) of a PutRecords call failed "
                f"(e.g. {last_code}); retrying them alone"
            )

    def _written(self, record: _Record, shard_id: str) -> None:
        key = (record.stream_id, shards.target(record.seq, self._sink.shards_per_stream))
        queue = self._queues[key]
        queue.popleft()  # the record: a call takes only the first record of each queue
        del self._queues[key]
        if queue:
            self._queues[key] = queue  # to the back: every target gets its turn in full calls
        self._queued_bytes -= record.size
        self._count(record.stream_id, "records_put", 1)
        self._count(record.stream_id, "bytes_put", record.payload_bytes)
        self._activity.wrote(record.stream_id, record.payload_bytes, record.event_time)
        if shard_id and record.shard and shard_id != record.shard:
            self._refresh_map()

    def _failed(self, record: _Record, code: str, throttled: bool, sent_at: float) -> None:
        record.attempts += 1
        if record.first_failure is None:
            record.first_failure = sent_at
        record.last_error = code
        record.not_before = time.monotonic() + _backoff(record.attempts)
        self._count(record.stream_id, "records_retried", 1)
        if throttled:
            self._count(record.stream_id, "records_throttled", 1)
            self._limiter.throttled(record.shard)

    def _check_deadlines(self) -> None:
        limit = self._sink.max_retry_seconds
        now = time.monotonic()
        for queue in self._queues.values():
            record = queue[0]
            if record.first_failure is not None and now - record.first_failure > limit:
                self._activity.add(ERRORS)
                raise RuntimeError(
                    f"{self._where}: chunk {record.stream_id} seq {record.seq} still not written "
                    f"{now - record.first_failure:.0f} s after its first failure "
                    f"({record.attempts} attempt(s), last error {record.last_error}; "
                    f"max_retry_seconds={limit:g}); failing the bundle so the runner retries it"
                )

    # -- bookkeeping --

    def _refresh_map(self) -> None:
        now = time.monotonic()
        if now - self._map_listed < _MAP_REFRESH_SECONDS:
            return
        self._map_listed = now
        try:
            self._map = shards.ShardMap(list_shards(self._client, self._sink.stream))
        except Exception as error:  # noqa: BLE001 - the writes themselves report the problem
            log.warning("listing the shards of %s failed: %s", self._where, error)

    def _count(self, stream_id: str, name: str, amount: int) -> None:
        self._totals[name].inc(amount)
        self._activity.add(name, amount)
        if self._per_stream_metrics:
            counters = self._stream_counters.get(stream_id)
            if counters is None:
                counters = self._stream_counters[stream_id] = {
                    n: Metrics.counter("streamtap", f"{stream_id}.kinesis.{n}") for n in COUNTS
                }
            counters[name].inc(amount)

    def _warn(self, text: str) -> None:
        """Logs retries at most every _WARN_EVERY_SECONDS at WARNING (the rest at DEBUG)."""
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY_SECONDS:
            self._warned = now
            log.warning("%s: %s", self._where, text)
        else:
            log.debug("%s: %s", self._where, text)
