"""Builds the capture pipeline from a config: read streams, transform, window, write."""

from __future__ import annotations

from typing import Mapping

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.window import FixedWindows
from apache_beam.utils.timestamp import Duration

from streamtap.config import PipelineConfig
from streamtap.io.streams import ReadStreams

__all__ = ["build_capture", "resume_positions"]

# A chunk that reaches a window after the watermark passed it still gets written (as one more
# file of that window) for this long, instead of being dropped.
_ALLOWED_LATENESS = Duration(seconds=24 * 3600)


def build_capture(
    pipeline: beam.Pipeline,
    config: PipelineConfig,
    duration: float | None = None,
    bounded: bool = False,
    stop_file: str | None = None,
    start_positions: Mapping[str, tuple[int, int]] | None = None,
    parallelism: int = 1,
) -> dict[str, beam.PCollection]:
    """Adds the capture described by `config` to `pipeline`; returns each sink's output.

    start_positions: where to continue each stream (see `resume_positions`).
    parallelism: how many workers read streams in parallel (the default grouping follows it).
    """
    chunks = pipeline | "ReadStreams" >> ReadStreams(
        config.sources,
        config.chunk,
        config.read,
        duration=duration,
        bounded=bounded,
        stop_file=stop_file,
        start_positions=start_positions,
        parallelism=parallelism,
        release_by_window=config.window_seconds if config.releases_whole_windows() else None,
    )
    for index, transform in enumerate(config.transforms):
        label = f"Transform{index}{_camel(transform.type)}"
        chunks = chunks | label >> transform.transform(config)
    sinks = [sink.transform(config) for sink in config.sinks]
    own = _sinks_windowing_chunks(sinks, config) if bounded and not config.transforms else None
    if own is not None:
        windowed, sinks = chunks, own
    else:
        windowed = chunks | "Window" >> beam.WindowInto(
            FixedWindows(config.window_seconds), allowed_lateness=_ALLOWED_LATENESS
        )
    outputs = {}
    for sink, transform in zip(config.sinks, sinks):
        label = f"WriteTo{_camel(sink.type)}"
        if label in outputs:
            label = f"{label}{len(outputs)}"
        outputs[label] = windowed | label >> transform
    if not isinstance(pipeline.runner, FnApiRunner):
        _end_stage_with_an_output(list(outputs.values()))
    return outputs


def _sinks_windowing_chunks(
    sinks: list[beam.PTransform], config: PipelineConfig
) -> list[beam.PTransform] | None:
    """The sinks' transforms for chunks without windows, if every sink can window them itself
    (WriteChunksToParquet.own_windows: Parquet-only captures writing whole windows per bundle);
    else None, and the chunks go through WindowInto first.

    A step fewer per chunk: in a fast stream's capture (benchmark scenario 1) WindowInto was
    ~20% of the reading stage's per-chunk time. Bounded captures only, for now: the live
    captures (Prism) keep the WindowInto they were measured with.
    """
    own = [
        getattr(sink, "own_windows", lambda *_: None)(config.window_seconds, _ALLOWED_LATENESS)
        for sink in sinks
    ]
    return own if all(transform is not None for transform in own) else None


def _end_stage_with_an_output(sink_outputs: list[beam.PCollection]) -> None:
    """Sends what the sinks output (a record per Parquet file, nothing from Kafka) to a shuffle.

    Not on the FnApiRunner, which does not busy-wait (there it was three more transforms to
    build and a stage to run at the end of every capture).

    Why: Prism (2.77) busy-waits through every bundle of a stage that sends it no output. Its
    progress loop selects on the bundle's data-done channel, which such a stage closes at once
    (`stage.Execute`, prism/internal/stage.go). With the sinks fused into the reading step, that
    was most of Prism's CPU: ~0.3 cores at 1,000 radio streams, for a stage mostly waiting on
    fsync or Kafka acks. With an output, the channel closes only when the bundle ends.
    """
    (
        sink_outputs
        | "SinkResults" >> beam.Flatten()
        | "KeyedByNothing" >> beam.Map(lambda _: (b"", 1))
        | "EndOfStage" >> beam.GroupByKey()
    )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def resume_positions(config: PipelineConfig) -> dict[str, tuple[int, int]]:
    """Where each stream's capture in the first sink that can tell ended (I/O), if config.resume."""
    if not config.resume:
        return {}
    stream_ids = [source.id for source in config.sources]
    for sink in config.sinks:
        positions = sink.resume_positions(stream_ids)
        if positions:
            return positions
    return {}
