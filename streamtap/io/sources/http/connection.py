"""One HTTP(S) connection of the `http` source: the URL it goes to, and timed reads from it.

`Target` is a URL split into what a connection and a request line need (shown only through
`streamtap.redaction.redact_url`: no user info, query values or fragment). `Connection` is one
TCP or TLS connection whose head reads are bounded by the read timeout; after the head it hands
its transport to the body's receiver (`streamtap.io.sources.http.receiver`), which reads the
body in data_received: the per-read cost of 1,000 live streams is the hot path, not the bytes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
import sys
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, urlsplit

from streamtap.errors import PermanentSourceError, SourceError
from streamtap.redaction import redact_url

__all__ = [
    "DEFAULT_PORTS",
    "MAX_HEAD_BYTES",
    "OPENINGS_PER_SERVER",
    "Connection",
    "Target",
    "open_stream",
    "opening_slot",
    "os_error_text",
    "url_problem",
    "within",
]

_T = TypeVar("_T")

MAX_HEAD_BYTES = 64 * 1024  # status line plus headers (and chunked trailers) of one response
DEFAULT_PORTS = {"http": 80, "https": 443}
# Connections being opened (connect, request, response head) at once per server and process.
# Icecast listens with a backlog of 5: 2,000-3,000 streams connecting at once overflowed it, and
# 76-504 connections per run got no answer within connect_timeout and were reopened; a bare
# client opening 32 at a time lost none. The others wait their turn.
OPENINGS_PER_SERVER = 32

# Per event loop (semaphores belong to one): {"host:port": semaphore}.
_OPENINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# --- URLs ----------------------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """What is wrong with `url` as a stream URL, or None if it is usable."""
    if not url:
        return "required: give the http:// or https:// URL of the stream"
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "must not contain spaces or control characters (percent-encode them, e.g. %20)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as error:
        return f"{redact_url(url)!r} is not a valid URL: {error}"
    if parts.scheme.lower() not in DEFAULT_PORTS:
        shown = repr(parts.scheme) if parts.scheme else "none"
        return f"scheme {shown} is not supported; use an http:// or https:// URL"
    if not parts.hostname:
        return f"{redact_url(url)!r} has no host; expected http://host[:port]/path"
    return None


@dataclass(frozen=True)
class Target:
    """One URL to GET, split into what a connection and a request line need."""

    url: str
    scheme: str
    host: str
    port: int
    request_target: str  # path and query, as sent in the request line

    @classmethod
    def parse(cls, url: str) -> Target:
        problem = url_problem(url)
        if problem:
            raise PermanentSourceError(f"cannot use URL {redact_url(url)!r}: {problem}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        # Keep valid percent-escapes and reserved characters; escape what a request line can't hold.
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
        return cls(
            url=url,
            scheme=scheme,
            host=parts.hostname or "",
            port=parts.port or DEFAULT_PORTS[scheme],
            request_target=f"{path}?{query}" if query else path,
        )

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def where(self) -> str:
        """The URL fit for messages: no user info, query values or fragment (redact_url)."""
        return redact_url(self.url)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def address(self) -> str:
        """host:port, for messages about the connection itself."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# --- the connection ------------------------------------------------------------------------------


def opening_slot(address: str) -> asyncio.Semaphore:
    """The semaphore a connection to `address` ("host:port") holds while it is being opened,
    on the running event loop."""
    slots = _OPENINGS.setdefault(asyncio.get_running_loop(), {})
    slot = slots.get(address)
    if slot is None:
        slot = slots[address] = asyncio.Semaphore(OPENINGS_PER_SERVER)
    return slot


async def within(seconds: float, awaitable: Awaitable[_T]) -> _T:
    """Awaits `awaitable`, raising asyncio.TimeoutError after `seconds`."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):  # cheaper than wait_for: no extra task per read
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, noting whether the connection ended: the response head is
    read through its StreamReader, then the body's receiver takes the transport over and must
    know whether the end of the data already came."""

    ended = False

    def eof_received(self) -> bool | None:
        self.ended = True
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        super().connection_lost(exc)


async def open_stream(
    host: str | None = None, port: int | None = None, **kwargs
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection() (same arguments; limit MAX_HEAD_BYTES) for a `Connection`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_HEAD_BYTES, loop=loop)
    protocol = _StreamProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port, **kwargs)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class Connection:
    """One TCP/TLS connection (from `open_stream`); every read is bounded by the read timeout.

    The head is read through asyncio's StreamReader (`read_line`, `read_exactly`); the body by
    a protocol that `take_over()` installs (`streamtap.io.sources.http.receiver`).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: Target,
        read_timeout: float,
        gather_seconds: float = 0.0,
    ):
        self._reader = reader
        self._writer = writer
        self.target = target
        self.read_timeout = read_timeout
        self.gather_seconds = gather_seconds
        self._receiver = None  # the protocol that took over (take_over)

    @property
    def transport(self) -> asyncio.Transport:
        return self._writer.transport

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._guard(self._writer.drain())

    async def take_over(self, protocol: asyncio.Protocol) -> tuple[bytes, bool]:
        """Makes `protocol` the transport's, with reading paused (its to resume).

        Returns the bytes the stream protocol had received but not been asked for, and whether
        the connection had already ended after them (EOF or closed).
        """
        stream_protocol = self._writer.transport.get_protocol()
        if not isinstance(stream_protocol, _StreamProtocol):
            raise TypeError("a Connection's streams must come from open_stream()")
        transport = self._writer.transport
        transport.pause_reading()
        transport.set_protocol(protocol)
        self._receiver = protocol
        ended = stream_protocol.ended
        self._reader.feed_eof()  # nothing more reaches it: read() returns what it holds at once
        try:
            buffered = await self._reader.read()
        except OSError as error:
            raise SourceError(
                f"connection to {self.target.address} failed: {os_error_text(error)}"
            ) from error
        transport.pause_reading()  # read() resumes a transport the StreamReader had paused
        return buffered, ended

    def stall_error(self) -> SourceError:
        return SourceError(
            f"no data for {self.read_timeout:g} s from {self.target.where}: the stream "
            "stalled; it will be reopened (raise read_timeout if the server is just slow)"
        )

    async def read_exactly(self, size: int) -> bytes:
        """Exactly `size` bytes; asyncio.IncompleteReadError if the stream ends first."""
        return await self._guard(self._reader.readexactly(size))

    async def read_line(self, what: str) -> bytes:
        """One line including its LF; asyncio.IncompleteReadError if the stream ends first."""
        try:
            return await self._guard(self._reader.readuntil(b"\n"))
        except asyncio.LimitOverrunError:
            raise SourceError(
                f"malformed HTTP response from {self.target.where}: {what} is longer than "
                f"{MAX_HEAD_BYTES} bytes; is this an HTTP stream?"
            ) from None

    async def _guard(self, awaitable: Awaitable[_T]) -> _T:
        """Turns timeouts and socket errors into SourceErrors that say what happened."""
        try:
            return await within(self.read_timeout, awaitable)
        except asyncio.TimeoutError:
            raise self.stall_error() from None
        except OSError as error:
            raise SourceError(
                f"connection to {self.target.address} failed: {os_error_text(error)}"
            ) from error

    def lost_error(self, error: OSError) -> SourceError:
        return SourceError(f"connection to {self.target.address} failed: {os_error_text(error)}")

    def close(self, abort: bool = False) -> None:
        # abort() drops the connection at once: nothing is left to say to a server that failed
        # us, and a cancelled session must not linger in a TLS shutdown.
        if self._receiver is not None:
            self._receiver.stop()
        if abort:
            self._writer.transport.abort()
        else:
            self._writer.close()


def os_error_text(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if error.errno == errno.ECONNREFUSED:
        return "connection refused (is the server running?)"
    if error.errno:
        # asyncio words some failures as "Connect call failed (...)": say what errno means.
        return os.strerror(error.errno).lower()
    return error.strerror or str(error) or type(error).__name__
