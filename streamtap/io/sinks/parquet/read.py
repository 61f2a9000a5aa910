"""Reading a Parquet capture back: its files, its chunks, and where each stream's capture ends.

`verify`, `reassemble` (ParquetSink.read_location) and resume (ParquetSink.resume_positions)
read through these. Only complete files count: hidden names (temporary files of a writer, or
a dead one's) are never listed. Both layouts are read, also side by side in one capture:

- per stream: a stream is its directory `stream=<id>`, matched by exact name (an id is never a
  pattern); its files in first-seq order.
- many streams (`date=<day>/<HHMMSS>-streams-<digest>.parquet`): files in window order, after
  the per-stream files; for one stream only the row groups whose stream_id statistics can hold
  it are read, and only its rows kept.

Chunks are read lazily, a few rows at a time, so a reader holds one batch of a file at a time
and hands each stream's chunks over in about seq order, as `reassemble` expects.

A capture on HDFS or S3 (`hdfs://host:port/path`, `s3://bucket/prefix[?endpoint_url=...]`) is
listed and read through `streamtap.io.storage` (storage.remote_root): the same layout, the same
order; its files are `RemoteFile`s, each file read by ranged reads (the footer, then the rows).
"""

from __future__ import annotations

import contextlib
import itertools
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

__all__ = [
    "RemoteFile", "capture_end", "capture_ends", "capture_files", "layouts_in",
    "read_parquet_chunks",
]

# Rows per batch read from a file: 64 chunks of at most 64 KiB by default (4 MiB).
_BATCH_ROWS = 64
# A final file's name: <HHMMSS>-<first seq>.parquet (storage.file_location).
_FILE_NAME = re.compile(r"\d{6}-(\d+)\.parquet")
# A final file of many streams: <HHMMSS>-streams-<digest>.parquet (storage.shared_file_location).
_SHARED_NAME = re.compile(r"\d{6}-streams-[0-9a-f]{16}\.parquet")


class RemoteFile(NamedTuple):
    """A published file of a capture on HDFS or S3: its Storage and path relative to the root."""

    storage: object
    path: str

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def __str__(self) -> str:
        return self.storage.location(self.path)


class _Listing(NamedTuple):
    """The complete files of a capture: per-stream files by stream id, each stream's in
    first-seq order; files of many streams in window order."""

    streams: dict[str, list]
    shared: list


def capture_files(path: str, stream_id: str | None = None) -> list[Path] | list[RemoteFile]:
    """Complete Parquet files of a capture directory (never hidden or temporary ones): per-stream
    files stream by stream in id order, each stream's in first-seq order, then the files of many
    streams in window order. `stream_id`: that stream's own files (exact id), and the files of
    many streams."""
    listing = _listing(path, stream_id)
    return [file for stream in sorted(listing.streams) for file in listing.streams[stream]] + (
        listing.shared
    )


def read_parquet_chunks(path: str, stream_id: str | None = None) -> Iterator[Chunk]:
    """Every chunk in a capture directory, optionally of one stream (exact id), read lazily:
    per-stream files stream by stream, each in first-seq order, then the files of many streams
    in window order (for one stream only its rows), each file in row order."""
    for file in capture_files(path, stream_id):
        if stream_id is not None and _is_shared(file):
            yield from _stream_chunks(file, stream_id)
        else:
            yield from _file_chunks(file)


def capture_end(path: str, stream_id: str) -> tuple[int, int] | None:
    """(next seq, next offset) after the last chunk of a stream in a capture, or None."""
    return capture_ends(path, [stream_id]).get(stream_id)


def capture_ends(path: str, stream_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(next seq, next offset) after the last chunk of each stream found in a capture.

    Per-stream files: the file holding the stream's highest seq, found from the files' footer
    statistics, then that one file's seq, offset and payload columns. Files of many streams:
    window by window from the newest, the stream_id and seq columns, until every stream is found
    (a stream absent from recent windows costs a scan further back); the later end wins.
    """
    listing = _remote_listing(path, None, required=False) if is_remote(path) else None
    ends = {}
    for stream_id in stream_ids:
        own = (listing or _listing(path, stream_id, shared=False)).streams.get(
            f"stream={stream_id}", []
        )
        end = _stream_end(own, stream_id)
        if end is not None:
            ends[stream_id] = end
    shared = listing.shared if listing is not None else _listing(path, "", shared=True).shared
    for stream_id, end in _shared_ends(shared, set(stream_ids)).items():
        if stream_id not in ends or end > ends[stream_id]:
            ends[stream_id] = end
    return ends


def layouts_in(path: str) -> set[str]:
    """The layouts a capture directory holds: "per_stream" (stream=<id>/ directories at its top),
    "many_streams" (date=<day>/ directories); empty for a new or empty one."""
    if is_remote(path):
        storage = remote_root(*split_location(path))
        tops = {info.path.split("/", 1)[0] for info in storage.list()}
    elif Path(path).is_dir():
        tops = {entry.name for entry in _entries(Path(path), dirs=True)}
    else:
        return set()
    found = set()
    if any(top.startswith("stream=") for top in tops):
        found.add("per_stream")
    if any(top.startswith("date=") for top in tops):
        found.add("many_streams")
    return found


def _stream_end(files: list, stream_id: str) -> tuple[int, int] | None:
    best: tuple[int, Path] | None = None
    for file in files:
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


def _shared_ends(files: list, wanted: set[str]) -> dict[str, tuple[int, int]]:
    """The ends of the `wanted` streams in files of many streams, newest window first."""
    ends: dict[str, tuple[int, int]] = {}
    remaining = set(wanted)
    for _, window_files in itertools.groupby(reversed(files), key=_window_of):
        if not remaining:
            break
        found: dict[str, tuple[int, object, int, int]] = {}  # stream: (seq, file, group, row)
        for file in window_files:
            with _unreadable_stops_resume(file, _some(remaining)), _open(file) as source:
                parquet = pq.ParquetFile(source)
                for group in range(parquet.metadata.num_row_groups):
                    table = parquet.read_row_group(group, columns=["stream_id", "seq"])
                    ids = table.column("stream_id").to_pylist()
                    seqs = table.column("seq").to_pylist()
                    for row, (stream_id, seq) in enumerate(zip(ids, seqs)):
                        if stream_id in remaining and seq >= found.get(stream_id, (-1,))[0]:
                            found[stream_id] = (seq, file, group, row)
        groups: dict[tuple[str, int], list[str]] = {}
        for stream_id, (_, file, group, _) in found.items():
            groups.setdefault((str(file), group), []).append(stream_id)
        for stream_ids in groups.values():
            _, file, group, _ = found[stream_ids[0]]
            with _unreadable_stops_resume(file, stream_ids[0]), _open(file) as source:
                table = pq.ParquetFile(source).read_row_group(group, columns=["offset", "payload"])
            for stream_id in stream_ids:
                seq, _, _, row = found[stream_id]
                length = len(table.column("payload")[row].as_py())
                ends[stream_id] = (seq + 1, table.column("offset")[row].as_py() + length)
        remaining -= found.keys()
    return ends


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


def _listing(path: str, stream_id: str | None = None, shared: bool = True) -> _Listing:
    """The files of a capture; `stream_id`: of that stream only ("" for none) besides the
    files of many streams (unless not `shared`)."""
    if is_remote(path):
        return _remote_listing(path, stream_id)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{path} is not a directory with a streamtap capture")
    streams = {}
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
        streams[stream.name] = sorted(found, key=lambda file: (_first_seq(file), file.name))
    files_of_many = [
        file
        for day in _entries(root, dirs=True)
        if day.name.startswith("date=")
        for file in _entries(day, dirs=False)
        if _SHARED_NAME.fullmatch(file.name)
    ] if shared else []
    return _Listing(streams, files_of_many)


def _remote_listing(location: str, stream_id: str | None, required: bool = True) -> _Listing:
    """The files of a remote capture, listed once; `required`: no files at all (and no
    stream asked for) is FileNotFoundError."""
    storage = remote_root(*split_location(location))
    streams: dict[str, list[RemoteFile]] = {}
    files_of_many: list[RemoteFile] = []
    everything = storage.list()
    for info in everything:
        parts = info.path.split("/")
        if len(parts) == 2 and parts[0].startswith("date=") and _SHARED_NAME.fullmatch(parts[1]):
            files_of_many.append(RemoteFile(storage, info.path))
        elif (
            len(parts) == 3
            and parts[0].startswith("stream=")
            and (stream_id is None or parts[0] == f"stream={stream_id}")
            and parts[1].startswith("date=")
            and parts[2].endswith(".parquet")
        ):
            streams.setdefault(parts[0], []).append(RemoteFile(storage, info.path))
    if not everything and stream_id is None and required:
        raise FileNotFoundError(f"{location}: no streamtap capture there (no files)")
    for files in streams.values():
        files.sort(key=lambda file: (_first_seq(file), file.name))
    return _Listing(streams, files_of_many)


def _some(stream_ids: set[str]) -> str:
    """A few of the streams, for a message."""
    names = sorted(stream_ids)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _is_shared(file) -> bool:
    return _SHARED_NAME.fullmatch(file.name) is not None


def _window_of(file) -> tuple[str, str]:
    """(day directory, HHMMSS) of a file of many streams: which window it belongs to."""
    return posixpath.basename(posixpath.dirname(str(file))), file.name[:6]


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
        yield from _batch_chunks(batch)


def _stream_chunks(file, stream_id: str) -> Iterator[Chunk]:
    """The chunks of one stream in a file of many streams, reading only the row groups whose
    stream_id statistics can hold it."""
    with _open(file) as source:
        parquet = pq.ParquetFile(source)
        groups = _row_groups_holding(parquet.metadata, stream_id)
        if not groups:
            return
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=groups):
            mine = batch.filter(pc.equal(batch.column("stream_id"), stream_id))
            if mine.num_rows:
                yield from _batch_chunks(mine)


def _row_groups_holding(metadata, stream_id: str) -> list[int]:
    column = metadata.schema.to_arrow_schema().get_field_index("stream_id")
    groups = []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min <= stream_id <= stats.max:
            groups.append(group)
    return groups


def _batch_chunks(batch: pa.RecordBatch) -> Iterator[Chunk]:
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
