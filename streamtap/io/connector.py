"""The contract between a source type and the shared reading machinery.

A connector knows one protocol: it opens one session (a connection, an open file) and pumps the
bytes it receives into a ByteSink until the session ends. Everything else -- reconnecting with
backoff, sessions and discontinuities, sequence numbers, checksums, stats, stopping on a duration
or byte limit (`streamtap.io.reader`), chunking (`streamtap.io.cutting`), the event loop it runs
on (`streamtap.io.hub`) -- is shared, so a new source type is one small module.
"""

from __future__ import annotations

import abc
from typing import Mapping, Protocol

from streamtap.errors import PermanentSourceError, SourceError

__all__ = ["ByteSink", "Connector", "PermanentSourceError", "Session", "SourceError"]


class ByteSink(Protocol):
    """Where a connector delivers what it receives. Called only from the hub's event loop."""

    def write(self, data: bytes, whole: bool = False) -> None:
        """Appends received bytes, in order.

        `data` may be a memoryview of the connector's reused receive buffer: it is read during
        the call only (the sink copies what it keeps).

        whole=True keeps `data` inside one chunk (a UDP datagram): the current chunk is cut
        before it if it would not fit.
        """

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Sets session tags (content type, ICY stream title) for the bytes written from now on.

        A change cuts the current chunk, so every chunk's tags are true for all of its bytes.
        """

    async def wait_for_room(self) -> None:
        """Waits while the stream's buffer is full. Await it before each read (backpressure)."""

    def room(self) -> int:
        """Bytes the chunk being filled can still take. A read of exactly that many, written as
        a `bytes` object while no chunk is being filled, becomes the chunk's payload as it is."""

    def open_session(self, tags: Mapping[str, str]) -> Session:
        """A session of its own beside others at once: one connection of a listening source.

        Its bytes are cut into chunks of their own (a chunk never mixes two sessions' bytes),
        with a session id of their own and `tags` (say, the peer's address) in each; the first
        chunk of each is marked as a discontinuity. The chunks of all sessions share the
        stream's seq numbers and offsets, in the order they are cut. Write into the session as
        into this sink; close() it when the connection ends. A connector writes either into the
        sink or into sessions, not both (`streamtap.io.sessions`).
        """


class Session(ByteSink, Protocol):
    """One of several sessions of a stream at once (ByteSink.open_session)."""

    def close(self, error: str | None = None) -> None:
        """Cuts what the session holds and ends it. `error`: why it failed (reported as an error
        of the stream), None for a clean end."""


class Connector(abc.ABC):
    """Opens sessions of one configured stream. One instance per stream per worker process."""

    #: True when the session ends by itself at the end of the data (a regular file), so the
    #: default for `on_eof` is to stop rather than reconnect.
    ends_at_eof: bool = False

    #: True when a session can start at any byte offset (a regular file, a generator): a
    #: resumed or reopened session then misses nothing and is not marked as a discontinuity.
    seekable: bool = False

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this connector reads from, for logs and status lines (never include secrets)."""

    @abc.abstractmethod
    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        """Opens one session and writes everything it receives into `sink`.

        Args:
          sink: where to write the received bytes.
          resume_offset: byte offset the capture of this stream has reached. Seekable sources
            (regular files) continue from it; live sources ignore it.

        Returns normally at a clean end of the data (EOF). Raises SourceError (or OSError,
        asyncio.TimeoutError) when the session fails; the reader then reconnects. Must stop
        promptly when cancelled (asyncio.CancelledError).
        """

    async def close(self) -> None:
        """Releases what outlives single sessions (a listening socket). Called once at the end."""
