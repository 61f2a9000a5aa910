"""Builds the capture pipeline from a config: read streams, transform, window, write."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import FixedWindows
from apache_beam.utils.timestamp import Duration

from streamtap.config import PipelineConfig
from streamtap.io.streams import ReadStreams

__all__ = ["build_capture"]

# A chunk that reaches a window after the watermark passed it still gets written (as one more
# file of that window) for this long, instead of being dropped.
_ALLOWED_LATENESS = Duration(seconds=24 * 3600)


def build_capture(
    pipeline: beam.Pipeline,
    config: PipelineConfig,
    duration: float | None = None,
    bounded: bool = False,
    stop_file: str | None = None,
    poll_seconds: float = 0.2,
) -> dict[str, beam.PCollection]:
    """Adds the capture described by `config` to `pipeline`; returns each sink's output."""
    chunks = pipeline | "ReadStreams" >> ReadStreams(
        config.sources,
        config.chunk,
        duration=duration,
        bounded=bounded,
        poll_seconds=poll_seconds,
        stop_file=stop_file,
    )
    for index, transform in enumerate(config.transforms):
        label = f"Transform{index}{_camel(transform.type)}"
        chunks = chunks | label >> transform.transform(config)
    windowed = chunks | "Window" >> beam.WindowInto(
        FixedWindows(config.window_seconds), allowed_lateness=_ALLOWED_LATENESS
    )
    outputs = {}
    for sink in config.sinks:
        label = f"WriteTo{_camel(sink.type)}"
        if label in outputs:
            label = f"{label}{len(outputs)}"
        outputs[label] = windowed | label >> sink.transform(config)
    return outputs


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
