"""What a capture's streams make of a Parquet sink (`streamtap plan`): ParquetSink.plan.

Bytes and files per hour and per day, and the average file, with a warning when small: many
small files slow every reader (Spark and Hive plan a task per file, HDFS keeps each one in the
NameNode's memory, S3 charges a request per file). No I/O.
"""

from __future__ import annotations

import math

from streamtap.config import PipelineConfig
from streamtap.config.capacity import Figure, StreamLoad

__all__ = ["SMALL_FILE_BYTES", "plan_files"]

# An average file under this size is a warning.
SMALL_FILE_BYTES = 8 * 2**20
# ReadStreams hands a stream's window over whole, or in pieces of this many bytes when it is
# faster (io/streams.py, _MAX_HELD_BYTES), and `files: auto` writes a file per piece.
_PIECE_BYTES = 32 * 2**20
_LONGEST_WINDOW = 86400.0  # window_seconds' upper bound


def plan_files(sink, loads: list[StreamLoad], config: PipelineConfig) -> list[Figure]:
    window = config.window_seconds
    flowing = [load for load in loads if load.rate > 0]
    bytes_per_hour = sum(load.rate for load in flowing) * 3600
    if sink.layout == "many_streams":
        window_bytes = bytes_per_hour / 3600 * window
        files_per_window = math.ceil(window_bytes / sink.target_file_size) if flowing else 0
        how = (
            f"files of every stream per {window:g} s window, of up to "
            f"{sink.target_file_size / 2**20:g} MiB (target_file_size)"
        )
    else:
        pieces = sink.files == "auto" and config.releases_whole_windows()
        files_per_window = sum(
            math.ceil(load.rate * window / min(_PIECE_BYTES, sink.target_file_size))
            if pieces else 1
            for load in flowing
        )
        how = (
            f"a file per stream and {window:g} s window"
            + (f", one more per {_PIECE_BYTES // 2**20} MiB of a stream's window" if pieces else "")
        )
    files_per_hour = files_per_window * 3600 / window
    figures = [
        Figure("", "bytes per hour", bytes_per_hour, "B",
               f"the streams' rates, before {sink.compression} compression (audio barely "
               "shrinks)"),
        Figure("", "bytes per day", bytes_per_hour * 24, "B", "24 hours of the above"),
        Figure("", "files per hour", files_per_hour, "files", how),
        Figure("", "files per day", files_per_hour * 24, "files", how),
    ]
    if files_per_hour:
        average = bytes_per_hour / files_per_hour
        figures.append(Figure(
            "", "average file", average, "B", "bytes per hour / files per hour",
            warning=_small_files(
                average, bytes_per_hour / 3600 / len(flowing), window, sink.layout
            ),
        ))
    return figures


def _small_files(average: float, stream_rate: float, window: float, layout: str) -> str:
    """The warning for an average file under SMALL_FILE_BYTES, with the remedy, or ""."""
    if average >= SMALL_FILE_BYTES:
        return ""
    text = (
        f"files average {average / 2**20:.2f} MiB, under {SMALL_FILE_BYTES // 2**20} MiB: small "
        "files slow Spark, Hive and HDFS (a task and a NameNode entry per file); "
    )
    if layout == "many_streams":
        total_rate = average / window
        needed = math.ceil(SMALL_FILE_BYTES / total_rate)
        if needed <= _LONGEST_WINDOW:
            return text + (
                f"raise window_seconds from {window:g} to at least {needed} (8 MiB per window "
                "at these rates), or compact the files later"
            )
        return text + "compact the files later (e.g. a daily Spark job)"
    needed = math.ceil(SMALL_FILE_BYTES / stream_rate)
    if needed <= _LONGEST_WINDOW:
        return text + (
            f"raise window_seconds from {window:g} to at least {needed} (8 MiB per stream and "
            "window at the average stream's rate), set layout: many_streams (files of every "
            "stream of a window), or compact the files later"
        )
    return text + (
        "even daily windows stay small at these rates: compact the files later (e.g. a daily "
        "Spark job that rewrites a day of each stream as one file)"
    )
