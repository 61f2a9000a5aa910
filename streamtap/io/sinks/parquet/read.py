"""Reading a Parquet capture back: its files, its chunks, and where each stream's capture ends.

`verify`, `reassemble` (ParquetSink.read_location) and resume (ParquetSink.resume_positions)
read through these. Only complete files count: hidden names (temporary files of a writer, or
a dead one's) are never listed. A stream is its directory `stream=<id>`, matched by exact name
(an id is never a pattern). Chunks are read lazily, a few rows at a time, stream by stream and
each stream's files in first-seq order, so a reader holds one batch of a file at a time and
hands each stream's chunks over in about seq order, as `reassemble` expects.

A capture on HDFS or S3 (`hdfs://host:port/path`, `s3://bucket/prefix[?endpoint_url=...]`) is
listed and read through `streamtap.io.storage` (storage.remote_root): the same layout, the same
order; its files are `RemoteFile`s, each file read by ranged reads (the footer, then the rows).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from pathlib import Path
from typing import Iterator, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamtap.chunk import Chunk
from streamtap.errors import RunError
from streamtap.io.sinks.parquet.storage import is_remote, max_seq, remote_root, split_location

__all__ = ["RemoteFile", "capture_end", "capture_files", "read_parquet_chunks"]

# Rows per batch read from a file: 64 chunks of at most 64 KiB by default (4 MiB).
_BATCH_ROWS = 64
# A final file's name: <HHMMSS>-<first seq>.parquet (storage.file_location).
_FILE_NAME = re.compile(r"\d{6}-(\d+)\.parquet")


class RemoteFile(NamedTuple):
    """A published file of a capture on HDFS or S3: its Storage and path relative to the root."""

    storage: object
    path: str

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def __str__(self) -> str:
        return self.storage.location(self.path)


def capture_files(path: str, stream_id: str | None = None) -> list[Path] | list[RemoteFile]:
    """Complete Parquet files of a capture directory (never hidden or temporary ones): stream by
    stream in id order, each stream's files in first-seq order. `stream_id`: that stream only,
    by exact id."""
    if is_remote(path):
        return _remote_files(path, stream_id)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{path} is not a directory with a streamtap capture")
    files: list[Path] = []
    for stream in _entries(root, dirs=True):
        if not stream.name.startswith("stream="):
            continue
        if stream_id is not None and stream.name != f"stream={stream_id}":
            continue
        found = [
            file
            for day in _entries(stream, dirs=True)
            if day.name.startswith("date=")
            for file in _entries(day, dirs=False)
            if file.name.endswith(".parquet")
        ]
        files += sorted(found, key=lambda file: (_first_seq(file), file.name))
    return files


def read_parquet_chunks(path: str, stream_id: str | None = None) -> Iterator[Chunk]:
    """Every chunk in a capture directory, optionally of one stream (exact id), read lazily:
    stream by stream, each stream's files in first-seq order, each file in row order."""
    for file in capture_files(path, stream_id):
        yield from _file_chunks(file)


def capture_end(path: str, stream_id: str) -> tuple[int, int] | None:
    """(next seq, next offset) after the last chunk of a stream in a capture, or None.

    Finds the file holding the highest seq from the files' footer statistics, then reads that one
    file's seq, offset and payload columns.
    """
    best: tuple[int, Path] | None = None
    for file in capture_files(path, stream_id):
        with _unreadable_stops_resume(file, stream_id), _open(file) as source:
            end = max_seq(source)
        if end is not None and (best is None or end > best[0]):
            best = (end, file)
    if best is None:
        return None
    with _unreadable_stops_resume(best[1], stream_id), _open(best[1]) as source:
        table = pq.read_table(source, columns=["seq", "offset", "payload"])
    last = pc.index(table.column("seq"), best[0]).as_py()
    offset = table.column("offset")[last].as_py()
    length = len(table.column("payload")[last].as_py())
    return best[0] + 1, offset + length


@contextlib.contextmanager
def _unreadable_stops_resume(file, stream_id: str) -> Iterator[None]:
    """A file resume cannot read is a RunError naming it: the stream may have gone on in it, so
    guessing where it ended could number two chunks alike."""
    try:
        yield
    except (OSError, pa.ArrowException) as error:
        raise RunError(
            f"resume: cannot read {file} ({error}), so where stream {stream_id} ended is "
            "unknown: move the file out of the capture (a damaged file or another program's) "
            "and run again, or set resume: false to start the stream at seq 0"
        ) from None


def _remote_files(location: str, stream_id: str | None) -> list[RemoteFile]:
    storage = remote_root(*split_location(location))
    prefix = f"stream={stream_id}" if stream_id is not None else ""
    by_stream: dict[str, list[RemoteFile]] = {}
    for info in storage.list(prefix):
        parts = info.path.split("/")
        if (
            len(parts) == 3
            and parts[0].startswith("stream=")
            and parts[1].startswith("date=")
            and parts[2].endswith(".parquet")
        ):
            by_stream.setdefault(parts[0], []).append(RemoteFile(storage, info.path))
    if not by_stream and stream_id is None and not storage.list():
        raise FileNotFoundError(f"{location}: no streamtap capture there (no files)")
    files: list[RemoteFile] = []
    for stream in sorted(by_stream):
        files += sorted(by_stream[stream], key=lambda file: (_first_seq(file), file.name))
    return files


def _open(file: Path | RemoteFile):
    """A source pyarrow reads a file from: a local file, or a seekable remote reader."""
    if isinstance(file, RemoteFile):
        return file.storage.open_read(file.path)
    return pa.OSFile(str(file), "rb")


def _entries(directory: Path, dirs: bool) -> list[Path]:
    """The visible directories (dirs) or files of `directory`, by name."""
    with os.scandir(directory) as scan:
        return sorted(
            Path(entry.path)
            for entry in scan
            if not entry.name.startswith((".", "_"))
            and (entry.is_dir() if dirs else entry.is_file())
        )


def _first_seq(file: Path) -> int:
    """The lowest seq of a file: from its name, else from its footer statistics."""
    match = _FILE_NAME.fullmatch(file.name)
    if match:
        return int(match.group(1))
    with _open(file) as source:
        metadata = pq.ParquetFile(source).metadata
    column = metadata.schema.to_arrow_schema().get_field_index("seq")
    starts = [
        stats.min
        for group in range(metadata.num_row_groups)
        if (stats := metadata.row_group(group).column(column).statistics) is not None
        and stats.has_min_max
    ]
    return min(starts) if starts else 0


def _file_chunks(file: Path) -> Iterator[Chunk]:
    """The chunks of one file, in its row order, _BATCH_ROWS at a time."""
    with _open(file) as source:
        yield from _source_chunks(source)


def _source_chunks(source) -> Iterator[Chunk]:
    for batch in pq.ParquetFile(source).iter_batches(batch_size=_BATCH_ROWS):
        columns = batch.to_pydict()
        times = batch.column("event_time").cast(pa.int64()).to_pylist()
        for i in range(batch.num_rows):
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
