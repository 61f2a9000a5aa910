"""Storage on a local (or mounted) file system: temporary name, fsync, rename.

The same protocol the Parquet sink uses on disk: a file is written under a hidden temporary
name in its final directory, fsync'ed, and renamed with os.replace, so a reader sees either the
old file or the whole new one. A crash leaves at most a hidden temporary, which `list()` skips
and `cleanup()` removes.
"""

from __future__ import annotations

import io
import os
import posixpath
import time
from pathlib import Path

from streamtap.io.storage.base import (
    DEFAULT_CLEANUP_AGE,
    DEFAULT_RETRY_SECONDS,
    FileInfo,
    Storage,
    StorageError,
    WritableFile,
    check_relative,
    is_hidden,
    is_temporary,
    temporary_path,
)

__all__ = ["LocalStorage"]


class _LocalFile(WritableFile):
    def __init__(self, path: str, url: str, final: Path):
        super().__init__(path, url)
        self._final = final
        self._temporary = final.parent / posixpath.basename(temporary_path(final.name))
        final.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: pyarrow and callers hand over large pieces; the kernel buffers the rest.
        # Open across write() calls until publish/abort closes it.
        self._file = open(self._temporary, "xb", buffering=0)  # noqa: SIM115

    def _write(self, view: memoryview) -> None:
        while view.nbytes:
            written = self._file.write(view)
            view = view[written:]

    def _publish(self) -> None:
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temporary, self._final)

    def _discard(self) -> None:
        self._file.close()
        try:
            os.unlink(self._temporary)
        except FileNotFoundError:
            pass


class LocalStorage(Storage):
    """Files under a local directory (a path or a file:// URL)."""

    scheme = "file"

    def __init__(self, location: str, retry_seconds: float = DEFAULT_RETRY_SECONDS):
        path = location.removeprefix("file://")
        if not path:
            raise ValueError("a local storage location needs a path")
        self.root = Path(path).resolve()
        super().__init__(self.root.as_uri(), retry_seconds)

    def _path(self, path: str) -> Path:
        relative = check_relative(path)
        return self.root / relative if relative else self.root

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create the directory {self.root}: {error}") from error
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"{self.root} is not writable by this user")

    def open_write(self, path: str) -> WritableFile:
        if not check_relative(path):
            raise ValueError("open_write needs a file path, not the root")
        return _LocalFile(path, self.location(path), self._path(path))

    def read(self, path: str) -> bytes:
        return self._path(path).read_bytes()

    def open_read(self, path: str) -> io.RawIOBase:
        return open(self._path(path), "rb", buffering=0)

    def size(self, path: str) -> int:
        target = self._path(path)
        if not target.is_file():
            raise FileNotFoundError(str(target))
        return target.stat().st_size

    def list(self, prefix: str = "") -> list[FileInfo]:
        found = []
        for entry, relative in self._walk(prefix):
            if not is_hidden(relative):
                stat = entry.stat()
                found.append(FileInfo(relative, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda info: info.path)

    def delete(self, path: str) -> bool:
        try:
            self._path(path).unlink()
        except FileNotFoundError:
            return False
        return True

    def cleanup(self, prefix: str = "", older_than: float = DEFAULT_CLEANUP_AGE) -> list[str]:
        cutoff = time.time() - older_than
        removed = []
        for entry, relative in self._walk(prefix, hidden=True):
            if is_temporary(relative):
                try:
                    if entry.stat().st_mtime <= cutoff:
                        os.unlink(entry.path)
                        removed.append(relative)
                except FileNotFoundError:
                    pass  # published or removed meanwhile
        return sorted(removed)

    def _walk(self, prefix: str, hidden: bool = False):
        """(DirEntry, path relative to the root) of every file under `prefix`.

        Hidden directories are not entered unless `hidden`.
        """
        start = self._path(prefix)
        pending = [start]
        while pending:
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                relative = Path(entry.path).relative_to(self.root).as_posix()
                if entry.is_dir(follow_symlinks=False):
                    if hidden or not is_hidden(relative):
                        pending.append(Path(entry.path))
                elif entry.is_file():
                    yield entry, relative
