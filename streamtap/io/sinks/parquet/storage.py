"""Where the Parquet sink touches the file system: names, directories, fsync, publishing, removing.

A capture is laid out in Hive-style partitions:

    <path>/stream=<stream_id>/date=<YYYY-MM-DD>/<HHMMSS>-<first seq>.parquet

A file is written under a hidden temporary name (".<name>.tmp-<random>") in its final
directory, fsync'ed, and published by a rename, so a reader never sees a partial file under a
final name (and readers skip names starting with "."). A writer that dies leaves its temporary
file behind: `remove_stale_temporaries` removes those of this naming once they are old (the
sink's preflight). Local disk through `os` and pyarrow today: every operation the writers need
is one small function here, which is what another file system (HDFS, S3) replaces. Reading a
capture back is read.py.

No Beam here: the helper processes (writer_processes.py) import this module too.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "STALE_TEMPORARY_SECONDS", "file_location", "fsync", "is_temporary_name", "make_directory",
    "max_seq", "open_for_writing", "publish", "remove_stale_temporaries", "temporary_name",
    "unlink_quietly", "write_back",
]

log = logging.getLogger(__name__)

# A temporary file untouched for this long belongs to a writer that died: a live writer renames
# its file within seconds of its last write (one bundle's files, fsync'ed, renamed in order).
STALE_TEMPORARY_SECONDS = 3600.0
# What temporary_name makes of a file name: ".<HHMMSS>-<first seq>.parquet.tmp-<8 hex>".
_TEMPORARY = re.compile(r"\.\d{6}-\d+\.parquet\.tmp-[0-9a-f]{8}")


def file_location(root: str, stream_id: str, window, first_seq: int) -> tuple[str, str]:
    """(directory, file name) of the file of `stream_id` in `window` starting at `first_seq`."""
    start = datetime.datetime.fromtimestamp(float(window.start), datetime.timezone.utc)
    directory = os.path.join(root, f"stream={stream_id}", f"date={start:%Y-%m-%d}")
    return directory, f"{start:%H%M%S}-{first_seq:012d}.parquet"


def temporary_name(directory: str, name: str) -> str:
    """A hidden name next to directory/name for the file while it is written."""
    return os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


def is_temporary_name(name: str) -> bool:
    """True for a file name temporary_name gives a file of this sink while it is written."""
    return _TEMPORARY.fullmatch(name) is not None


def remove_stale_temporaries(
    root: str, older_than: float = STALE_TEMPORARY_SECONDS, now: float | None = None
) -> list[str]:
    """Removes this sink's temporary files under `root` that were last written more than
    `older_than` seconds ago; returns their paths.

    Only names of temporary_name's form in the capture's own directories
    (<root>/stream=<id>/date=<day>/) are candidates: never a final file, nor anything else.
    """
    now = time.time() if now is None else now
    removed = []
    for stream in _subdirectories(root, "stream="):
        for day in _subdirectories(stream, "date="):
            try:
                entries = list(os.scandir(day))
            except OSError:
                continue
            for entry in entries:
                if not is_temporary_name(entry.name):
                    continue
                try:
                    stale = entry.is_file(follow_symlinks=False) and (
                        now - entry.stat(follow_symlinks=False).st_mtime > older_than
                    )
                    if stale:
                        os.unlink(entry.path)
                        removed.append(entry.path)
                except OSError as error:  # gone meanwhile, or not ours to remove
                    log.debug("leaving %s: %s", entry.path, error)
    if removed:
        log.info("removed %d stale temporary file(s) under %s", len(removed), root)
    return removed


def _subdirectories(directory: str, prefix: str) -> list[str]:
    try:
        return sorted(
            entry.path for entry in os.scandir(directory)
            if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False)
        )
    except OSError:
        return []


def make_directory(directory: str) -> None:
    """Creates `directory` and its parents if missing."""
    os.makedirs(directory, exist_ok=True)


def open_for_writing(path: str) -> pa.NativeFile:
    """A new file at `path` for pyarrow to write (its own file, not a Python file object)."""
    return pa.OSFile(path, "wb")


def fsync(path: str) -> None:
    """Makes a written file durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_back(path: str) -> None:
    """fdatasync of a file being written, only to get its pages to disk early (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # already renamed or removed
    try:
        os.fdatasync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(temporary: str, final: str) -> None:
    """Renames a written file to its final name, unless a file of that name goes further.

    Same name means same window and first seq, so the same chunks from there on (a chunk's seq
    always comes with the same bytes). A retry normally brings at least the chunks of the first
    attempt; should it bring fewer (a runner that split the retried bundle earlier), the file
    already there holds every chunk of ours and more: replacing it could lose chunks that no
    later file has, so ours is dropped instead.
    """
    if os.path.exists(final):
        try:
            kept_end = max_seq(final)
        except Exception:  # noqa: BLE001 - an unreadable file is replaced
            kept_end = None
        ours = max_seq(temporary)
        if kept_end is not None and ours is not None and kept_end > ours:
            unlink_quietly(temporary)
            return
    os.replace(temporary, final)


def unlink_quietly(path: str) -> None:
    """Removes a file if it is there."""
    try:
        os.unlink(path)
    except OSError:
        pass


def max_seq(path: str) -> int | None:
    """The highest seq in a file, from its footer statistics (None without statistics)."""
    metadata = pq.ParquetFile(path).metadata
    column = metadata.schema.to_arrow_schema().get_field_index("seq")
    ends = [
        metadata.row_group(group).column(column).statistics.max
        for group in range(metadata.num_row_groups)
        if metadata.row_group(group).column(column).statistics is not None
        and metadata.row_group(group).column(column).statistics.has_min_max
    ]
    return max(ends) if ends else None
