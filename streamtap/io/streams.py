"""ReadStreams: the Splittable DoFn behind every streamtap source.

Streams are read in groups: each group is one element, and its restriction is a `GroupPosition`
(a `StreamPosition` per stream: next chunk seq, next byte offset, deadline), so where each stream
resumes after a checkpoint is explicit state, not a counter buried in a loop. The runner
schedules, checkpoints and spreads groups over workers; per-group rather than per-stream
bookkeeping is what lets one process hold a thousand streams (the runner's and the SDK's cost per
element and per poll was most of the CPU at 1,000 single-stream elements). `process()` never
waits for the network: it emits the chunks the background readers (streamtap.io.hub, .reader)
have cut, claims each one, moves the watermark, and defers the rest of the group for a moment.

Delivery: exactly the bytes each session received, in order, at least once. A retried bundle
re-emits the same chunks (same key, same bytes). Bytes lost when a worker dies or a connection
drops are never hidden: the next chunk is marked `discontinuity`.
"""

from __future__ import annotations

import math
import time
from typing import Iterable, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import create as create_windowed_value

from streamtap.chunk import Chunk
from streamtap.config import ChunkSettings, ReadSettings, SourceConfig, range_errors
from streamtap.io.cutting import event_micros
from streamtap.io.group_restriction import (
    END_OF_STREAM,
    GroupPosition,
    GroupPositionCoder,
    GroupTracker,
)
from streamtap.io.hub import hub, mark_ended, stop_requested
from streamtap.io.polling import PollSchedule
from streamtap.io.ratewatch import LOW, OK, STALLED
from streamtap.io.reader import StreamReader
from streamtap.io.stream_state import StreamPosition

__all__ = ["ReadStreams", "group_streams", "per_stream_metrics"]

# The source's elements start in the global window (its input is a Create).
_GLOBAL_WINDOWS = (GlobalWindow(),)
# The watermark of a finished group: 9999-12-31, beyond any event time, below Beam's maximum.
_MAX_EVENT_TIME = 253402300799.0
# Default grouping: at most this many streams per group (and one group per parallel reader).
_MAX_GROUP_SIZE = 1000
# Default for read.per_stream_metrics: per-stream Beam counters up to this many streams.
_PER_STREAM_METRICS_UP_TO = 50
_COUNTER_NAMES = ("bytes", "chunks", "reconnects", "discontinuities", "errors", "rate_flags")
# The rate watch's state as a number, for the per-stream gauge `<id>.rate_state`.
_RATE_STATE_VALUES = {OK: 0, LOW: 1, STALLED: 2}
# A bounded group that found nothing to emit pauses this long before deferring (see process()).
_BOUNDED_IDLE_PAUSE_SECONDS = 0.02
# When chunks are held until their window closes, a stream holding more than this many bytes
# releases them anyway (its window then has several files), so a fast stream never stalls on the
# reader's buffer limit.
_MAX_HELD_BYTES = 32 * 1024 * 1024


def group_streams(count: int, group_size: int | None, parallelism: int = 1) -> list[range]:
    """Splits stream indexes 0..count-1 into contiguous groups (see read.group_size).

    Default: one group per parallel reader (`parallelism`), more if a group would exceed
    1,000 streams. Every group costs the runner a residual and a bundle per poll: at 100
    streams on Prism, 8 groups took ~0.15 cores more than one.
    """
    if group_size is None:
        groups = min(count, max(parallelism, math.ceil(count / _MAX_GROUP_SIZE)))
        group_size = math.ceil(count / groups)
    return [range(first, min(first + group_size, count)) for first in range(0, count, group_size)]


def per_stream_metrics(reading: ReadSettings, streams: int) -> bool:
    """read.per_stream_metrics with its default filled in: on up to 50 streams (the sinks'
    per-stream counters follow it too)."""
    if reading.per_stream_metrics is None:
        return streams <= _PER_STREAM_METRICS_UP_TO
    return reading.per_stream_metrics


class _StreamCounters:
    """Beam counters: totals (`bytes`, ...) always, `<id>.bytes` etc. when per stream.

    Per-stream counters are optional because the Python SDK turns every counter a stage has ever
    touched into a MonitoringInfo on every bundle: at 1,000 streams that was a third of the SDK
    worker's time.
    """

    def __init__(self, per_stream: bool):
        self._per_stream = per_stream
        self._totals = {name: Metrics.counter("streamtap", name) for name in _COUNTER_NAMES}
        self._streams: dict[str, dict] = {}
        # Reconnects, errors and rate flags counted by each reader so far, to count what is new;
        # the rate state last reported per stream (gauges are set when it changes).
        self._reported: dict[str, dict[str, int]] = {}
        self._rate_states: dict[str, str] = {}

    def inc(self, stream_id: str, name: str, value: int = 1) -> None:
        self._totals[name].inc(value)
        if self._per_stream:
            counters = self._streams.get(stream_id)
            if counters is None:
                counters = self._streams[stream_id] = {
                    n: Metrics.counter("streamtap", f"{stream_id}.{n}") for n in _COUNTER_NAMES
                }
            counters[name].inc(value)

    def count_chunks(self, stream_id: str, chunks: int, payload_bytes: int,
                     discontinuities: int) -> None:
        """What one poll emitted of a stream (counted once per poll: a window of 1,000 streams
        is 10,000 chunks in one bundle, and each counter update costs)."""
        self.inc(stream_id, "bytes", payload_bytes)
        self.inc(stream_id, "chunks", chunks)
        if discontinuities:
            self.inc(stream_id, "discontinuities", discontinuities)

    def report_reader(self, reader: StreamReader) -> None:
        # Reconnects and errors happen on the reader's thread; counters move only in process().
        reported = self._reported.setdefault(
            reader.stream_id, {"reconnects": 0, "errors": 0, "rate_flags": 0}
        )
        for name in ("reconnects", "errors", "rate_flags"):
            current = getattr(reader.stats, name)
            if current > reported[name]:
                self.inc(reader.stream_id, name, current - reported[name])
                reported[name] = current
        # `<id>.rate_state` (0 ok, 1 low, 2 stalled): per stream only, like the other counters.
        state = reader.stats.rate_state
        if self._per_stream and self._rate_states.get(reader.stream_id) != state:
            self._rate_states[reader.stream_id] = state
            Metrics.gauge("streamtap", f"{reader.stream_id}.rate_state").set(
                _RATE_STATE_VALUES[state]
            )


class _ReadStreamFn(beam.DoFn, RestrictionProvider):
    """Emits the chunks of one group of streams per element (the element is the group's index).

    A group ends when each of its streams has ended: a deadline, byte limit, EOF or stop. It is
    its own RestrictionProvider, so the restriction logic sees the same settings.
    """

    def __init__(
        self,
        groups: Sequence[Sequence[SourceConfig]],
        chunking: ChunkSettings,
        reading: ReadSettings,
        duration: float | None,
        stop_file: str | None,
        bounded: bool,
        start_positions: Mapping[str, tuple[int, int]],
        release_by_window: float | None,
    ):
        self._groups = [list(group) for group in groups]
        self._release_by_window = release_by_window
        self._window_micros = int(release_by_window * 1e6) if release_by_window else None
        self._chunking = chunking
        self._polls = PollSchedule(reading.poll_seconds, chunking, release_by_window)
        self._per_stream_metrics = per_stream_metrics(reading, sum(map(len, self._groups)))
        self._start_positions = dict(start_positions)
        self._stop_file = stop_file
        self._duration = duration
        self._bounded = bounded
        self._counters: _StreamCounters | None = None

    # --- RestrictionProvider ---

    def initial_restriction(self, group: int) -> GroupPosition:
        # Runs on the worker when the capture starts: the deadline is wall-clock from then.
        deadline = time.time() + self._duration if self._duration else None
        positions = []
        for source in self._groups[group]:
            next_seq, next_offset = self._start_positions.get(
                source.id, (0, getattr(source, "start_offset", 0) or 0)
            )
            end_offset = next_offset + source.max_bytes if source.max_bytes else None
            positions.append(StreamPosition(next_seq, next_offset, deadline, end_offset=end_offset))
        return GroupPosition(tuple(positions))

    def restriction_coder(self) -> beam.coders.Coder:
        return GroupPositionCoder()

    def create_tracker(self, position: GroupPosition) -> GroupTracker:
        return GroupTracker(position, self._bounded)

    def split(self, group, position) -> Iterable[GroupPosition]:
        yield position

    def restriction_size(self, group, position) -> int:
        return 1

    def truncate(self, group, position):
        # On drain the runner keeps the restriction; the stop request ends the streams.
        return position

    # --- DoFn ---

    def process(
        self,
        group: int,
        tracker=beam.DoFn.RestrictionParam(),
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()
        ),
    ):
        if self._counters is None:
            self._counters = _StreamCounters(self._per_stream_metrics)
        counters = self._counters
        position: GroupPosition = tracker.current_restriction()
        watermarks = []
        emitted = 0
        readers = [
            # Held windows are also cut at their ends, so each is complete as soon as it ends.
            (index, source, start, hub().attach(
                source, self._chunking, start, self._stop_file, self._release_by_window
            ))
            for index, (source, start) in enumerate(zip(self._groups[group], position.streams))
            if start is not None
        ]
        group_release = self._group_release(readers)
        held_bytes = 0  # the most a stream still holds after this poll
        for index, source, start, reader in readers:
            seq = start.next_seq
            release_before = self._release_before(reader, group_release)
            released = reader.releasable(seq, release_before)
            if released:
                last = released[-1]
                if not tracker.try_claim((index, seq, last.end_offset, len(released))):
                    return
                released_bytes = discontinuities = 0
                for chunk in released:
                    # As a WindowedValue with its timestamp in µs: a TimestampedValue costs ~5 µs
                    # more per chunk in Beam (Timestamp objects, a window assignment).
                    yield create_windowed_value(
                        chunk, event_micros(chunk.event_time), _GLOBAL_WINDOWS
                    )
                    released_bytes += len(chunk.payload)
                    discontinuities += chunk.discontinuity
                seq += len(released)
                emitted += len(released)
                counters.count_chunks(source.id, len(released), released_bytes, discontinuities)
            else:
                released_bytes = 0
            counters.report_reader(reader)
            if reader.finished(seq):
                if not tracker.try_claim((index, END_OF_STREAM)):
                    return
                hub().release(reader)
                mark_ended(self._stop_file, source.id)
            else:
                watermarks.append(reader.watermark(seq))
                held_bytes = max(held_bytes, reader.retained_bytes() - released_bytes)
        if not watermarks:  # every stream of the group has ended
            watermark_estimator.set_watermark(Timestamp.of(_MAX_EVENT_TIME))
            return
        # Every group of this process reports the lowest watermark of all its streams. Prism
        # (2.77) takes an SDF stage's output watermark from the residuals of the latest bundle
        # only, not from all parked residuals, so a group's own watermark let it run ahead of
        # groups in other bundles, whose next chunks were then late for their windows (written
        # as extra files when the capture ended). Runners that track each residual lose nothing.
        watermark = Timestamp.of(min(min(watermarks), hub().min_watermark()))
        current = watermark_estimator.current_watermark()
        if current is None or watermark > current:
            watermark_estimator.set_watermark(watermark)
        if self._bounded and not emitted:
            # Batch runners (the FnApiRunner) run a deferred remainder again at once, whatever
            # the delay: without a pause a group waiting for data spins a core. A short one: a
            # fast stream's reader fills its buffer in a fraction of a poll.
            time.sleep(_BOUNDED_IDLE_PAUSE_SECONDS)
        tracker.defer_remainder(Duration.of(
            self._polls.next(group_release, held_bytes, stop_requested(self._stop_file))
        ))

    def _group_release(self, readers: list) -> int | None:
        """With windowed release: the start (µs) of the earliest window a stream of the group
        has not closed yet. Released for the whole group at once, a window of many streams
        reaches a sink (layout: many_streams) in one bundle, not over several polls."""
        horizons = self._window_micros and [
            event_micros(reader.horizon()) for *_, reader in readers if not reader.ended()
        ]
        return min(horizons) - min(horizons) % self._window_micros if horizons else None

    def _release_before(self, reader: StreamReader, group_release: int | None) -> int | None:
        """Chunks with event times (µs) from this on stay in the reader for now; None: none.

        Without windowed release, none stay. With it, a chunk leaves once its window has closed
        for every stream of its group (nothing cut later can fall into it), so a stream's window
        reaches the sinks in one bundle and a sink can write it as one file without a shuffle.
        A stream holding over _MAX_HELD_BYTES hands over what it has.
        """
        if reader.ended() or reader.retained_bytes() > _MAX_HELD_BYTES:
            return None
        return group_release


class _ReadUnboundedStreamFn(_ReadStreamFn):
    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        group: int,
        tracker=beam.DoFn.RestrictionParam(),
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(
            ManualWatermarkEstimator.default_provider()
        ),
    ):
        yield from super().process(group, tracker, watermark_estimator)


class ReadStreams(beam.PTransform):
    """Reads configured streams as chunks. One element (one restriction) per group of streams.

    Unit of parallelism: a group (read.group_size). Groups are spread over workers by a
    reshuffle; a stream is always read by one worker at a time.

    Args:
      sources: source configs (any mix of types), each with a unique id.
      chunking: when chunks are cut (max_bytes, max_seconds).
      reading: grouping, poll interval and per-stream metrics.
      duration: seconds after which every stream ends cleanly; None runs until stopped.
      bounded: declare the output bounded (batch runners). A bounded capture must end by itself:
        a duration, or byte limits / EOF on every source.
      stop_file: streams end cleanly when this file exists (stops captures on remote workers).
      start_positions: {stream_id: (next seq, next offset)} to continue an earlier capture; a
        regular file source continues reading at that offset.
      parallelism: how many workers read in parallel: the default grouping makes at least this
        many groups.
      release_by_window: a window length in seconds: each stream's chunks are then held until
        their fixed event-time window has closed for that stream, so each window of a stream
        comes out in one bundle (or in pieces of ~32 MiB for fast streams). For sinks that
        write a file per window without a shuffle; it adds up to a window of latency. Chunks
        are then also cut where a window ends, so a window is complete when it ends (every
        byte of a chunk arrived within its window).
    """

    def __init__(
        self,
        sources: Sequence[SourceConfig],
        chunking: ChunkSettings | None = None,
        reading: ReadSettings | None = None,
        duration: float | None = None,
        bounded: bool = False,
        stop_file: str | None = None,
        start_positions: Mapping[str, tuple[int, int]] | None = None,
        release_by_window: float | None = None,
        parallelism: int = 1,
    ):
        super().__init__()
        if not sources:
            raise ValueError("ReadStreams needs at least one source")
        ids = [source.id for source in sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream ids must be unique, got {ids}")
        if duration is not None and duration <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {duration}")
        reading = reading or ReadSettings()
        chunking = chunking or ChunkSettings()
        errors = range_errors(reading, "read") + range_errors(chunking, "chunk")
        if errors:
            raise ValueError("; ".join(errors))
        self._sources = list(sources)
        self._chunking = chunking
        self._reading = reading
        self._duration = duration
        self._bounded = bounded
        self._stop_file = stop_file
        self._start_positions = dict(start_positions or {})
        self._release_by_window = release_by_window
        self._parallelism = max(1, parallelism)

    def expand(self, pbegin):
        groups = [
            [self._sources[i] for i in indexes]
            for indexes in group_streams(len(self._sources), self._reading.group_size, self._parallelism)
        ]
        fn_class = _ReadStreamFn if self._bounded else _ReadUnboundedStreamFn
        fn = fn_class(
            groups,
            self._chunking,
            self._reading,
            self._duration,
            self._stop_file,
            self._bounded,
            self._start_positions,
            self._release_by_window,
        )
        return (
            pbegin
            | "Groups" >> beam.Create(range(len(groups)), reshuffle=False)
            | "SpreadGroups" >> beam.Reshuffle()
            | "ReadChunks" >> beam.ParDo(fn).with_output_types(Chunk)
        )
