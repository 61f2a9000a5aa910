"""The storage interface: Storage, WritableFile, StorageError, FileInfo, naming and retries.

The contract every backend (local.py, hdfs.py, s3.py) implements; `streamtap.io.storage` says
what it guarantees and `open_storage` picks the backend for a location.
"""

from __future__ import annotations

import abc
import io
import logging
import posixpath
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "DEFAULT_CLEANUP_AGE",
    "DEFAULT_RETRY_SECONDS",
    "FileInfo",
    "Storage",
    "StorageError",
    "WritableFile",
    "check_relative",
    "is_hidden",
    "is_temporary",
    "retrying",
    "temporary_path",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRY_SECONDS = 60.0
# Temporaries younger than this are left alone by cleanup(): another process may still write them.
DEFAULT_CLEANUP_AGE = 3600.0

_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")


class StorageError(OSError):
    """A storage operation failed; the message names the location and, where known, the fix.

    `transient` is True when the failure was a store that could not be reached or refused for a
    while (retried for the whole retry_seconds already): trying the operation again later may
    succeed. False for a problem retrying cannot fix (no permission, a missing bucket).
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class FileInfo:
    """A published file: `path` relative to the storage root, size in bytes, mtime (epoch s)."""

    path: str
    size: int
    modified: float


def is_hidden(path: str) -> bool:
    """True for names readers skip: a last component starting with "." or "_"."""
    name = posixpath.basename(path.rstrip("/"))
    return name.startswith((".", "_"))


def is_temporary(path: str) -> bool:
    """True for a temporary name made by `temporary_path` (what cleanup() may remove)."""
    return bool(_TEMPORARY.match(posixpath.basename(path)))


def temporary_path(path: str) -> str:
    """A hidden name in the same directory as `path` for the file while it is written."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")


def check_relative(path: str) -> str:
    """`path` normalized; ValueError for an absolute path or one leaving the root."""
    normalized = posixpath.normpath(path) if path else ""
    if normalized in (".", ""):
        return ""
    if normalized == ".." or normalized.startswith(("/", "../")):
        raise ValueError(f"path must be relative to the storage root and stay inside it: {path!r}")
    return normalized


def retrying(
    operation: Callable[[], T],
    what: str,
    retry_seconds: float,
    transient: Callable[[BaseException], bool],
) -> T:
    """Runs `operation`, again after transient errors with backoff (0.2 s doubling to 5 s).

    Gives up (re-raises the last error) when the next attempt would start after retry_seconds.
    """
    deadline = time.monotonic() + retry_seconds
    delay = 0.2
    while True:
        try:
            return operation()
        except Exception as error:
            if not transient(error) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1f s", what, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class WritableFile(io.RawIOBase):
    """A file being written; visible under its final `path` only after `publish()`.

    Use it as a context manager: leaving the block without publishing (normally or by an
    exception) aborts it. pyarrow writes to it through `pyarrow.PythonFile(file, mode="w")`.
    """

    def __init__(self, path: str, url: str):
        super().__init__()
        self.path = path
        self.url = url
        self._written = 0
        self._finished = False

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data) -> int:
        if self._finished:
            raise ValueError(f"{self.url}: write after publish() or abort()")
        view = memoryview(data).cast("B")
        if view.nbytes:
            self._write(view)
            self._written += view.nbytes
        return view.nbytes

    def publish(self) -> None:
        """Makes the file visible under its final name, whole; afterwards it is closed."""
        if self._finished:
            raise ValueError(f"{self.url}: already published or aborted")
        self._finished = True
        try:
            self._publish()
        except BaseException:
            self._discard()
            raise
        finally:
            super().close()

    def abort(self) -> None:
        """Discards what was written (best effort, never raises); nothing becomes visible."""
        if self._finished:
            return
        self._finished = True
        try:
            self._discard()
        except Exception as error:  # noqa: BLE001 - cleanup() removes what is left
            log.warning("could not discard the unpublished %s: %s", self.url, error)
        super().close()

    def close(self) -> None:
        """Closing without publish() aborts (io's close() is called by __del__ and `with`)."""
        if not self._finished:
            self.abort()
        super().close()

    # Backends implement these three.
    @abc.abstractmethod
    def _write(self, view: memoryview) -> None: ...

    @abc.abstractmethod
    def _publish(self) -> None: ...

    @abc.abstractmethod
    def _discard(self) -> None: ...


class Storage(abc.ABC):
    """A directory (local, HDFS) or prefix (S3) that files are published into and read from."""

    scheme: str = ""

    def __init__(self, url: str, retry_seconds: float = DEFAULT_RETRY_SECONDS):
        if retry_seconds < 0:
            raise ValueError(f"retry_seconds must be >= 0, got {retry_seconds}")
        self.url = url.rstrip("/")
        self.retry_seconds = retry_seconds

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def location(self, path: str = "") -> str:
        """The full URL of `path` (relative to the root)."""
        path = check_relative(path)
        return f"{self.url}/{path}" if path else self.url

    @abc.abstractmethod
    def check(self) -> None:
        """Fails fast with StorageError if the store cannot be reached or used right now."""

    @abc.abstractmethod
    def open_write(self, path: str) -> WritableFile:
        """A new file to be published at `path` (parent directories are created as needed)."""

    def write(self, path: str, data) -> None:
        """Publishes `data` (bytes-like) at `path` atomically, the whole write retried.

        A transient failure anywhere (create, write, publish) starts the file again under a
        new temporary name, for up to retry_seconds.
        """

        def attempt() -> None:
            with self.open_write(path) as file:
                file.write(data)
                file.publish()

        retrying(
            attempt,
            f"writing {self.location(path)}",
            self.retry_seconds,
            lambda error: isinstance(error, StorageError) and error.transient,
        )

    @abc.abstractmethod
    def read(self, path: str) -> bytes:
        """The whole content of the published file at `path`; FileNotFoundError if none."""

    @abc.abstractmethod
    def open_read(self, path: str) -> io.RawIOBase:
        """A seekable binary reader of `path` (pyarrow reads a Parquet footer without the rest)."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[FileInfo]:
        """Published files under the directory `prefix` (recursive), sorted by path.

        Hidden names (temporaries included) and directories are left out; a missing prefix is
        an empty list.
        """

    def exists(self, path: str) -> bool:
        """True if a published file is at `path`."""
        try:
            return self.size(path) >= 0
        except FileNotFoundError:
            return False

    @abc.abstractmethod
    def size(self, path: str) -> int:
        """Size in bytes of the file at `path`; FileNotFoundError if none."""

    @abc.abstractmethod
    def delete(self, path: str) -> bool:
        """Removes the file at `path`; False if there was none."""

    @abc.abstractmethod
    def cleanup(self, prefix: str = "", older_than: float = DEFAULT_CLEANUP_AGE) -> list[str]:
        """Removes what crashed writers left under `prefix` at least `older_than` seconds ago.

        Temporary files (local, HDFS) or incomplete multipart uploads (S3). Returns their paths.
        Younger ones are kept: a writer in another process may still be writing them.
        """

    def close(self) -> None:
        """Releases the client (a later call opens it again)."""
