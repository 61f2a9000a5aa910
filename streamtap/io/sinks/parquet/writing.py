"""What both ways of writing Parquet files share: the DoFn base with its thread pool, file queue,
retries and counts; the output of a published file; writing a list of chunks as one file.

write.py (a file per stream and window) and many_streams.py (files of many streams per
window) build on these. The files are written under temporary names and published in order by
publishing.FileQueue.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from streamtap.chunk import Chunk
from streamtap.io.sinks.activity import ERRORS, sink_activity
from streamtap.io.sinks.parquet.format import WRITE_OPTIONS, chunk_table, codec
from streamtap.io.sinks.parquet.publishing import FileQueue, QueuedFile, WriteRetry
from streamtap.io.sinks.parquet.storage import (
    fsync,
    is_remote,
    make_directory,
    open_for_writing,
    remote_root,
    temporary_name,
    unlink_quietly,
)

__all__ = ["COUNTS", "ROW_GROUP_BYTES", "WriteFilesFn", "outputs", "write_temporary"]

# What the status lines and the summary show per Parquet sink: files renamed into place, the
# chunks and payload bytes in them, and writes retried because the disk was full.
COUNTS = ("files_written", "chunks_written", "bytes_written", "write_retries")
# Row groups of about this many payload bytes keep readers' memory bounded on big windows.
ROW_GROUP_BYTES = 128 * 1024 * 1024
_GLOBAL_WINDOWS = (GlobalWindow(),)
# Files are written and fsync'ed by this many threads at once. A window of 1,000 live streams is
# 1,000 small files, and one fsync after the other (each waiting for its own journal commit) made
# the sink fall behind; concurrent fsyncs share commits. pyarrow and fsync release the GIL.
_WRITE_THREADS = 8


class WriteFilesFn(beam.DoFn):
    """Base of both writers: the thread pool, the per-bundle file queue, retries and counts."""

    # True for a writer whose input is in the global window (it assigns windows itself): it
    # outputs the paths there too (see outputs()).
    _outputs_in_global_window = False

    def __init__(self, path: str, compression: str, retry_seconds: float = 300.0, run: str = "",
                 endpoint_url: str | None = None, target_bytes: int = ROW_GROUP_BYTES):
        self._path = path
        self._target_bytes = target_bytes
        self._compression = compression
        self._retry_seconds = retry_seconds
        self._run = run
        self._endpoint_url = endpoint_url
        self._queue: FileQueue | None = None

    def setup(self) -> None:
        if is_remote(self._path):
            # The storage layer retries one operation up to a minute, WriteRetry the whole file
            # up to max_retry_seconds on top.
            remote_root(self._path, self._endpoint_url, min(60.0, self._retry_seconds))
        self._pool = ThreadPoolExecutor(_WRITE_THREADS, thread_name_prefix="streamtap-parquet")
        self._activity = sink_activity(f"parquet {self._path}", self._run, COUNTS)
        self._counters = {
            "files_written": Metrics.counter("streamtap", "parquet_files"),
            "chunks_written": Metrics.counter("streamtap", "parquet_chunks"),
            "bytes_written": Metrics.counter("streamtap", "parquet_bytes"),
            "write_retries": Metrics.counter("streamtap", "parquet_write_retries"),
        }
        self._retry = WriteRetry(self._retry_seconds, lambda: self._count("write_retries", 1))

    def start_bundle(self) -> None:
        if self._queue is not None:  # what a failed bundle left behind
            self._queue.abandon()
        self._queue = FileQueue(
            self._pool, self._retry, self._published, lambda: self._activity.add(ERRORS)
        )

    def _count(self, what: str, amount: int) -> None:
        self._counters[what].inc(amount)
        self._activity.add(what, amount)

    def _published(self, file: QueuedFile) -> None:
        """Counts a file renamed into place, and its chunks per stream (with their lag)."""
        self._count("files_written", 1)
        self._count("chunks_written", len(file.chunks))
        self._count("bytes_written", file.size)
        stream_ids = file.stream_ids or itertools.repeat(file.stream_id)
        for stream_id, (size, event_time) in zip(stream_ids, file.chunks):
            self._activity.wrote(stream_id, size, event_time)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        done = outputs(self._queue.drain(), self._outputs_in_global_window)
        self._queue = None
        return iter(done)

    def teardown(self) -> None:
        if self._queue is not None:
            self._queue.abandon()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)


def outputs(files: list[QueuedFile], global_window: bool = False) -> list[WindowedValue]:
    """What the transform outputs for files renamed into place: each one's path, in its window
    (global_window: in the global window, at the end of its window, for a writer whose input
    has no windows of its own; a WindowInto after it gives the paths their windows)."""
    if global_window:
        return [
            WindowedValue(file.final, file.window.max_timestamp(), _GLOBAL_WINDOWS)
            for file in files
        ]
    return [
        WindowedValue(file.final, file.window.max_timestamp(), (file.window,)) for file in files
    ]


def write_temporary(
    directory: str, name: str, rows: list[Chunk], compression: str,
    row_group_bytes: int = ROW_GROUP_BYTES,
) -> tuple[str, str]:
    """Writes `rows` to a hidden temporary file next to directory/name and fsyncs it.

    Returns (temporary path, final path); the caller renames. On failure nothing is left.
    """
    make_directory(directory)
    temporary = temporary_name(directory, name)
    try:
        write_table(temporary, rows, compression, row_group_bytes)
    except BaseException:
        unlink_quietly(temporary)
        raise
    return temporary, os.path.join(directory, name)


def write_table(path: str, rows: list[Chunk], compression: str,
                row_group_bytes: int = ROW_GROUP_BYTES) -> None:
    """Writes `rows` as one file (row groups of about `row_group_bytes`) and fsyncs it."""
    table = chunk_table(rows)
    largest = max(len(row.payload) for row in rows) or 1
    # pyarrow's own file writer on local disk (not a Python file object: no GIL per write
    # call), then fsync; in memory for remote storage.
    sink = open_for_writing(path)
    try:
        pq.write_table(
            table,
            sink,
            compression=codec(compression),
            row_group_size=max(1, row_group_bytes // largest),
            **WRITE_OPTIONS,
        )
    finally:
        sink.close()
    fsync(path)
