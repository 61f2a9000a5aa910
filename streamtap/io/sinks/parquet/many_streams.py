"""`layout: many_streams`: files that each hold many streams of one window, cut at a target size.

The per-stream layout writes a file per stream and window: 1,000 radio streams with 10 s windows
make 8.6 million files a day, and every reader (Spark and Hive plan a task per file, the
NameNode keeps each in memory, S3 charges a request each) pays for it. Here a window of many
streams is gathered, in a Parquet-only capture from the bundles of the reading step without a
shuffle (WriteBundleOfStreamsFn), else by a GroupByKey (WriteWindowOfStreamsFn, one pane of
every stream); its chunks are sorted by (stream, seq), exact
redeliveries dropped, and cut into as few files as the sink's `target_file_size` allows, of
about equal size (a window of 2.2 times the target makes three files of 0.73 times it, not two
full ones and a small one). Streams are never split out of order: a stream that does not fit
goes on at the start of the next file of the window.

Files are named by their window and a digest of the (stream, seq) pairs they hold
(storage.shared_file_location): a retried bundle writes the same names, and a second run that
captures the same window again (a restart within a window) adds files beside the first run's.
Row groups hold about _ROW_GROUP_BYTES of payloads each, with statistics on stream_id, so a
reader of one stream (reassemble, resume) reads the row groups holding it, not whole files.
"""

from __future__ import annotations

import math
import operator
import os

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from streamtap.chunk import Chunk
from streamtap.io.sinks.parquet.publishing import QueuedFile
from streamtap.io.sinks.parquet.storage import shared_file_location
from streamtap.io.sinks.parquet.writing import WriteFilesFn, outputs, write_temporary

__all__ = ["WriteBundleOfStreamsFn", "WriteWindowOfStreamsFn", "cut_files"]

_ROW_GROUP_BYTES = 4 * 1024 * 1024
_BY_STREAM_AND_SEQ = operator.attrgetter("stream_id", "seq")


def cut_files(rows: list[Chunk], target_bytes: int) -> list[list[Chunk]]:
    """`rows` (sorted) cut into consecutive files of about equal payload bytes, as few as keep
    each near or under `target_bytes`: a row goes to the file whose share of the bytes holds
    its middle, so a file goes over its share by less than one row."""
    total = sum(len(row.payload) for row in rows)
    count = max(1, math.ceil(total / target_bytes))
    share = total / count
    files: list[list[Chunk]] = [[]]
    filled = 0
    for row in rows:
        middle = filled + len(row.payload) / 2
        if files[-1] and middle > share * len(files) and len(files) < count:
            files.append([])
        files[-1].append(row)
        filled += len(row.payload)
    return files


def _sorted_once(chunks) -> list[Chunk]:
    """The chunks by (stream, seq), each (stream, seq) once: a redelivered chunk has the same
    bytes as the first (a seq always comes with the same payload)."""
    rows = sorted(chunks, key=_BY_STREAM_AND_SEQ)
    return [
        row for row, before in zip(rows, [None, *rows])
        if before is None or (row.stream_id, row.seq) != (before.stream_id, before.seq)
    ]


class _StreamsFilesFn(WriteFilesFn):
    """Queues a window's chunks of many streams as files near the target size."""

    def _queue_window(self, chunks, window) -> None:
        rows = _sorted_once(chunks)
        for part in cut_files(rows, self._target_bytes) if rows else []:
            directory, name = shared_file_location(self._path, window, part)
            job = (directory, name, part, self._compression, _ROW_GROUP_BYTES)
            self._queue.add(QueuedFile(
                self._pool.submit(write_temporary, *job),
                lambda job=job: write_temporary(*job),
                os.path.join(directory, name),
                window,
                "",
                [(len(row.payload), row.event_time) for row in part],
                sum(len(row.payload) for row in part),
                stream_ids=[row.stream_id for row in part],
            ))


class WriteWindowOfStreamsFn(_StreamsFilesFn):
    """Writes one window (pane) of every stream, gathered by a GroupByKey, as files of many
    streams each.

    A bundle finishes only when all of its files are written and published in order; a failed
    write fails the bundle (the runner retries it; the names depend only on the content).
    """

    def process(self, keyed, window=beam.DoFn.WindowParam) -> list[WindowedValue]:
        _, chunks = keyed
        self._queue_window(chunks, window)  # Flink's empty final pane makes no file
        return outputs(self._queue.ready())


class WriteBundleOfStreamsFn(_StreamsFilesFn):
    """Input that comes a whole window at a time (a Parquet-only capture): a bundle's chunks of
    each window, of every stream the bundle carries, written as files of many streams, without a
    shuffle.

    Fused right after the reading step: a bundle is one poll of a group of streams
    (read.group_size, by default every stream of a worker), and once a window has ended the poll
    hands over that window of every stream in the group. A window's chunks are written at the
    end of the bundle, or once more than twice the target size of them are held (a window handed
    over in pieces, ~32 MiB per stream, or a bundle of several windows after a stall); a window
    split over bundles (a checkpoint, pieces) makes a few more files. The bundle completes only
    when its files are published, so a chunk is in a file before the runner commits the bundle
    that read it. A retried bundle re-reads the same chunks: the same names, or (with more
    chunks) other names beside the first attempt's, whose chunks are exact redeliveries that
    verify and reassemble drop. Each stream's chunks are published in seq order, none after a
    failed write: what resume finds is always a stream up to some chunk.
    """

    def start_bundle(self) -> None:
        super().start_bundle()
        # Per window: the chunks held, and their payload bytes. One dict lookup per chunk: a
        # window end of 3,000 streams hands over 30,000 chunks at once.
        self._windows: dict[object, _HeldWindow] = {}

    def process(self, chunk: Chunk, window=beam.DoFn.WindowParam) -> list[WindowedValue]:
        held = self._windows.get(window)
        if held is None:
            held = self._windows[window] = _HeldWindow()
        held.rows.append(chunk)
        held.payload_bytes += len(chunk.payload)
        if held.payload_bytes >= 2 * self._target_bytes:
            self._queue_window(self._windows.pop(window).rows, window)
        if self._queue.has_ready():
            return outputs(self._queue.ready())
        return []

    def finish_bundle(self):
        windows, self._windows = self._windows, {}
        for window, held in windows.items():
            self._queue_window(held.rows, window)
        return super().finish_bundle()


class _HeldWindow:
    """The chunks of one window a bundle holds, and their payload bytes."""

    __slots__ = ("rows", "payload_bytes")

    def __init__(self) -> None:
        self.rows: list[Chunk] = []
        self.payload_bytes = 0
