"""Writing chunks to Parquet: `WriteChunksToParquet`, files per event-time window and stream.

Two ways of grouping chunks into files (the sink's `files`):

- per bundle (`files: auto` when every sink of the capture is Parquet with `files: auto`: the
  reading step then hands each stream's chunks over a whole window at a time, ReadStreams'
  release_by_window): no shuffle. The writer runs fused right after the reading step, where each
  stream's chunks pass in seq order (one stream is read by one SDF element); it collects them per
  (stream, window) and writes a file when a chunk of another window of that stream arrives, when
  a file reaches the sink's target_file_size, and at the end of the bundle for what is left: one
  file per window and stream, more for a stream whose window is handed over in pieces (faster than
  ~32 MiB per window) or split by a checkpoint. In bounded captures the chunks come without
  windows (no WindowInto before it: a step fewer per chunk) and the writer gives each its fixed
  window from its event time itself (own_windows()). When a bundle ends with many small files (a
  window of many streams closing), helper processes write them (writer_processes.py).
  `verify`, `reassemble` and resume read any number of files per window.
- per window (`files: per_window`, or a capture with other sinks too): a GroupByKey on (stream,
  window) gathers each window's chunks, one file per window and stream (plus one per late pane).
  Without whole windows the per-bundle path would write a file per poll: on the FnApiRunner,
  which runs a deferred SDF again at once, a slow stream got a file per chunk.

Both are the per-stream layout. `layout: many_streams` writes files of many streams each
(many_streams.py), the same two ways: per bundle from whole windows, or after a GroupByKey of
a window of every stream.

Each file is written under a temporary name and published by a rename (storage.py); on HDFS
or S3 it is encoded in memory and published through `streamtap.io.storage` (whole or not at
all), and a store that cannot be reached is retried like a full disk. Its name is
derived from its contents (window start, first seq): a retried bundle rewrites the same files.
Files are renamed in the order they were started (a stream's files in seq order), and a failed
write stops the renames after it, so the files of a stream on disk always end at a chunk
boundary with nothing missing before it, which is what resume relies on. A write that finds the
disk full is retried for a while (publishing.py); one that fails for good fails the bundle with a
SinkError of one line. Counts of what was renamed into place (files, chunks, payload bytes) are
Beam counters `parquet_files`, `parquet_chunks`, `parquet_bytes` and the status lines' and
summary's (`streamtap.io.sinks.activity`).
"""

from __future__ import annotations

import contextlib
import copy
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.transforms.window import FixedWindows, IntervalWindow
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from streamtap.chunk import Chunk
from streamtap.io.cutting import event_micros
from streamtap.io.sinks.activity import run_token
from streamtap.io.sinks.parquet.format import (
    SCHEMA,
    WRITE_OPTIONS,
    chunk_columns,
    chunk_table,
    codec,
)
from streamtap.io.sinks.parquet.many_streams import WriteBundleOfStreamsFn, WriteWindowOfStreamsFn
from streamtap.io.sinks.parquet.publishing import QueuedFile
from streamtap.io.sinks.parquet.storage import (
    file_location,
    fsync,
    is_remote,
    make_directory,
    open_for_writing,
    split_location,
    temporary_name,
    unlink_quietly,
    write_back,
)
from streamtap.io.sinks.parquet.writer_processes import FileJob, WriterProcesses, write_batch
from streamtap.io.sinks.parquet.writing import WriteFilesFn, outputs, write_temporary

__all__ = ["FILE_MODES", "LAYOUTS", "WriteChunksToParquet"]

FILE_MODES = ("auto", "per_window")
LAYOUTS = ("per_stream", "many_streams")
# Per-bundle files: the chunks of a file being filled go to the writing thread in row groups of
# this many bytes (a file is closed at the sink's target_file_size).
_BATCH_BYTES = 8 * 1024 * 1024
# A bundle that ends with at least this many small files still open (a window of many streams
# closing) has them written by helper processes, this many files per batch (writer_processes.py:
# threads of this process queued for the GIL behind the readers).
_PROCESS_MIN_FILES = 32
_PROCESS_BATCH_FILES = 16
_WRITER_PROCESSES = 2


class WriteChunksToParquet(beam.PTransform):
    """Writes windowed chunks to Parquet files; outputs the path of every file written.

    Unit of parallelism: a DoFn instance per worker thread, writing on a pool of threads (and,
    for many small files at once, helper processes). Delivery: a bundle completes only when
    every file of it is fsync'ed and renamed; a write that finds the disk full is retried for
    up to the sink's max_retry_seconds, and a failed write fails the bundle (SinkError); a
    retried bundle rewrites the same file names, so files hold each chunk at least once.

        WriteChunksToParquet(ParquetSink(path="./capture"))
    """

    def __init__(self, sink, whole_windows: bool = False, label: str | None = None):
        """
        Args:
          sink: the ParquetSink whose options to write with (path, compression, files, layout,
            target_file_size: every option lives there; it is validated here, without I/O, and
            ValueError lists every problem). 'auto' files: input that comes a whole window at a
            time is written in files per bundle, without a shuffle; other input per window.
            'per_window': always after a GroupByKey. layout: per_stream, a file per window and
            stream; many_streams, files of every stream of a window (many_streams.py).
          whole_windows: the input comes a whole window of a stream at a time, in seq order per
            stream (ReadStreams' release_by_window, or one bundle of generated chunks), so files
            per bundle are files per window.
          label: the transform's label.
        """
        super().__init__(label)
        errors = sink.validate(type(self).__name__)
        if errors:
            raise ValueError("; ".join(errors))
        self._path, self._endpoint_url = split_location(sink.path, sink.endpoint_url)
        if not is_remote(self._path):
            self._path = os.path.abspath(self._path)
        self._compression = sink.compression
        self._files = sink.files
        self._layout = sink.layout
        self._target_bytes = sink.target_file_size
        self._retry_seconds = sink.max_retry_seconds
        self._whole_windows = whole_windows
        self._own_windows: tuple[float, Duration] | None = None

    def own_windows(
        self, window_seconds: float, allowed_lateness: Duration
    ) -> WriteChunksToParquet | None:
        """This transform for chunks that have no windows yet (the global window), if it can
        take them: the writer then assigns each chunk its fixed window of `window_seconds` from
        its event time (as WindowInto(FixedWindows) would from its timestamp, the event time),
        and the file paths it outputs get those windows (with `allowed_lateness`). None if it
        cannot (files after a GroupByKey, the many-streams layout): window the chunks first.

        The capture saves a step per chunk: WindowInto's assignment was ~20% of the reading
        stage's per-chunk time in a fast stream's capture (benchmark scenario 1).
        """
        if not (self._layout == "per_stream" and self._files == "auto" and self._whole_windows):
            return None
        other = copy.copy(self)
        other._own_windows = (window_seconds, allowed_lateness)
        return other

    def expand(self, chunks):
        options = (
            self._path, self._compression, self._retry_seconds, run_token(chunks.pipeline),
            self._endpoint_url, self._target_bytes,
        )
        if self._layout == "many_streams" and self._files == "auto" and self._whole_windows:
            # Windows of many streams come whole in the reading step's bundles (see above).
            return chunks | "WriteFiles" >> beam.ParDo(WriteBundleOfStreamsFn(*options))
        if self._layout == "many_streams":
            # One group per window (and pane) of every stream: files of many streams each.
            return (
                chunks
                | "KeyByCapture" >> beam.Map(lambda chunk: ("", chunk))
                | "GroupByWindow" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(WriteWindowOfStreamsFn(*options))
            )
        if self._own_windows is not None:
            # As below, for chunks without windows: the writer assigns them (own_windows()).
            window_seconds, allowed_lateness = self._own_windows
            writer = _WriteBundleFilesOwnWindowsFn(*options, window_seconds=window_seconds)
            return (
                chunks
                | "WriteFiles" >> beam.ParDo(writer)
                | "FileWindows" >> beam.WindowInto(
                    FixedWindows(window_seconds), allowed_lateness=allowed_lateness
                )
            )
        if self._files == "auto" and self._whole_windows:
            # Every chunk reaches this step exactly once per successful bundle, in the bundle
            # that read it, so files can be cut as chunks pass (see the module doc). The input
            # must come whole windows at a time, bounded or not, or the files would be per poll.
            return chunks | "WriteFiles" >> beam.ParDo(_WriteBundleFilesFn(*options))
        return (
            chunks
            | "KeyByStream" >> beam.Map(lambda chunk: (chunk.stream_id, chunk))
            | "GroupByWindowAndStream" >> beam.GroupByKey()
            | "WriteFiles" >> beam.ParDo(_WriteWindowFileFn(*options))
        )


class _WriteWindowFileFn(WriteFilesFn):
    """Writes one file per (stream, window) group; files of a bundle are written concurrently.

    A bundle finishes only when all of its files are fsync'ed and renamed, and a failed write
    fails the bundle (the runner retries it; file names depend only on the content).
    """

    def process(self, keyed, window=beam.DoFn.WindowParam) -> list[WindowedValue]:
        stream_id, chunks = keyed
        rows = sorted(chunks, key=lambda chunk: chunk.seq)
        if not rows:  # Flink delivers the empty final pane Python windowing asks for
            return []
        directory, name = file_location(self._path, stream_id, window, rows[0].seq)
        job = (directory, name, rows, self._compression)
        sizes = [(len(row.payload), row.event_time) for row in rows]
        self._queue.add(QueuedFile(
            self._pool.submit(write_temporary, *job),
            lambda: write_temporary(*job),
            os.path.join(directory, name),
            window,
            stream_id,
            sizes,
            sum(size for size, _ in sizes),
        ))
        return outputs(self._queue.ready())


class _OpenFile:
    """A per-bundle file of one stream and window, written while it fills.

    Every _BATCH_BYTES of chunks go to the pool as one row group (appended in order: each task
    waits for the one before), so writing overlaps with the bundle still reading; close() queues
    the last rows, the footer and the fsync, and returns the future of (temporary, final path).
    The row groups' tables are kept until the file is renamed (they hold no copy of the payloads,
    which the reader keeps until the bundle commits anyway), so rewrite() can write the file
    again after the disk was full.
    """

    __slots__ = (
        "stream_id", "window", "first_seq", "last_seq", "rows", "pending", "size", "chunks",
        "directory", "name", "temporary", "_task", "_writer", "_sink", "_tables",
    )

    def __init__(self, root: str, stream_id: str, window, first_seq: int):
        self.stream_id = stream_id
        self.window = window
        self.first_seq = first_seq
        self.last_seq = first_seq - 1
        self.rows: list[Chunk] = []
        self.pending = 0  # payload bytes in rows
        self.size = 0  # payload bytes in the file, rows included
        self.chunks: list[tuple[int, float]] = []  # (payload bytes, event time), rows included
        self.directory, self.name = file_location(root, stream_id, window, first_seq)
        self.temporary = temporary_name(self.directory, self.name)
        self._tables: list[pa.Table] = []
        self._task: Future | None = None
        self._writer: pq.ParquetWriter | None = None
        self._sink: pa.NativeFile | None = None

    def started(self) -> bool:
        """True once rows went to the pool (then the file must be finished there)."""
        return self._task is not None

    def add(self, chunk: Chunk) -> None:
        self.rows.append(chunk)
        self.last_seq = chunk.seq
        self.pending += len(chunk.payload)
        self.size += len(chunk.payload)
        self.chunks.append((len(chunk.payload), chunk.event_time))

    def flush(self, pool: ThreadPoolExecutor, compression: str) -> None:
        """Sends the rows so far to the pool as one row group."""
        # The table is built here, in the bundle's thread, which holds the GIL anyway: built on
        # the pool, every row group waited for the GIL behind the bundle's element loop.
        table, self.rows, self.pending = chunk_table(self.rows), [], 0
        self._tables.append(table)
        self._task = pool.submit(self._append, self._task, table, compression, pool)

    def close(self, pool: ThreadPoolExecutor, compression: str) -> Future:
        table = chunk_table(self.rows) if self.rows else None
        if table is not None:
            self._tables.append(table)
        self.rows, self.pending = [], 0
        self._task = pool.submit(self._finish, self._task, table, compression)
        return self._task

    def queued(self, pool: ThreadPoolExecutor, compression: str) -> QueuedFile:
        """Closes the file: its entry in the bundle's file queue."""
        return QueuedFile(
            self.close(pool, compression),
            lambda: self.rewrite(compression),
            os.path.join(self.directory, self.name),
            self.window,
            self.stream_id,
            self.chunks,
            self.size,
        )

    def rewrite(self, compression: str) -> tuple[str, str]:
        """Writes the whole file again under a new temporary name, in the calling thread, after
        the first write failed (and removed its temporary file)."""
        self.temporary = temporary_name(self.directory, self.name)
        with self._removed_on_failure():
            self._open_writer(compression)
            for table in self._tables:
                self._writer.write_table(table, row_group_size=table.num_rows)
            self._close_writer()
            fsync(self.temporary)
        return self.temporary, os.path.join(self.directory, self.name)

    @contextlib.contextmanager
    def _removed_on_failure(self) -> Iterator[None]:
        """On any error: the writer closed, the temporary file removed, the error raised."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(BaseException):  # the first error is the one reported
                self._close_writer()
            unlink_quietly(self.temporary)
            raise

    def _open_writer(self, compression: str) -> None:
        make_directory(self.directory)
        self._sink = open_for_writing(self.temporary)
        self._writer = pq.ParquetWriter(
            self._sink, SCHEMA, compression=codec(compression), **WRITE_OPTIONS
        )

    def _close_writer(self) -> None:
        writer, sink, self._writer, self._sink = self._writer, self._sink, None, None
        try:
            if writer is not None:
                writer.close()
        finally:
            if sink is not None:
                sink.close()

    def _append(
        self, previous: Future | None, table: pa.Table, compression: str,
        pool: ThreadPoolExecutor,
    ) -> None:
        if previous is not None:
            previous.result()
        if self._writer is None:
            self._open_writer(compression)
        self._writer.write_table(table, row_group_size=table.num_rows)
        # Start writing these pages to disk while the next row group is encoded, so the fsync
        # at close() has only the tail left (it still is what makes the file durable).
        pool.submit(write_back, self.temporary)

    def _finish(
        self, previous: Future | None, table: pa.Table | None, compression: str
    ) -> tuple[str, str]:
        with self._removed_on_failure():
            if previous is not None:
                previous.result()
            if self._writer is None:
                self._open_writer(compression)
            if table is not None:
                self._writer.write_table(table, row_group_size=table.num_rows)
            self._close_writer()
            fsync(self.temporary)
        return self.temporary, os.path.join(self.directory, self.name)


class _WriteBundleFilesFn(WriteFilesFn):
    """Input that comes a whole window at a time: files cut from a bundle's chunks as they pass.

    Fused right after the reading step, it sees each stream's chunks in seq order (a stream is
    read by one SDF element, its chunks come out in order, with non-decreasing event times). It
    keeps one open file per stream: the chunks of the current window. A chunk of another window
    closes the file, as does reaching the target size; finish_bundle closes what is open, and the
    bundle completes only when every file is fsync'ed and renamed, so a chunk is on disk before
    the runner commits the bundle that read it (and the reader forgets it).

    A retried bundle re-reads the same chunks from the same restriction (at least as many as the
    first attempt: the reader keeps them until the commit), so its files get the same names
    (window start, first seq) and replace the first attempt's; should a retry end earlier,
    storage.publish keeps the longer file, and the next bundle writes the rest again: exact
    redeliveries, which verify and reassemble drop. A chunk whose seq is not above the last one
    of its stream's open file (a runner that did not fuse this step, a redelivery) starts a new
    file, so every file is one ascending run of seqs named by its lowest.
    """

    def setup(self) -> None:
        super().setup()
        self._processes: WriterProcesses | None = None  # started when first needed

    def start_bundle(self) -> None:
        super().start_bundle()
        self._abandon_open()
        self._open: dict[str, _OpenFile] = {}

    def process(self, chunk: Chunk, window=beam.DoFn.WindowParam) -> list[WindowedValue]:
        return self._add(chunk, window)

    def _add(self, chunk: Chunk, window) -> list[WindowedValue]:
        """Adds a chunk of `window` to its stream's open file (a new file for a new window)."""
        # An empty list, not None: Beam warns about every process method that returns None.
        file = self._open.get(chunk.stream_id)
        if file is None or chunk.seq <= file.last_seq or (
            file.window is not window and file.window != window
        ):
            if file is not None:
                self._close(file)
            file = self._open[chunk.stream_id] = _OpenFile(
                self._path, chunk.stream_id, window, chunk.seq
            )
        file.add(chunk)
        if file.pending >= _BATCH_BYTES:
            if file.size >= self._target_bytes:
                del self._open[chunk.stream_id]
                self._close(file)
            else:
                file.flush(self._pool, self._compression)
        if self._queue.has_ready():
            return outputs(self._queue.ready(), self._outputs_in_global_window)
        return []

    def finish_bundle(self) -> Iterator[WindowedValue]:
        files, self._open = self._open.values(), {}
        started = [file for file in files if file.started()]
        small = [file for file in files if not file.started()]
        if len(small) >= _PROCESS_MIN_FILES and not is_remote(self._path):
            self._write_in_processes(small)
        else:
            started += small
        for file in started:
            self._close(file)
        return super().finish_bundle()

    def _write_in_processes(self, files: list[_OpenFile]) -> None:
        """Queues small, whole files to the helper processes, in batches."""
        if self._processes is None:
            self._processes = WriterProcesses(_WRITER_PROCESSES)
        for start in range(0, len(files), _PROCESS_BATCH_FILES):
            batch = files[start : start + _PROCESS_BATCH_FILES]
            jobs: list[FileJob] = [
                (file.directory, file.name, chunk_columns(file.rows), self._compression)
                for file in batch
            ]
            written = self._processes.submit(jobs)
            for index, (file, job) in enumerate(zip(batch, jobs)):
                self._queue.add(QueuedFile(
                    written.file(index),
                    lambda job=job: write_batch([job])[0],
                    os.path.join(file.directory, file.name),
                    file.window,
                    file.stream_id,
                    file.chunks,
                    file.size,
                ))

    def teardown(self) -> None:
        self._abandon_open()
        super().teardown()
        processes = getattr(self, "_processes", None)
        if processes is not None:
            processes.shutdown()

    def _close(self, file: _OpenFile) -> None:
        self._queue.add(file.queued(self._pool, self._compression))

    def _abandon_open(self) -> None:
        """Removes the temporary files of a bundle that failed before closing them."""
        for file in getattr(self, "_open", {}).values():
            try:
                file.close(self._pool, self._compression).result()
            except BaseException:  # noqa: BLE001 - cleaning up after a failure
                continue
            unlink_quietly(file.temporary)
        self._open = {}


class _WriteBundleFilesOwnWindowsFn(_WriteBundleFilesFn):
    """_WriteBundleFilesFn for chunks in the global window: it assigns each chunk its fixed
    window from its event time itself (WriteChunksToParquet.own_windows), and outputs the paths
    in the global window (a WindowInto after it windows them).

    Its process() takes the chunk alone, so Beam calls it through its simple invoker, not the
    per-window one that matches extra arguments for every element.
    """

    _outputs_in_global_window = True

    def __init__(self, *options, window_seconds: float):
        super().__init__(*options)
        # FixedWindows' own size in µs: the windows are those it would assign.
        self._size = FixedWindows(window_seconds).size.micros
        self._window: IntervalWindow | None = None
        self._window_start = self._window_end = 0

    def process(self, chunk: Chunk) -> list[WindowedValue]:
        # The chunk's timestamp in µs, as Beam truncates it (Timestamp.of(event_time)).
        micros = event_micros(chunk.event_time)
        if not self._window_start <= micros < self._window_end:
            start = micros - micros % self._size
            self._window_start, self._window_end = start, start + self._size
            self._window = IntervalWindow(
                Timestamp(micros=start), Timestamp(micros=start + self._size)
            )
        return self._add(chunk, self._window)
