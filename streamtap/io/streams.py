"""ReadStreams: the Splittable DoFn behind every streamtap source.

Each configured source is one element; its restriction is a `StreamPosition` (next chunk seq, next
byte offset, deadline), so where a stream resumes after a checkpoint is explicit state, not a
counter buried in a loop. `process()` never waits for the network: it emits the chunks the
background reader (streamtap.io.runtime) has cut, claims each one, moves the watermark, and defers
the rest of the stream for a moment.

Delivery: exactly the bytes each session received, in order, at least once. A retried bundle
re-emits the same chunks (same key, same bytes). Bytes lost when a worker dies or a connection
drops are never hidden: the next chunk is marked `discontinuity`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Iterable, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from streamtap.chunk import Chunk
from streamtap.config import ChunkSettings, SourceConfig
from streamtap.io.runtime import StreamPosition, StreamReader, hub

__all__ = ["ReadStreams"]

_LOGGER = logging.getLogger(__name__)

# Claimed to end a restriction when its stream has finished (EOF, deadline, byte limit, stop).
END_OF_STREAM = "end-of-stream"
# The watermark of a finished stream: 9999-12-31, beyond any event time, below Beam's maximum.
_MAX_EVENT_TIME = 253402300799.0


class _StreamTracker(RestrictionTracker):
    """Claims chunks one by one, in seq order; splits only as a checkpoint."""

    def __init__(self, position: StreamPosition, bounded: bool):
        self._position = position
        self._bounded = bounded
        self._next_seq = position.next_seq
        self._next_offset = position.next_offset
        self._finished = False
        self._checkpointed = False

    def current_restriction(self) -> StreamPosition:
        return self._position

    def try_claim(self, position) -> bool:
        if self._finished or self._checkpointed:
            return False
        if position == END_OF_STREAM:
            self._finished = True
            return True
        seq, end_offset = position
        if seq != self._next_seq:
            raise ValueError(f"claimed seq {seq}, expected {self._next_seq}")
        self._next_seq = seq + 1
        self._next_offset = end_offset
        return True

    def try_split(self, fraction_of_remainder):
        # A stream has no "half of the rest": only checkpoint splits (fraction 0) make sense.
        if self._finished or self._checkpointed or fraction_of_remainder > 0:
            return None
        self._checkpointed = True
        start = self._position
        primary = dataclasses.replace(start, stop_seq=self._next_seq)
        residual = dataclasses.replace(
            start, next_seq=self._next_seq, next_offset=self._next_offset
        )
        self._position = primary
        return primary, residual

    def check_done(self) -> None:
        if not (self._finished or self._checkpointed):
            raise ValueError(
                f"stream restriction {self._position} ended without finishing or checkpointing"
            )

    def current_progress(self) -> RestrictionProgress:
        done = self._next_seq - self._position.next_seq
        remaining = 0 if (self._finished or self._checkpointed) else 1
        return RestrictionProgress(completed=done, remaining=remaining)

    def is_bounded(self) -> bool:
        return self._bounded


class _ReadStreamFn(beam.DoFn, RestrictionProvider):
    """Emits the chunks of one stream per element; bounded by a deadline, byte limit or EOF.

    It is its own RestrictionProvider, so the restriction logic sees the same settings.
    """

    def __init__(
        self,
        chunking: ChunkSettings,
        duration: float | None,
        poll_seconds: float,
        stop_file: str | None,
        bounded: bool,
        start_positions: Mapping[str, tuple[int, int]],
    ):
        self._chunking = chunking
        self._start_positions = dict(start_positions)
        self._poll_seconds = poll_seconds
        self._stop_file = stop_file
        self._duration = duration
        self._bounded = bounded
        self._counters: dict[str, dict[str, object]] = {}

    # --- RestrictionProvider ---

    def initial_restriction(self, source: SourceConfig) -> StreamPosition:
        # Runs on the worker when the capture starts: the deadline is wall-clock from then.
        deadline = time.time() + self._duration if self._duration else None
        next_seq, next_offset = self._start_positions.get(
            source.id, (0, getattr(source, "start_offset", 0) or 0)
        )
        end_offset = next_offset + source.max_bytes if source.max_bytes else None
        return StreamPosition(next_seq, next_offset, deadline, end_offset=end_offset)

    def create_tracker(self, position: StreamPosition) -> _StreamTracker:
        return _StreamTracker(position, self._bounded)

    def split(self, source, position) -> Iterable[StreamPosition]:
        yield position

    def restriction_size(self, source, position) -> int:
        return 1

    def truncate(self, source, position):
        # On drain the runner keeps the restriction; the stop request ends the stream.
        return position

    # --- DoFn ---

    def _metrics(self, stream_id: str) -> dict[str, object]:
        counters = self._counters.get(stream_id)
        if counters is None:
            counters = {
                name: Metrics.counter("streamtap", f"{stream_id}.{name}")
                for name in ("bytes", "chunks", "reconnects", "discontinuities", "errors")
            }
            counters["reported"] = {"reconnects": 0, "errors": 0}
            self._counters[stream_id] = counters
        return counters

    def process(
        self,
        source: SourceConfig,
        tracker=beam.DoFn.RestrictionParam(),
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()
        ),
    ):
        position: StreamPosition = tracker.current_restriction()
        reader = hub().attach(source, self._chunking, position, self._stop_file)
        metrics = self._metrics(source.id)
        seq = position.next_seq
        while True:
            chunk: Chunk | None = reader.chunk(seq)
            if chunk is None:
                break
            if not tracker.try_claim((chunk.seq, chunk.end_offset)):
                return
            metrics["bytes"].inc(len(chunk.payload))
            metrics["chunks"].inc()
            if chunk.discontinuity:
                metrics["discontinuities"].inc()
            yield beam.window.TimestampedValue(chunk, chunk.event_time)
            seq += 1
        self._report_stats(reader, metrics)
        if reader.finished(seq):
            if tracker.try_claim(END_OF_STREAM):
                hub().release(reader)
                watermark_estimator.set_watermark(Timestamp.of(_MAX_EVENT_TIME))
            return
        # Every stream of this process reports the lowest watermark of them all. Prism (2.77)
        # takes an SDF stage's output watermark from the residuals of the latest bundle only,
        # not from all parked residuals, so a stream's own watermark let it run ahead of streams
        # in other bundles, whose next chunks were then late for their windows (written as
        # extra files when the capture ended). Runners that track each residual lose nothing.
        watermark = Timestamp.of(min(reader.watermark(seq), hub().min_watermark()))
        current = watermark_estimator.current_watermark()
        if current is None or watermark > current:
            watermark_estimator.set_watermark(watermark)
        tracker.defer_remainder(Duration.of(self._poll_seconds))

    def _report_stats(self, reader: StreamReader, metrics: dict) -> None:
        # Reconnects and errors happen on the reader's thread; counters move only in process().
        reported = metrics["reported"]
        for name in ("reconnects", "errors"):
            current = getattr(reader.stats, name)
            if current > reported[name]:
                metrics[name].inc(current - reported[name])
                reported[name] = current


class _ReadUnboundedStreamFn(_ReadStreamFn):
    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        source: SourceConfig,
        tracker=beam.DoFn.RestrictionParam(),
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()
        ),
    ):
        yield from super().process(source, tracker, watermark_estimator)


class ReadStreams(beam.PTransform):
    """Reads configured streams as chunks. One element (one restriction) per stream.

    Unit of parallelism: a stream. Streams are spread over workers by a reshuffle; one stream is
    always read by one worker at a time.

    Args:
      sources: source configs (any mix of types), each with a unique id.
      chunking: when chunks are cut (max_bytes, max_seconds).
      duration: seconds after which every stream ends cleanly; None runs until stopped.
      bounded: declare the output bounded (batch runners). A bounded capture must end by itself:
        a duration, or byte limits / EOF on every source.
      poll_seconds: how long an idle stream waits before its next `process()` call, in seconds.
      stop_file: streams end cleanly when this file exists (stops captures on remote workers).
      start_positions: {stream_id: (next seq, next offset)} to continue an earlier capture; a
        regular file source continues reading at that offset.
    """

    def __init__(
        self,
        sources: Sequence[SourceConfig],
        chunking: ChunkSettings | None = None,
        duration: float | None = None,
        bounded: bool = False,
        poll_seconds: float = 0.2,
        stop_file: str | None = None,
        start_positions: Mapping[str, tuple[int, int]] | None = None,
    ):
        super().__init__()
        if not sources:
            raise ValueError("ReadStreams needs at least one source")
        ids = [source.id for source in sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream ids must be unique, got {ids}")
        if duration is not None and duration <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {duration}")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self._sources = list(sources)
        self._chunking = chunking or ChunkSettings()
        self._duration = duration
        self._bounded = bounded
        self._poll_seconds = poll_seconds
        self._stop_file = stop_file
        self._start_positions = dict(start_positions or {})

    def expand(self, pbegin):
        fn_class = _ReadStreamFn if self._bounded else _ReadUnboundedStreamFn
        fn = fn_class(
            self._chunking,
            self._duration,
            self._poll_seconds,
            self._stop_file,
            self._bounded,
            self._start_positions,
        )
        return (
            pbegin
            | "Sources" >> beam.Create(self._sources, reshuffle=False)
            | "SpreadStreams" >> beam.Reshuffle()
            | "ReadChunks"
            >> beam.ParDo(fn).with_output_types(Chunk)
        )
