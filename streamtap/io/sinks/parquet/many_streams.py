"""`layout: many_streams`: files that each hold many streams of one window, cut at a target size.

The per-stream layout writes a file per stream and window: 1,000 radio streams with 10 s windows
make 8.6 million files a day, and every reader (Spark and Hive plan a task per file, the
NameNode keeps each in memory, S3 charges a request each) pays for it. Here a GroupByKey gathers
a whole window (one pane) of every stream; its chunks are sorted by (stream, seq), exact
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
import os

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from streamtap.chunk import Chunk
from streamtap.io.sinks.parquet.publishing import QueuedFile
from streamtap.io.sinks.parquet.storage import shared_file_location
from streamtap.io.sinks.parquet.writing import WriteFilesFn, outputs, write_temporary

__all__ = ["WriteWindowOfStreamsFn", "cut_files"]

_ROW_GROUP_BYTES = 4 * 1024 * 1024


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
    rows = sorted(chunks, key=lambda chunk: (chunk.stream_id, chunk.seq))
    return [
        row for index, row in enumerate(rows)
        if index == 0 or (row.stream_id, row.seq) != (rows[index - 1].stream_id, rows[index - 1].seq)
    ]


class WriteWindowOfStreamsFn(WriteFilesFn):
    """Writes one window (pane) of every stream as files of many streams each.

    A bundle finishes only when all of its files are written and published in order; a failed
    write fails the bundle (the runner retries it; the names depend only on the content).
    """

    def process(self, keyed, window=beam.DoFn.WindowParam) -> list[WindowedValue]:
        _, chunks = keyed
        rows = _sorted_once(chunks)
        if not rows:  # Flink delivers the empty final pane Python windowing asks for
            return []
        for part in cut_files(rows, self._target_bytes):
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
        return outputs(self._queue.ready())
