"""Reading a Parquet capture back: its files, its chunks, and where each stream's capture ends.

`verify`, `reassemble` (ParquetSink.read_location) and resume (ParquetSink.resume_positions)
read through these. Only complete files count: temporary ones (hidden names) are never listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from streamtap.chunk import Chunk
from streamtap.io.sinks.parquet.storage import max_seq

__all__ = ["capture_end", "capture_files", "read_parquet_chunks"]


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
        yield from _file_chunks(file)


def capture_end(path: str, stream_id: str) -> tuple[int, int] | None:
    """(next seq, next offset) after the last chunk of a stream in a capture, or None.

    Finds the file holding the highest seq from the files' footer statistics, then reads that one
    file's seq, offset and payload columns.
    """
    best: tuple[int, Path] | None = None
    for file in capture_files(path, stream_id):
        end = max_seq(str(file))
        if end is not None and (best is None or end > best[0]):
            best = (end, file)
    if best is None:
        return None
    table = pq.read_table(best[1], columns=["seq", "offset", "payload"])
    last = pc.index(table.column("seq"), best[0]).as_py()
    offset = table.column("offset")[last].as_py()
    length = len(table.column("payload")[last].as_py())
    return best[0] + 1, offset + length


def _file_chunks(file: Path) -> Iterable[Chunk]:
    """The chunks of one file, in its row order."""
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
