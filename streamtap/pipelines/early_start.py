"""Starting the streams of a bounded in-process capture while its pipeline is still being built.

On the FnApiRunner in this process (the readers' hub, `streamtap.io.hub`, is this process's), a
capture's first ~0.2 s go to building the pipeline, translating it and starting the runner's
first bundles, and only then does the source SDF attach the readers and the first byte get read.
`start_readers` attaches every stream's reader at the very position the SDF's initial
restriction gives it (`_ReadStreamFn.initial_restriction`; tests/pipelines/test_capture.py checks
that the two agree), so the reading overlaps that start: when the SDF attaches, the hub hands it
the reader already running (`hub().attach` keeps a reader that can serve the position). On a fast
TCP stream (benchmark scenario 1) the first byte came 12-20 ms after run_capture started instead
of ~220 ms, and the first bundle found 21-36 MiB waiting (building the pipeline holds the GIL
most of that time).

Only where nothing else could read the stream: a bounded capture (a deadline or byte limit
ends it) on the FnApiRunner with its SDK harness in this process (no `--environment_type` but
EMBEDDED, `--direct_running_mode` in_memory or multi_threading). Elsewhere the SDK harness may
be another process, which would open a second connection.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from streamtap.config import PipelineConfig, SourceConfig
from streamtap.io.hub import hub
from streamtap.io.reader import StreamReader
from streamtap.io.stream_state import StreamPosition

__all__ = ["in_process", "initial_position", "start_readers", "stop_unclaimed"]

_IN_PROCESS_MODES = ("in_memory", "multi_threading")


def in_process(options: PipelineOptions) -> bool:
    """True if these options run the pipeline on the FnApiRunner with its SDK harness in this
    process (the one whose hub the source SDF attaches readers on)."""
    runner = options.view_as(StandardOptions).runner or ""
    if runner.rsplit(".", 1)[-1].lower() != "fnapirunner":
        return False
    environment = options.view_as(PortableOptions).environment_type
    if environment not in (None, "", "EMBEDDED"):
        return False
    return (options.view_as(DirectOptions).direct_running_mode or "in_memory") in _IN_PROCESS_MODES


def initial_position(
    source: SourceConfig,
    start_positions: Mapping[str, tuple[int, int]],
    deadline: float | None,
) -> StreamPosition:
    """Where a stream's capture starts: the position ReadStreams' initial restriction gives it."""
    next_seq, next_offset = start_positions.get(
        source.id, (0, getattr(source, "start_offset", 0) or 0)
    )
    end_offset = next_offset + source.max_bytes if source.max_bytes else None
    return StreamPosition(next_seq, next_offset, deadline, end_offset=end_offset)


def start_readers(
    config: PipelineConfig,
    duration: float | None,
    stop_file: str,
    start_positions: Mapping[str, tuple[int, int]],
) -> list[StreamReader]:
    """Attaches (and so starts) the reader of every stream of the capture; returns them.

    The deadline of a `duration` counts from now, when the capture was asked for.
    """
    deadline = time.time() + duration if duration else None
    window = config.window_seconds if config.releases_whole_windows() else None
    return [
        hub().attach(
            source, config.chunk, initial_position(source, start_positions, deadline),
            stop_file, window,
        )
        for source in config.sources
    ]


def stop_unclaimed(readers: list[StreamReader]) -> None:
    """Stops and forgets the early-started readers the pipeline left in the hub (it failed
    before its source finished them): they must not serve a later capture in this process."""
    for reader in readers:
        if hub().readers.get(reader.stream_id) is reader:
            reader.stop()
            hub().release(reader)
