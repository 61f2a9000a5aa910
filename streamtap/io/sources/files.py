"""File sources: regular files (resumable by offset, optionally followed), FIFOs and devices.

A regular file is seekable: a session that resumes after a failure or on another worker seeks to
the capture's byte offset, so nothing is lost or repeated and no discontinuity is marked. A FIFO
or character device is live: like a socket, bytes that nobody read while it was closed are gone.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from typing import ClassVar

from streamtap.config import SourceConfig, doc
from streamtap.io.connector import ByteSink, Connector
from streamtap.errors import SourceError

__all__ = ["FileSource"]

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
            self.seekable = True
            await self._read_regular(sink, resume_offset)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            await self._read_live(sink)
        else:
            raise SourceError(f"{path} is not a regular file, FIFO or character device")

    async def _read_regular(self, sink: ByteSink, offset: int) -> None:
        loop = asyncio.get_running_loop()
        with open(self._config.path, "rb", buffering=0) as file:
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
                if os.fstat(file.fileno()).st_size < offset:
                    raise SourceError(
                        f"{self._config.path} shrank below byte {offset}: it was truncated or "
                        "replaced; capture a rotated log by its new name"
                    )
                await asyncio.sleep(self._config.poll_interval)

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
