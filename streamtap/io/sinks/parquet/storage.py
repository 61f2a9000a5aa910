"""Where the Parquet sink touches the file system: names, directories, fsync, publishing, removing.

A capture is laid out in Hive-style partitions, a directory per stream (`layout: per_stream`)

    <path>/stream=<stream_id>/date=<YYYY-MM-DD>/<HHMMSS>-<first seq>.parquet

or files of many streams each (`layout: many_streams`), named by a digest of which chunks they
hold (the streams and seqs), so a retried window writes the same names and another run's
chunks of the same window never replace them:

    <path>/date=<YYYY-MM-DD>/<HHMMSS>-streams-<16 hex digits>.parquet

A file is written under a hidden temporary name (".<name>.tmp-<random>") in its final
directory, fsync'ed, and published by a rename, so a reader never sees a partial file under a
final name (and readers skip names starting with "."). A writer that dies leaves its temporary
file behind: `remove_stale_temporaries` removes those of this naming once they are old (the
sink's preflight). Reading a capture back is read.py.

Remote storage (`hdfs://host:port/path`, `s3://bucket/prefix`): the same functions take the
same names, with `root` a URL. A file is then encoded in memory under its temporary name (no
fsync, no directories), and `publish` hands it to `streamtap.io.storage` (`Storage.write`),
which makes it visible whole or not at all (a temporary name and a rename on HDFS, a PUT or a
completed multipart upload on S3) and retries a store that goes away for `retry_seconds`. The
Storage of a root is opened once per process by `remote_root` (the writers' setup) and found
again from a file's URL. The helper processes (writer_processes.py) write local files only.

No Beam here: the helper processes (writer_processes.py) import this module too.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import logging
import os
import re
import threading
import time
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "STALE_TEMPORARY_SECONDS", "file_location", "fsync", "is_remote", "is_temporary_name",
    "make_directory", "max_seq", "open_for_writing", "publish", "remote_root",
    "remove_stale_temporaries", "shared_file_location", "split_location", "temporary_name",
    "unlink_quietly", "write_back",
]

log = logging.getLogger(__name__)

# A temporary file untouched for this long belongs to a writer that died: a live writer renames
# its file within seconds of its last write (one bundle's files, fsync'ed, renamed in order).
STALE_TEMPORARY_SECONDS = 3600.0
# What temporary_name makes of a file name: ".<HHMMSS>-<first seq>.parquet.tmp-<8 hex>" (or
# "-streams-<16 hex>" in place of the first seq).
_TEMPORARY = re.compile(r"\.\d{6}-(\d+|streams-[0-9a-f]{16})\.parquet\.tmp-[0-9a-f]{8}")
# How long one storage operation is retried by the storage layer itself (the sink's
# max_retry_seconds retries the whole file on top of it, publishing.WriteRetry).
_STORAGE_RETRY_SECONDS = 60.0

# Remote files encoded in memory, by temporary name, until published or dropped.
_STAGED: dict[str, bytes] = {}
# The Storage of each remote root in this process (remote_root), by root URL.
_ROOTS: dict[str, object] = {}
_ROOTS_LOCK = threading.Lock()


def is_remote(path: str) -> bool:
    """True for a location on HDFS or S3 (a URL with a scheme), False for a local path."""
    return "://" in path and not path.startswith("file://")


def split_location(location: str, endpoint_url: str | None = None) -> tuple[str, str | None]:
    """(root URL without a query, endpoint URL) of `s3://b/p?endpoint_url=...`; the argument
    wins over the query. Other locations come back unchanged."""
    parsed = urllib.parse.urlsplit(location)
    if not is_remote(location) or not parsed.query:
        return location.rstrip("/") if is_remote(location) else location, endpoint_url
    query = urllib.parse.parse_qs(parsed.query)
    endpoint = endpoint_url or (query.get("endpoint_url") or [None])[0]
    return urllib.parse.urlunsplit(parsed._replace(query="")).rstrip("/"), endpoint


def remote_root(root: str, endpoint_url: str | None = None,
                retry_seconds: float = _STORAGE_RETRY_SECONDS):
    """The Storage (streamtap.io.storage) of a remote capture root, opened once per process
    (again for another endpoint_url); publish() finds it again from a file's URL."""
    from streamtap.io.storage import open_storage

    with _ROOTS_LOCK:
        storage = _ROOTS.get(root)
        other_endpoint = endpoint_url is not None and endpoint_url != getattr(
            storage, "endpoint_url", None
        )
        if storage is None or other_endpoint:
            storage = _ROOTS[root] = open_storage(
                root, endpoint_url=endpoint_url, retry_seconds=retry_seconds
            )
        return storage


def _storage_of(url: str):
    """(Storage, path relative to its root) of a remote file's URL."""
    for root, storage in sorted(_ROOTS.items(), key=lambda item: -len(item[0])):
        if url.startswith(root + "/"):
            return storage, url[len(root) + 1 :]
    raise RuntimeError(f"no storage opened for {url} (remote_root was not called)")


class _StagedFile(io.BytesIO):
    """A remote file being encoded: on close its bytes wait in _STAGED for publish()."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    def close(self) -> None:
        if not self.closed:
            _STAGED[self._name] = self.getvalue()
        super().close()


def file_location(root: str, stream_id: str, window, first_seq: int) -> tuple[str, str]:
    """(directory, file name) of the file of `stream_id` in `window` starting at `first_seq`."""
    start = datetime.datetime.fromtimestamp(float(window.start), datetime.timezone.utc)
    directory = os.path.join(root, f"stream={stream_id}", f"date={start:%Y-%m-%d}")
    return directory, f"{start:%H%M%S}-{first_seq:012d}.parquet"


def shared_file_location(root: str, window, rows) -> tuple[str, str]:
    """(directory, file name) of a file of many streams in `window` holding `rows` (Chunks, in
    the file's order): the name's digest covers every (stream, seq) it holds."""
    start = datetime.datetime.fromtimestamp(float(window.start), datetime.timezone.utc)
    digest = hashlib.blake2b(digest_size=8)
    for row in rows:
        digest.update(f"{row.stream_id}\0{row.seq}\n".encode())
    directory = os.path.join(root, f"date={start:%Y-%m-%d}")
    return directory, f"{start:%H%M%S}-streams-{digest.hexdigest()}.parquet"


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
    (<root>/stream=<id>/date=<day>/ and <root>/date=<day>/) are candidates: never a final file,
    nor anything else.
    Remote storage: what Storage.cleanup removes under the root (the storage layer's temporary
    names on HDFS, incomplete multipart uploads on S3), as URLs.
    """
    now = time.time() if now is None else now
    if is_remote(root):
        storage = remote_root(root)
        age = older_than + (time.time() - now)
        removed = [storage.location(path) for path in storage.cleanup(older_than=age)]
        if removed:
            log.info("removed %d stale temporary file(s) under %s", len(removed), root)
        return removed
    removed = []
    days = [day for stream in _subdirectories(root, "stream=")
            for day in _subdirectories(stream, "date=")]
    for day in days + _subdirectories(root, "date="):
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
    """Creates `directory` and its parents if missing (remote storage: nothing to do)."""
    if not is_remote(directory):
        os.makedirs(directory, exist_ok=True)


def open_for_writing(path: str):
    """A new file at `path` for pyarrow to write: its own file on local disk (not a Python file
    object), an in-memory file for remote storage, uploaded by publish()."""
    if is_remote(path):
        return _StagedFile(path)
    return pa.OSFile(path, "wb")


def fsync(path: str) -> None:
    """Makes a written file durable (remote storage: publish() does)."""
    if is_remote(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_back(path: str) -> None:
    """fdatasync of a file being written, only to get its pages to disk early (best effort)."""
    if is_remote(path):
        return
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

    Remote storage: the same decision, then the staged bytes are written through the Storage
    (atomic, transient failures retried); a failure raises StorageError, an OSError, and the
    staged bytes stay for another attempt until unlink_quietly(temporary).
    """
    if is_remote(final):
        _publish_remote(temporary, final)
        return
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


def _publish_remote(temporary: str, final: str) -> None:
    data = _STAGED.get(temporary)
    if data is None:
        raise FileNotFoundError(f"{temporary}: nothing staged to publish")
    storage, path = _storage_of(final)
    if storage.exists(path):
        try:
            with storage.open_read(path) as kept:
                kept_end = max_seq(kept)
        except FileNotFoundError:
            kept_end = None
        except Exception as error:  # an unreadable file is replaced
            if getattr(error, "transient", False):
                raise
            kept_end = None
        ours = max_seq(pa.BufferReader(data))
        if kept_end is not None and ours is not None and kept_end > ours:
            _STAGED.pop(temporary, None)
            return
    storage.write(path, data)
    _STAGED.pop(temporary, None)


def unlink_quietly(path: str) -> None:
    """Removes a file if it is there (a remote one's staged bytes)."""
    if is_remote(path):
        _STAGED.pop(path, None)
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def max_seq(path) -> int | None:
    """The highest seq in a file, from its footer statistics (None without statistics).

    `path`: a local path, a remote file's temporary name (its staged bytes) or a readable file.
    """
    if isinstance(path, str) and is_remote(path):
        path = pa.BufferReader(_STAGED[path])
    metadata = pq.ParquetFile(path).metadata
    column = metadata.schema.to_arrow_schema().get_field_index("seq")
    ends = [
        metadata.row_group(group).column(column).statistics.max
        for group in range(metadata.num_row_groups)
        if metadata.row_group(group).column(column).statistics is not None
        and metadata.row_group(group).column(column).statistics.has_min_max
    ]
    return max(ends) if ends else None
