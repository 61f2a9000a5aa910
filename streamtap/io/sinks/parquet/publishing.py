"""After a Parquet file is written: renamed into place in order, retried when the disk is full.

`FileQueue` holds the files of one bundle being written on a thread pool and renames them in
the order they were closed (a stream's files in seq order), none after one that failed, so the
files of a stream on disk always end at a chunk boundary with nothing missing before it.

A write that finds the disk full (ENOSPC) or the user's quota used up (EDQUOT) may succeed once
something frees space (a cleanup job, a log rotation, the user): the file is written again from
its chunks, which the bundle still holds, after a backoff of 0.5 s doubling to 30 s, for up to
the sink's `max_retry_seconds` of the disk being full (`WriteRetry`). Then, or at once for any
other error (permissions, a read-only file system), the bundle fails with a `SinkError` whose one
line says what failed, where, and what to do. Nothing partial is ever renamed into place, so the
files on disk stay complete, and a new run continues the capture after them (resume).

Remote storage (HDFS, S3) that cannot be reached (a StorageError marked transient: the storage
layer retried the operation for up to a minute already) is retried the same way, the file
written again from its chunks and published, within the same `max_retry_seconds`.

No Beam here.
"""

from __future__ import annotations

import collections
import errno
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, NamedTuple

from streamtap.errors import SinkError
from streamtap.io.sinks.parquet.storage import publish, unlink_quietly
from streamtap.io.storage import StorageError

__all__ = [
    "FileQueue", "QueuedFile", "WriteRetry", "failure", "is_disk_full", "is_retried",
    "is_unreachable",
]

log = logging.getLogger(__name__)

# A bundle waits for its oldest file once this many files, or this many payload bytes, are
# being written (bounds memory).
_MAX_FILES_IN_FLIGHT = 32
_MAX_BYTES_IN_FLIGHT = 256 * 1024 * 1024
_FIRST_DELAY = 0.5
_LONGEST_DELAY = 30.0
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}

Written = tuple[str, str]  # (temporary path, final path) of a file written and fsync'ed


class QueuedFile(NamedTuple):
    """A file being written: the future of its (temporary, final) path, how to write it again
    from its chunks should the disk be full, and what it holds."""

    future: Future
    rewrite: Callable[[], Written]
    final: str
    window: object
    stream_id: str
    chunks: list[tuple[int, float]]  # (payload bytes, event time) of each chunk
    size: int  # payload bytes of all of them
    stream_ids: list[str] | None = None  # each chunk's stream, in a file of many streams


class FileQueue:
    """Files of one bundle being written on a thread pool, renamed in the order they were closed.

    Writing (tables, temporary file, fsync) runs on the pool; the rename to the final name happens
    in the bundle's thread, oldest file first. A write that found the disk full is written again
    there (WriteRetry); if a write fails for good, no later file is renamed: their temporary files
    are removed and the SinkError fails the bundle. ready() and drain() return the files renamed;
    `published(file)` is called for each, `failed()` for a SinkError.
    """

    def __init__(self, pool: ThreadPoolExecutor, retry: WriteRetry,
                 published: Callable[[QueuedFile], None], failed: Callable[[], None]):
        self._pool = pool
        self._retry = retry
        self._published = published
        self._failed = failed
        self._in_flight: collections.deque[QueuedFile] = collections.deque()  # in close order
        self._bytes = 0

    def add(self, file: QueuedFile) -> None:
        self._in_flight.append(file)
        self._bytes += file.size

    def has_ready(self) -> bool:
        return bool(self._in_flight) and (
            len(self._in_flight) > _MAX_FILES_IN_FLIGHT
            or self._bytes > _MAX_BYTES_IN_FLIGHT
            or self._in_flight[0].future.done()
        )

    def ready(self) -> list[QueuedFile]:
        """Renames finished files (oldest first); waits while too much is in flight."""
        done = []
        while self.has_ready():
            done.append(self._collect())
        return done

    def drain(self) -> list[QueuedFile]:
        done = []
        while self._in_flight:
            done.append(self._collect())
        return done

    def _collect(self) -> QueuedFile:
        file = self._in_flight.popleft()
        self._bytes -= file.size
        try:
            self._retry.written(
                lambda: _published(file.future.result()),
                lambda: _published(file.rewrite()),
                file.final,
            )
        except BaseException as error:
            self.abandon()
            if isinstance(error, SinkError):
                self._failed()
            raise
        self._published(file)
        return file

    def abandon(self) -> None:
        """Waits for the files still being written and removes them (never renamed)."""
        while self._in_flight:
            file = self._in_flight.popleft()
            try:
                temporary, _ = file.future.result()
            except BaseException:  # noqa: BLE001 - the first error is the one reported
                continue
            unlink_quietly(temporary)
        self._bytes = 0


def _published(written: Written) -> Written:
    """Publishes a written file (storage.publish); on failure its temporary file is removed."""
    temporary, final = written
    try:
        publish(temporary, final)
    except BaseException:
        unlink_quietly(temporary)
        raise
    return written


def is_disk_full(error: BaseException) -> bool:
    """True for an OSError that says the disk is full or the quota is used up."""
    return isinstance(error, OSError) and error.errno in _FULL


def is_unreachable(error: BaseException) -> bool:
    """True for remote storage (HDFS, S3) that could not be reached or refused for a while
    (a StorageError the storage layer retried for its own retry_seconds already)."""
    return isinstance(error, StorageError) and error.transient


def is_retried(error: BaseException) -> bool:
    """True for a write failure that writing the file again later may fix."""
    return is_disk_full(error) or is_unreachable(error)


def _reason(error: OSError) -> str:
    if is_disk_full(error):
        return _FULL[error.errno]
    return error.strerror or str(error)


class WriteRetry:
    """The retry state of one writer (DoFn instance): how long the disk has been full.

    `written(attempt, again, final)` returns the file `attempt` wrote, or writes it `again` while
    the disk stays full, and raises SinkError when it cannot. Not thread-safe: the bundle's
    thread calls it.
    """

    def __init__(self, limit_seconds: float, on_retry: Callable[[], None] = lambda: None):
        self._limit = limit_seconds
        self._on_retry = on_retry
        self._full_since: float | None = None
        self._delay = _FIRST_DELAY

    def written(self, attempt: Callable[[], Written], again: Callable[[], Written],
                final: str) -> Written:
        """The result of `attempt` (a finished write's result), or of `again` after retries.

        Raises SinkError for a write that fails for good; other exceptions pass unchanged.
        """
        try:
            result = attempt()
        except OSError as error:
            result = self._retry(error, again, final)
        self._full_since = None
        self._delay = _FIRST_DELAY
        return result

    def _retry(self, error: OSError, again: Callable[[], Written], final: str) -> Written:
        while True:
            if not is_retried(error):
                raise failure(error, final) from error
            now = time.monotonic()
            if self._full_since is None:
                self._full_since = now
                log.warning(
                    "parquet sink: %s writing %s; retrying with backoff for up to %g s "
                    "(max_retry_seconds): %s",
                    _reason(error), final, self._limit,
                    "free space on that file system" if is_disk_full(error)
                    else "bring the storage back",
                )
            elapsed = now - self._full_since
            if elapsed >= self._limit:
                raise failure(error, final, elapsed) from error
            pause = min(self._delay, self._limit - elapsed)
            log.info("parquet sink: writing %s again in %.1f s", final, pause)
            time.sleep(pause)
            self._delay = min(self._delay * 2, _LONGEST_DELAY)
            self._on_retry()
            try:
                return again()
            except OSError as next_error:
                error = next_error


def failure(error: OSError, final: str, retried: float | None = None) -> SinkError:
    """The one-line error for a file that could not be written."""
    reason = _reason(error)
    where = error.filename or final  # in a helper's batch, the file that failed it
    if retried is not None and is_unreachable(error):
        return SinkError(
            f"parquet sink: {reason}; retried for {retried:.0f} s (max_retry_seconds). The files "
            "there are complete up to the last one written: bring the storage back (or point "
            "the sink's path elsewhere), then run again, and the capture continues after them"
        )
    if retried is not None:
        return SinkError(
            f"parquet sink: {reason} writing {where}; retried for {retried:.0f} s "
            "(max_retry_seconds). The files on disk are complete up to the last one written: "
            "free space on that file system (or point the sink's path elsewhere), then run "
            "again, and the capture continues after them"
        )
    return SinkError(
        f"parquet sink: cannot write {where}: {reason}. The files on disk are complete up to "
        "the last one written: fix that, then run again, and the capture continues after them"
    )
