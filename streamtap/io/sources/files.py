"""File sources: regular files (resumable by offset, optionally followed), FIFOs and devices.

A regular file is seekable: a session that resumes after a failure or on another worker seeks to
the capture's byte offset, so nothing is lost or repeated and no discontinuity is marked. A FIFO
or character device is live: like a socket, bytes that nobody read while it was closed are gone.

A followed file is read as `tail -F` reads a log: when it is truncated in place (copytruncate) or
replaced by a new file under its name (rename, then create), the old content is read to its end
and the new content is read from its first byte, as a new session marked as a discontinuity
(bytes written between a copy and its truncate may be missing).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from dataclasses import dataclass
from typing import ClassVar

from streamtap.config import SourceConfig, doc
from streamtap.io.connector import ByteSink, Connector
from streamtap.errors import SourceError

__all__ = ["FileSource"]

log = logging.getLogger(__name__)

_READ_SIZE = 1024 * 1024


@dataclass(kw_only=True)
class FileSource(SourceConfig):
    type_name: ClassVar[str] = "file"

    path: str = doc("Path of a regular file, a FIFO (named pipe) or a character device.", "")
    follow: bool = doc(
        "Regular files: keep reading what is appended (like tail -f) instead of stopping at the "
        "end.",
        False,
    )
    start_offset: int = doc(
        "Regular files: byte offset the capture starts at.", 0, min=0, max=2**62
    )
    poll_interval: float = doc(
        "Seconds between checks for appended data when following.", 0.2, min=0.001, max=3600
    )

    def validate(self, path: str) -> list[str]:
        errors = super().validate(path)
        if not self.path:
            errors.append(f"{path}.path: required: the file, FIFO or device to read")
        return errors

    def connector(self) -> Connector:
        return _FileConnector(self)


class _FileConnector(Connector):
    def __init__(self, config: FileSource):
        self._config = config
        # A regular file that is not followed ends; FIFOs and devices are live streams.
        self.ends_at_eof = not config.follow
        self.seekable = False
        # The followed file being read, (st_dev, st_ino), and the stream offset of its byte 0:
        # after a rotation the stream's offsets go on while the new file starts at 0.
        self._identity: tuple[int, int] | None = None
        self._base = 0
        self._switch_files = False  # the file was truncated or replaced: start the new one at 0

    def describe(self) -> str:
        return f"file://{os.path.abspath(self._config.path)}"

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        path = self._config.path
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise SourceError(f"{path} does not exist: check the path (waiting for it)") from None
        except PermissionError:
            raise SourceError(f"no permission to read {path}") from None
        if stat.S_ISREG(mode):
            await self._read_regular(sink, resume_offset)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            await self._read_live(sink)
        else:
            raise SourceError(f"{path} is not a regular file, FIFO or character device")

    async def _read_regular(self, sink: ByteSink, resume_offset: int) -> None:
        loop = asyncio.get_running_loop()
        with open(self._config.path, "rb", buffering=0) as file:
            info = os.fstat(file.fileno())
            identity = (info.st_dev, info.st_ino)
            # Where in this file the stream resumes. A file shorter than that, or another file
            # than the one read before, or one seen truncated: its content starts a new stretch.
            if self._identity is None and resume_offset > 0 and info.st_size < resume_offset:
                self._switch_files = self._config.follow
            elif self._identity is not None and identity != self._identity:
                self._switch_files = True
            if self._switch_files:
                self._base = resume_offset
                self._switch_files = False
                self.seekable = False  # the reader marks the new stretch as a discontinuity
            else:
                self.seekable = True
            self._identity = identity
            offset = resume_offset - self._base
            file.seek(offset)
            while True:
                await sink.wait_for_room()
                data = await loop.run_in_executor(None, file.read, _READ_SIZE)
                if data:
                    sink.write(data)
                    offset += len(data)
                    continue
                if not self._config.follow:
                    return
                if self._rotated(file, offset):
                    return  # the next session reads the new content from its start
                await asyncio.sleep(self._config.poll_interval)

    def _rotated(self, file, offset: int) -> bool:
        """At the end of a followed file: was it truncated, or replaced under its name?"""
        if os.fstat(file.fileno()).st_size < offset:
            what = "truncated"
        else:
            try:
                info = os.stat(self._config.path)
            except FileNotFoundError:
                return False  # renamed away, the new file not created yet: keep waiting
            if (info.st_dev, info.st_ino) == self._identity:
                return False
            what = "replaced by a new file"
        log.info("%s was %s at byte %d: reading the new content from its start",
                 self._config.path, what, offset)
        self._switch_files = True
        return True

    async def _read_live(self, sink: ByteSink) -> None:
        """Reads a FIFO or device without blocking a thread: the event loop polls the fd.

        A FIFO opened this way reports nothing until a writer has opened it; after the last
        writer closes, reads return b'' (the end of this session).
        """
        loop = asyncio.get_running_loop()
        fd = os.open(self._config.path, os.O_RDONLY | os.O_NONBLOCK)
        readable = asyncio.Event()
        try:
            loop.add_reader(fd, readable.set)
        except PermissionError:
            # Devices that cannot be polled (/dev/zero, /dev/urandom) never block: plain reads.
            os.close(fd)
            await self._read_unpollable(sink)
            return
        try:
            while True:
                await sink.wait_for_room()
                await readable.wait()
                readable.clear()
                try:
                    data = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    return
                sink.write(data)
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def _read_unpollable(self, sink: ByteSink) -> None:
        loop = asyncio.get_running_loop()
        with open(self._config.path, "rb", buffering=0) as device:
            while True:
                await sink.wait_for_room()
                data = await loop.run_in_executor(None, device.read, _READ_SIZE)
                if not data:
                    return
                sink.write(data)
