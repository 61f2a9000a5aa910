"""Parquet sink: one file per event-time window and stream, on local disk.

Layout (Hive-style partitions, so Spark, Flink and pyarrow.dataset read it as one table):

    <path>/stream=<stream_id>/date=<YYYY-MM-DD>/<HHMMSS>-<first seq>.parquet

A file is written under a hidden temporary name (".<name>.tmp-<random>") in its final directory
and renamed when complete, so a reader never sees a partial file under a final name. Its name is
derived from its contents (window start, first seq): a retried bundle rewrites the same file.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from streamtap.chunk import Chunk
from streamtap.config import PipelineConfig, SinkConfig, doc

__all__ = ["ParquetSink", "WriteToParquet", "SCHEMA", "read_parquet_chunks"]

_LOGGER = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        pa.field("stream_id", pa.string(), nullable=False),
        pa.field("session", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("payload", pa.binary(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("crc32c", pa.uint32(), nullable=False),
        pa.field("discontinuity", pa.bool_(), nullable=False),
        pa.field("tags", pa.map_(pa.string(), pa.string()), nullable=False),
    ]
)

_COMPRESSIONS = ("none", "snappy", "zstd", "gzip", "lz4")
# Row groups of about this many payload bytes keep readers' memory bounded on big windows.
_ROW_GROUP_BYTES = 128 * 1024 * 1024
# Files are written and fsync'ed by this many threads at once. A window of 1,000 live streams is
# 1,000 small files, and one fsync after the other (each waiting for its own journal commit) made
# the sink fall behind; concurrent fsyncs share commits. pyarrow and fsync release the GIL.
_WRITE_THREADS = 8
# A bundle waits for its oldest file once this many are being written (bounds memory).
_MAX_FILES_IN_FLIGHT = 32


@dataclass(kw_only=True)
class ParquetSink(SinkConfig):
    type_name: ClassVar[str] = "parquet"

    path: str = doc("Directory the capture is written to (created if missing).", "")
    compression: str = doc(
        "Parquet codec: none, snappy, zstd, gzip or lz4. zstd saves space on sensor data; "
        "compressed audio does not shrink.",
        "zstd",
    )

    def validate(self, path: str) -> list[str]:
        errors = []
        if not self.path:
            errors.append(f"{path}.path: required: the directory to write the capture to")
        elif "://" in self.path:
            errors.append(
                f"{path}.path: {self.path!r}: only local paths are supported by this sink"
            )
        if self.compression not in _COMPRESSIONS:
            errors.append(
                f"{path}.compression: must be one of {', '.join(_COMPRESSIONS)}, "
                f"got {self.compression!r}"
            )
        return errors

    def preflight(self, config: PipelineConfig) -> list[str]:
        try:
            Path(self.path).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return [f"parquet sink: cannot create {self.path}: {error.strerror}"]
        if not os.access(self.path, os.W_OK):
            return [f"parquet sink: {self.path} is not writable"]
        return []

    def resume_positions(self, stream_ids: list[str]) -> dict[str, tuple[int, int]]:
        if not Path(self.path).is_dir():
            return {}
        positions = {}
        for stream_id in stream_ids:
            end = capture_end(self.path, stream_id)
            if end is not None:
                positions[stream_id] = end
        return positions

    def transform(self, config: PipelineConfig) -> beam.PTransform:
        return WriteToParquet(self.path, self.compression)


class WriteToParquet(beam.PTransform):
    """Writes windowed chunks to Parquet files; outputs the path of every file written.

    Args:
      path: local directory of the capture.
      compression: Parquet codec (none, snappy, zstd, gzip, lz4).
    """

    def __init__(self, path: str, compression: str = "zstd"):
        super().__init__()
        if compression not in _COMPRESSIONS:
            raise ValueError(f"compression must be one of {_COMPRESSIONS}, got {compression!r}")
        self._path = os.path.abspath(path)
        self._compression = compression

    def expand(self, chunks):
        return (
            chunks
            | "KeyByStream" >> beam.Map(lambda chunk: (chunk.stream_id, chunk))
            | "GroupByWindowAndStream" >> beam.GroupByKey()
            | "WriteFiles" >> beam.ParDo(_WriteWindowFileFn(self._path, self._compression))
        )


class _WriteWindowFileFn(beam.DoFn):
    """Writes one file per (stream, window); files of a bundle are written concurrently.

    A bundle finishes only when all of its files are fsync'ed and renamed, and a failed write
    fails the bundle (the runner retries it; file names depend only on the content).
    """

    def __init__(self, path: str, compression: str):
        self._path = path
        self._compression = compression
        self._files = Metrics.counter("streamtap", "parquet_files")

    def setup(self) -> None:
        self._pool = ThreadPoolExecutor(_WRITE_THREADS, thread_name_prefix="streamtap-parquet")
        self._in_flight: collections.deque[tuple[Future, object]] = collections.deque()

    def start_bundle(self) -> None:
        self._in_flight = collections.deque()

    def process(self, keyed, window=beam.DoFn.WindowParam) -> Iterator[WindowedValue]:
        stream_id, chunks = keyed
        rows = sorted(chunks, key=lambda chunk: chunk.seq)
        if not rows:
            return  # Flink delivers the empty final pane Python windowing asks for
        start = datetime.datetime.fromtimestamp(float(window.start), datetime.timezone.utc)
        directory = os.path.join(
            self._path, f"stream={stream_id}", f"date={start:%Y-%m-%d}"
        )
        name = f"{start:%H%M%S}-{rows[0].seq:012d}.parquet"
        future = self._pool.submit(_write_file, directory, name, rows, self._compression)
        self._in_flight.append((future, window))
        while self._in_flight and (
            len(self._in_flight) > _MAX_FILES_IN_FLIGHT or self._in_flight[0][0].done()
        ):
            yield self._collect()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        while self._in_flight:
            yield self._collect()

    def teardown(self) -> None:
        self._pool.shutdown(wait=True)

    def _collect(self) -> WindowedValue:
        future, window = self._in_flight.popleft()
        final = future.result()  # re-raises the write's error: the bundle fails
        self._files.inc()
        return WindowedValue(final, window.max_timestamp(), (window,))


def _write_file(directory: str, name: str, rows: list[Chunk], compression: str) -> str:
    """Writes `rows` to directory/name via a hidden temporary file; returns the final path."""
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, name)
    temporary = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        _write_table(temporary, rows, compression)
        os.replace(temporary, final)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return final


def _write_table(path: str, rows: list[Chunk], compression: str) -> None:
    table = pa.Table.from_pydict(
        {
            "stream_id": [row.stream_id for row in rows],
            "session": [row.session for row in rows],
            "seq": [row.seq for row in rows],
            "offset": [row.offset for row in rows],
            "payload": [row.payload for row in rows],
            "event_time": [round(row.event_time * 1_000_000) for row in rows],
            "crc32c": [row.crc32c for row in rows],
            "discontinuity": [row.discontinuity for row in rows],
            "tags": [list(row.tags.items()) for row in rows],
        },
        schema=SCHEMA,
    )
    largest = max(len(row.payload) for row in rows) or 1
    row_group_size = max(1, _ROW_GROUP_BYTES // largest)
    # pyarrow's own file writer (not a Python file object: no GIL per write call), then fsync.
    pq.write_table(
        table,
        path,
        compression=None if compression == "none" else compression,
        row_group_size=row_group_size,
    )
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading a capture back --------------------------------------------------------------------


def capture_files(path: str, stream_id: str | None = None) -> list[Path]:
    """Complete Parquet files of a capture directory (never temporary ones), in name order."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{path} is not a directory with a streamtap capture")
    pattern = f"stream={stream_id}/date=*/*.parquet" if stream_id else "stream=*/date=*/*.parquet"
    return sorted(p for p in root.glob(pattern) if not p.name.startswith("."))


def read_parquet_chunks(path: str, stream_id: str | None = None) -> Iterable[Chunk]:
    """Every chunk in a capture directory, file by file (not globally sorted)."""
    for file in capture_files(path, stream_id):
        table = pq.read_table(file)
        columns = table.to_pydict()
        times = table.column("event_time").cast(pa.int64()).to_pylist()
        for i in range(table.num_rows):
            yield Chunk(
                columns["stream_id"][i],
                columns["session"][i],
                columns["seq"][i],
                columns["offset"][i],
                columns["payload"][i],
                times[i] / 1_000_000,
                columns["crc32c"][i],
                columns["discontinuity"][i],
                dict(columns["tags"][i]),
            )


def capture_end(path: str, stream_id: str) -> tuple[int, int] | None:
    """(next seq, next offset) after the last chunk of a stream in a capture, or None.

    Finds the file holding the highest seq from the files' footer statistics, then reads that one
    file's seq, offset and payload columns.
    """
    best: tuple[int, Path] | None = None
    for file in capture_files(path, stream_id):
        metadata = pq.ParquetFile(file).metadata
        column = metadata.schema.to_arrow_schema().get_field_index("seq")
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(column).statistics
            if statistics is not None and statistics.has_min_max:
                if best is None or statistics.max > best[0]:
                    best = (statistics.max, file)
    if best is None:
        return None
    table = pq.read_table(best[1], columns=["seq", "offset", "payload"])
    last = pc.index(table.column("seq"), best[0]).as_py()
    offset = table.column("offset")[last].as_py()
    length = len(table.column("payload")[last].as_py())
    return best[0] + 1, offset + length
