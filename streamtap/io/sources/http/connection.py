"""One HTTP(S) connection of the `http` source: the URL it goes to, and timed reads from it.

`Target` is a URL split into what a connection and a request line need (shown only through
`streamtap.redaction.redact_url`: no user info, query values or fragment). `Connection` is one
TCP or TLS connection whose reads are bounded by the read timeout through a watchdog timer, and
which lets a slow stream's packets gather between reads (gather_seconds): the per-read cost of
1,000 live streams is the hot path, not the bytes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
import sys
import time
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
    "READ_SIZE",
    "Connection",
    "Target",
    "opening_slot",
    "os_error_text",
    "url_problem",
    "within",
]

_T = TypeVar("_T")

MAX_HEAD_BYTES = 64 * 1024  # status line plus headers (and chunked trailers) of one response
READ_SIZE = 64 * 1024  # most bytes asked of the socket (and handed to the sink) per read
_SMALL_READ = 16 * 1024  # a body read under this size lets the next bytes gather (gather_seconds)
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


class Connection:
    """One TCP/TLS connection; every read is bounded by the read timeout."""

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
        self._read_timeout = read_timeout
        self._gather_seconds = gather_seconds
        self._gathering: asyncio.TimerHandle | None = None  # resumes reading the socket
        # read_some()'s stall watchdog: when the pending read started, and the timer.
        self._reading_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._stalled = False

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._guard(self._writer.drain())

    async def read_some(self, most: int = READ_SIZE) -> bytes:
        """Up to `most` bytes as soon as any arrive; b"" at end of stream.

        Bounded by the read timeout through one watchdog timer per connection instead of a
        timeout context per read: body reads are the hot path (one per packet per stream), and
        the context was a fifth of the reading CPU at 100 radio streams.
        """
        self._reading_since = time.monotonic()
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(
                self._read_timeout, self._check_stall
            )
        try:
            data = await self._reader.read(most)
        except OSError as error:
            raise SourceError(
                f"connection to {self.target.address} failed: {os_error_text(error)}"
            ) from error
        finally:
            self._reading_since = None
        if self._stalled:
            raise self._stall_error()
        if 0 < len(data) < min(most, _SMALL_READ) and self._gather_seconds:
            self._let_bytes_gather()
        return data

    def _let_bytes_gather(self) -> None:
        """Stops reading the socket for gather_seconds.

        The cost of a live stream is per read, not per byte: each read wakes the event loop,
        the transport, the StreamReader and the sink. Icecast writes a 128 kbit/s stream in ~12
        pieces a second; paused, the kernel keeps them and the next read takes them all.
        Only after a read that emptied the StreamReader's buffer (fewer bytes than asked), so
        its own flow control is not paused and nothing can arrive while we are.
        """
        transport = self._writer.transport
        transport.pause_reading()
        self._gathering = asyncio.get_running_loop().call_later(
            self._gather_seconds, self._resume_reading
        )

    def _resume_reading(self) -> None:
        self._gathering = None
        self._writer.transport.resume_reading()

    def _check_stall(self) -> None:
        """Aborts the connection when a read has waited read_timeout seconds (the watchdog)."""
        self._watchdog = None
        since = self._reading_since
        if since is None:  # not reading now (the sink is full): the next read re-arms
            return
        waited = time.monotonic() - since
        if waited >= self._read_timeout:
            self._stalled = True
            self._writer.transport.abort()  # the pending read ends; read_some() raises
            return
        self._watchdog = asyncio.get_running_loop().call_later(
            self._read_timeout - waited, self._check_stall
        )

    def _stall_error(self) -> SourceError:
        return SourceError(
            f"no data for {self._read_timeout:g} s from {self.target.where}: the stream "
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
            return await within(self._read_timeout, awaitable)
        except asyncio.TimeoutError:
            raise self._stall_error() from None
        except OSError as error:
            raise SourceError(
                f"connection to {self.target.address} failed: {os_error_text(error)}"
            ) from error

    def close(self, abort: bool = False) -> None:
        # abort() drops the connection at once: nothing is left to say to a server that failed
        # us, and a cancelled session must not linger in a TLS shutdown.
        for timer in (self._watchdog, self._gathering):
            if timer is not None:
                timer.cancel()
        self._watchdog = self._gathering = None
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
