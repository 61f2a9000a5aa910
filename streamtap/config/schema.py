"""The config's shape: settings dataclasses and the bases every source, sink and transform extends.

Every setting is a dataclass field with a default and a one-line doc (`doc`), which errors and the
README's config reference (`streamtap.config.reference`) show. `validate(path)` methods check
values and return every problem with its key path; `streamtap.config.loader` builds these objects
from YAML.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from streamtap.chunk import Chunk
from streamtap.config.capacity import Figure, StreamLoad
from streamtap.config.units import BytesPerSecond
from streamtap.errors import Unreachable

__all__ = [
    "ChunkSettings",
    "ReconnectSettings",
    "ReadSettings",
    "ScheduleSettings",
    "SourceConfig",
    "SinkConfig",
    "TransformConfig",
    "PipelineConfig",
    "STREAM_ID_PATTERN",
    "doc",
    "range_errors",
]

# Stream ids become file names, Kafka keys and metric names: keep them to a safe alphabet.
STREAM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # use with fullmatch


def doc(
    text: str,
    default: Any = dataclasses.MISSING,
    *,
    min: float | None = None,
    max: float | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field with a one-line description (shown in errors and the config reference).

    min / max: the inclusive range of a number, checked by the loader for every config, so a
    value `validate` accepts works at run time (numbers are also always finite: no NaN or inf).
    """
    metadata = {"doc": text, "min": min, "max": max}
    if default is dataclasses.MISSING:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def range_errors(settings: Any, path: str) -> list[str]:
    """Values of a settings dataclass outside their declared range (doc(min=, max=))."""
    errors = []
    for spec in dataclasses.fields(settings):
        value = getattr(settings, spec.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = spec.metadata.get("min"), spec.metadata.get("max")
        where = f"{path}.{spec.name}" if path else spec.name
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{where}: must be a finite number, got {value}")
        elif (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                allowed = f"between {low:g} and {high:g}"
            else:
                allowed = f">= {low:g}" if low is not None else f"<= {high:g}"
            errors.append(f"{where}: must be {allowed}, got {value:g}")
    return errors


@dataclass(kw_only=True)
class ReconnectSettings:
    initial_delay: float = doc(
        "Seconds to wait before the first reconnect attempt.", 0.5, min=0.001, max=3600
    )
    max_delay: float = doc(
        "Upper bound in seconds of the exponential backoff.", 30.0, min=0.001, max=86400
    )

    def validate(self, path: str) -> list[str]:
        errors = []
        if self.max_delay < self.initial_delay:
            errors.append(
                f"{path}.max_delay: must be >= initial_delay ({self.initial_delay}), "
                f"got {self.max_delay}"
            )
        return errors


@dataclass(kw_only=True)
class ChunkSettings:
    max_bytes: int = doc(
        "A chunk is cut when it reaches this many bytes.", 65536, min=1, max=64 * 1024 * 1024
    )
    max_seconds: float = doc(
        "A chunk is cut this many seconds after its first byte arrived. In Parquet-only "
        "captures (chunks held until their window closes) also where its window ends.",
        1.0,
        min=0.001,
        max=3600,
    )
    align: str = doc(
        "Cut where the stream's own format allows, so that every chunk decodes alone: 'none' "
        "(where the limits fall), 'mp3' (MPEG audio Layer III frames), 'adts' (AAC ADTS "
        "frames), 'samples' (whole samples of the source's sample_bytes), or 'auto' (from the "
        "content type audio/mpeg, audio/aac, audio/aacp, or the source's sample size; none "
        "otherwise). Aligned chunks are tagged frames and audio_ms; bytes that are no frames, "
        "`unaligned` with the reason.",
        "none",
    )

    def validate(self, path: str) -> list[str]:
        modes = ("none", "auto", "mp3", "adts", "samples")
        if self.align not in modes:
            return [f"{path}.align: must be one of {', '.join(modes)}, got {self.align!r}"]
        return []


@dataclass(kw_only=True)
class ReadSettings:
    group_size: int | None = doc(
        "Streams per source element: the runner schedules, checkpoints and spreads over workers "
        "groups of streams, not single streams, so larger groups cost it less per stream. "
        "Default: one group per parallel worker (--parallelism, --sdk_worker_parallelism), "
        "at most 1,000 streams each.",
        None,
        min=1,
        max=1_000_000,
    )
    poll_seconds: float | None = doc(
        "How often a group hands its new chunks to the runner, in seconds. Longer polls cost "
        "less CPU and add up to this much latency. Default: chunk.max_seconds, at most 1 s "
        "(polling faster mostly finds no new chunk); when chunks are held until their window "
        "closes (Parquet-only captures), every 3 s mid-window (1 s once a stream of the group "
        "holds 256 KiB), just after each window ends and every 0.2 s until every stream of the "
        "group closed it or while the capture stops, so windows are written soon after they "
        "close.",
        None,
        min=0.001,
        max=60,
    )
    per_stream_metrics: bool | None = doc(
        "Beam counters per stream (<id>.bytes, <id>.chunks, ...) besides the totals (bytes, "
        "chunks, ...). Default: on up to 50 streams; above that they are off, because the "
        "Python SDK reports every counter on every bundle (the status lines keep per-stream "
        "numbers).",
        None,
    )


@dataclass(kw_only=True)
class ScheduleSettings:
    """`schedule:`: read only by the Airflow DAG (airflow/dags/streamtap_capture.py), which makes
    a DAG per config: each run a bounded capture on `runner`, then a verify task."""

    # Options the DAG sets itself from this config; a pipeline_options entry may not override them.
    RESERVED_OPTIONS: ClassVar[dict[str, str]] = {
        "runner": "use schedule.runner",
        "config": "the DAG passes this config's path",
        "duration": "use schedule.capture_seconds",
    }

    cron: str | None = doc(
        "Airflow schedule of the capture runs: a cron expression or a preset ('@hourly', "
        "'@daily', ...); null: runs are triggered by hand only.",
        "@hourly",
    )
    capture_seconds: float | None = doc(
        "Length of each run's bounded capture, in seconds. Default: the interval between runs "
        "less 5 minutes (half the interval when it is 10 minutes or less); required when the "
        "schedule has no regular interval.",
        None,
        min=1,
        max=366 * 86400,
    )
    retries: int = doc(
        "How often Airflow retries a failed capture task; a retry continues the capture "
        "(resume), so nothing is duplicated. The verify task is not retried: a gap stays a gap.",
        1,
        min=0,
        max=100,
    )
    runner: str = doc(
        "Beam runner of the capture: DirectRunner (Prism on the Airflow worker), FlinkRunner "
        "(with pipeline_options flink_master), ...",
        "DirectRunner",
    )
    pipeline_options: dict[str, str] = doc(
        "More Beam options of the capture, by name without '--' (flink_master: "
        "flink-jm:8081); 'true' passes a flag without a value.",
        default_factory=dict,
    )

    def validate(self, path: str) -> list[str]:
        errors = []
        if self.cron is not None and not self.cron.strip():
            errors.append(f"{path}.cron: give a cron expression or preset, or null for none")
        if not self.runner.strip():
            errors.append(f"{path}.runner: give a Beam runner, e.g. DirectRunner")
        for name in self.pipeline_options:
            if name in self.RESERVED_OPTIONS:
                errors.append(
                    f"{path}.pipeline_options.{name}: set by the DAG; "
                    f"{self.RESERVED_OPTIONS[name]}"
                )
            elif not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                errors.append(
                    f"{path}.pipeline_options.{name}: write the option name without dashes, "
                    "e.g. flink_master"
                )
        return errors


@dataclass(kw_only=True)
class SourceConfig:
    """Settings every source type has. Each source module subclasses it with its own fields."""

    type_name: ClassVar[str] = ""

    id: str = doc("Stream id: letters, digits, '.', '_', '-'; unique in the config.")
    type: str = doc("Source type: one of the `type:` sections below.", "")
    tags: dict[str, str] = doc("User tags copied into every chunk.", default_factory=dict)
    max_bytes: int | None = doc(
        "Stop this stream after this run captured this many bytes (bounded capture).",
        None,
        min=1,
        max=2**62,
    )
    expected_rate: BytesPerSecond | None = doc(
        "The stream's data rate, for `streamtap plan` and the rate watch: bytes/s, or with "
        "units: '128kbit/s', '2 Mbit/s', '16kB/s', '1MB/s', '1000 samples/s x 4 bytes'.",
        None,
        max=1e12,
    )
    on_eof: str | None = doc(
        "What to do when the data ends: 'stop' or 'reconnect'. Default: stop for files, "
        "reconnect for network streams.",
        None,
    )
    sample_bytes: int | None = doc(
        "Bytes per sample of the stream (4 for float32 values), for chunk.align samples or "
        "auto: chunks then hold whole samples. Synthetic sources know their own.",
        None,
        min=1,
        max=1_048_576,
    )
    reconnect: ReconnectSettings = doc(
        "Backoff between reconnect attempts.", default_factory=ReconnectSettings
    )

    def __post_init__(self) -> None:
        self.type = self.type or self.type_name

    def validate(self, path: str) -> list[str]:
        """Checks values; returns errors prefixed with `path`. Subclasses extend it."""
        errors = []
        if not STREAM_ID_PATTERN.fullmatch(self.id or ""):
            errors.append(
                f"{path}.id: {self.id!r} is not a safe stream id; use 1-128 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit (it becomes a file name and a "
                "Kafka key)"
            )
        if self.on_eof not in (None, "stop", "reconnect"):
            errors.append(f"{path}.on_eof: must be 'stop' or 'reconnect', got {self.on_eof!r}")
        errors += self.reconnect.validate(f"{path}.reconnect")
        return errors

    def declared_rate(self) -> tuple[float, str] | None:
        """(bytes per second, where that number comes from) if known without measuring."""
        if self.expected_rate is not None:
            return float(self.expected_rate), f"expected_rate {self.expected_rate:g} B/s"
        return None

    def connector(self):
        """Builds the Connector that reads this stream (runs on the worker)."""
        raise NotImplementedError(f"source type {self.type!r} has no connector")


@dataclass(kw_only=True)
class SinkConfig:
    """Settings every sink type has. Each sink module subclasses it with its own fields."""

    type_name: ClassVar[str] = ""

    #: URI schemes of the capture locations this sink's read-back serves for `streamtap verify`
    #: and `reassemble` ("kafka" for kafka://...; "" for a local path).
    location_schemes: ClassVar[tuple[str, ...]] = ()

    type: str = doc("Sink type: one of the `type:` sections below.", "")

    def __post_init__(self) -> None:
        self.type = self.type or self.type_name

    @classmethod
    def read_location(cls, location: str, stream_id: str | None = None) -> Iterable[Chunk]:
        """Every chunk stored at `location` (one of `location_schemes`), in any order, optionally
        of one stream only. Raises ValueError for a malformed location, OSError when unreadable."""
        raise NotImplementedError(f"sink type {cls.type_name!r} cannot read captures back")

    def validate(self, path: str) -> list[str]:
        return []

    def check_chunk_size(self, max_chunk_bytes: int, path: str) -> list[str]:
        """Errors if chunks of this size cannot be written (record size limits). No I/O."""
        return []

    def preflight(self, config: "PipelineConfig") -> list[str]:
        """Checks with I/O before a run (reachability, server-side size limits); returns errors.

        Called by `streamtap validate` and `streamtap run`, never while building a pipeline.
        Wrap a failure to reach the service in `Unreachable`: a run then starts and retries.
        """
        return []

    def resume_positions(self, stream_ids: list[str]) -> dict[str, tuple[int, int]]:
        """Where each stream's capture in this sink ended: {stream_id: (next seq, next offset)}.

        Lets a new run continue a capture instead of starting seq 0 again. I/O; called by
        `streamtap run`. Sinks that cannot tell return {}.
        """
        return {}

    def plan(self, loads: list[StreamLoad], config: "PipelineConfig") -> list[Figure]:
        """What this sink needs for these streams (`streamtap plan`): partitions, shards, files,
        each figure naming its limit. No I/O; `plan_live` checks the live service."""
        return []

    def plan_live(self, planned: list[Figure], config: "PipelineConfig") -> list[Figure]:
        """`streamtap plan`'s check of the live service against the planned figures (I/O; the
        default runs `preflight`: each of its errors is a problem). Skipped with --offline."""
        problems = self.preflight(config)
        if any(isinstance(problem, Unreachable) for problem in problems):
            return [Figure("", "live check", 0, "", f"not checked: {problems[0]}")]
        return [Figure("", "live check", len(problems), "problems", "preflight", problem=p)
                for p in problems]

    def wants_whole_windows(self) -> bool:
        """True if this sink writes best when each stream's window arrives in one bundle.

        When every sink says so, streams hand over their chunks window by window (see
        ReadStreams' release_by_window) and such a sink can write a window without a shuffle.
        """
        return False

    def transform(self, config: "PipelineConfig"):
        """Builds the PTransform that writes a windowed PCollection of chunks."""
        raise NotImplementedError(f"sink type {self.type!r} has no transform")


@dataclass(kw_only=True)
class TransformConfig:
    """A user transform applied to every chunk before the sinks."""

    type_name: ClassVar[str] = ""

    type: str = doc("Transform type.", "")

    def __post_init__(self) -> None:
        self.type = self.type or self.type_name

    def validate(self, path: str) -> list[str]:
        return []

    def transform(self, config: "PipelineConfig"):
        raise NotImplementedError(f"transform type {self.type!r} has no transform")


@dataclass(kw_only=True)
class PipelineConfig:
    sources: list[SourceConfig] = doc("The streams to capture.", default_factory=list)
    chunk: ChunkSettings = doc("How streams are cut into chunks.", default_factory=ChunkSettings)
    read: ReadSettings = doc(
        "How streams are handed to the runner (grouping, polling, metrics).",
        default_factory=ReadSettings,
    )
    window_seconds: float = doc(
        "Length of the fixed event-time windows sinks write.", 10.0, min=0.01, max=86400
    )
    resume: bool = doc(
        "Continue each stream's seq and offset from what the first sink already holds (Parquet, "
        "Kafka, Kinesis), so repeated runs into one capture stay one verifiable capture; a "
        "regular file continues at its byte offset.",
        True,
    )
    transforms: list[TransformConfig] = doc(
        "Transforms applied to chunks before the sinks.", default_factory=list
    )
    sinks: list[SinkConfig] = doc("Where chunks are written.", default_factory=list)
    schedule: ScheduleSettings = doc(
        "Scheduled captures in Airflow: read only by the DAG in airflow/dags/.",
        default_factory=ScheduleSettings,
    )

    def releases_whole_windows(self) -> bool:
        """True if streams hand over their chunks window by window (every sink wants it)."""
        return all(sink.wants_whole_windows() for sink in self.sinks)

    def validate(self) -> list[str]:
        errors = []
        if not self.sources:
            errors.append("sources: no usable source; at least one is needed")
        if not self.sinks:
            errors.append("sinks: no usable sink; at least one is needed")
        seen: dict[str, int] = {}
        for index, source in enumerate(self.sources):
            path = f"sources[{index}]"
            if source.id in seen:
                errors.append(
                    f"{path}.id: {source.id!r} is already used by sources[{seen[source.id]}]; "
                    "stream ids must be unique"
                )
            seen.setdefault(source.id, index)
        for index, sink in enumerate(self.sinks):
            errors += sink.check_chunk_size(self.chunk.max_bytes, f"sinks[{index}]")
        errors += self.schedule.validate("schedule")
        errors += self.chunk.validate("chunk")
        if self.chunk.align == "samples":
            for index, source in enumerate(self.sources):
                if not source.sample_bytes and source.type != "synthetic":
                    errors.append(
                        f"sources[{index}].sample_bytes: needed by chunk.align samples; set the "
                        "stream's bytes per sample (4 for float32) or use align auto"
                    )
        return errors
