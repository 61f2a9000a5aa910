"""The `http` source: one live HTTP(S) stream, such as an Icecast or Shoutcast radio mount.

HTTP/1.1 is spoken directly on asyncio streams rather than through aiohttp or urllib: Shoutcast v1
answers with an `ICY 200 OK` status line that HTTP libraries reject, and the capture must see the
body byte for byte (chunked framing and in-band ICY metadata removed, nothing else changed).

Unit of parallelism: one stream (one URL) per connector, many connectors per event loop.
Delivery: at-most-once across reconnects of a live stream; every session is one HTTP connection
(after redirects), and the runtime marks the gap between sessions as a discontinuity.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import os
import re
import ssl
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit

from streamtap.config import SourceConfig, doc
from streamtap.io.connector import ByteSink, Connector
from streamtap.errors import PermanentSourceError, SourceError

__all__ = ["HttpSource"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_USER_AGENT = "streamtap/0.1"
_MAX_HEAD_BYTES = 64 * 1024  # status line plus headers (and chunked trailers) of one response
_MAX_CHUNK_LINE = 4096  # a chunk-size line, extensions included
_READ_SIZE = 64 * 1024  # most bytes asked of the socket (and handed to the sink) per read
_SMALL_READ = 16 * 1024  # a body read under this size lets the next bytes gather (gather_seconds)
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NO_BODY_STATUSES = frozenset({204, 304})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_X509_V_ERR_HOSTNAME_MISMATCH = 62  # OpenSSL's verify code when the name is not in the cert

_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]|ICY) ([0-9]{3})(?: (.*))?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Headers the connector must own: it relies on `Connection: close` and sends no body.
_RESERVED_HEADERS = frozenset({"connection", "content-length", "transfer-encoding"})
# Request headers that carry credentials: sent only to the origin of the configured URL.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
# One `key='value';` field of ICY metadata. A value ends at `';` followed by the next key or by
# the end, so quotes inside titles ("It's") survive.
_ICY_FIELD = re.compile(
    r"([A-Za-z][A-Za-z0-9_]*)='(.*?)'(?:;(?=[A-Za-z][A-Za-z0-9_]*=')|;?\s*$)", re.DOTALL
)


@dataclass(kw_only=True)
class HttpSource(SourceConfig):
    """An HTTP(S) stream: internet radio (Icecast, Shoutcast) or any endless HTTP body.

    One session is one GET (following redirects); the body is captured as is, except that
    chunked transfer framing and in-band ICY metadata are removed. The ICY stream title becomes
    the `icy_title` tag of the bytes that follow it.
    """

    type_name: ClassVar[str] = "http"

    url: str = doc("http:// or https:// URL of the stream.", "")
    headers: dict[str, str] = doc(
        "Extra request headers (name: value), e.g. a User-Agent a station insists on.",
        default_factory=dict,
    )
    icy_metadata: bool = doc(
        "Ask Icecast/Shoutcast servers for in-band metadata (StreamTitle) and strip it from the "
        "audio bytes.",
        True,
    )
    connect_timeout: float = doc(
        "Seconds allowed for the TCP connect and TLS handshake of each connection, and again "
        "for the response head after the request is sent.",
        10.0,
    )
    read_timeout: float = doc("Seconds without a byte before the session is treated as dead.", 30.0)
    max_redirects: int = doc("Most redirects followed in one session (0: none).", 5)
    gather_seconds: float = doc(
        "After a body read of under 16 KiB, stop reading for this long so that a slow stream's "
        "packets gather in the socket buffer and come in one read: a 128 kbit/s radio stream "
        "then costs ~3 reads a second instead of ~12 (Icecast's writes). Delays arrival by at "
        "most this much; 0 reads every packet as it comes.",
        0.5,
    )
    ca_file: str | None = doc("PEM file of extra CA certificates to trust for https.", None)

    def validate(self, path: str) -> list[str]:
        errors = super().validate(path)
        problem = _url_problem(self.url)
        if problem:
            errors.append(f"{path}.url: {problem}")
        for name, value in self.headers.items():
            errors += _header_problems(f"{path}.headers.{name}", name, value)
        if self.connect_timeout <= 0:
            errors.append(
                f"{path}.connect_timeout: must be > 0 seconds, got {self.connect_timeout}"
            )
        if self.read_timeout <= 0:
            errors.append(f"{path}.read_timeout: must be > 0 seconds, got {self.read_timeout}")
        if self.max_redirects < 0:
            errors.append(f"{path}.max_redirects: must be >= 0, got {self.max_redirects}")
        if not 0 <= self.gather_seconds <= 1:
            errors.append(
                f"{path}.gather_seconds: must be between 0 and 1 second, got {self.gather_seconds}"
            )
        if self.ca_file is not None and not self.ca_file.strip():
            errors.append(f"{path}.ca_file: must be a path to a PEM file, got an empty string")
        return errors

    def connector(self) -> Connector:
        return _HttpConnector(self)


# --- URLs ----------------------------------------------------------------------------------------


def _url_problem(url: str) -> str | None:
    """What is wrong with `url` as a stream URL, or None if it is usable."""
    if not url:
        return "required: give the http:// or https:// URL of the stream"
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "must not contain spaces or control characters (percent-encode them, e.g. %20)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as error:
        return f"{_redact(url)!r} is not a valid URL: {error}"
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        shown = repr(parts.scheme) if parts.scheme else "none"
        return f"scheme {shown} is not supported; use an http:// or https:// URL"
    if not parts.hostname:
        return f"{_redact(url)!r} has no host; expected http://host[:port]/path"
    return None


def _redact(url: str) -> str:
    """`url` without user name and password: fit for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


@dataclass(frozen=True)
class _Target:
    """One URL to GET, split into what a connection and a request line need."""

    url: str
    scheme: str
    host: str
    port: int
    request_target: str  # path and query, as sent in the request line

    @classmethod
    def parse(cls, url: str) -> _Target:
        problem = _url_problem(url)
        if problem:
            raise PermanentSourceError(f"cannot use URL {_redact(url)!r}: {problem}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        # Keep valid percent-escapes and reserved characters; escape what a request line can't hold.
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
        return cls(
            url=url,
            scheme=scheme,
            host=parts.hostname or "",
            port=parts.port or _DEFAULT_PORTS[scheme],
            request_target=f"{path}?{query}" if query else path,
        )

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def where(self) -> str:
        """The URL without credentials."""
        return _redact(self.url)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def address(self) -> str:
        """host:port, for messages about the connection itself."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _header_problems(path: str, name: str, value: Any) -> list[str]:
    errors = []
    if not _TOKEN.fullmatch(name):
        errors.append(f"{path}: {name!r} is not a valid header name")
    elif name.lower() in _RESERVED_HEADERS:
        errors.append(f"{path}: {name} is set by the connector and cannot be configured")
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        errors.append(f"{path}: the value must be one line of text without CR, LF or NUL")
    return errors


# --- the connection ------------------------------------------------------------------------------


async def _within(seconds: float, awaitable: Awaitable[_T]) -> _T:
    """Awaits `awaitable`, raising asyncio.TimeoutError after `seconds`."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):  # cheaper than wait_for: no extra task per read
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


class _Connection:
    """One TCP/TLS connection; every read is bounded by the read timeout."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: _Target,
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

    async def read_some(self, most: int = _READ_SIZE) -> bytes:
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
                f"connection to {self.target.address} failed: {_os_error_text(error)}"
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
                f"{_MAX_HEAD_BYTES} bytes; is this an HTTP stream?"
            ) from None

    async def _guard(self, awaitable: Awaitable[_T]) -> _T:
        """Turns timeouts and socket errors into SourceErrors that say what happened."""
        try:
            return await _within(self._read_timeout, awaitable)
        except asyncio.TimeoutError:
            raise self._stall_error() from None
        except OSError as error:
            raise SourceError(
                f"connection to {self.target.address} failed: {_os_error_text(error)}"
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


def _os_error_text(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if error.errno == errno.ECONNREFUSED:
        return "connection refused (is the server running?)"
    if error.errno:
        # asyncio words some failures as "Connect call failed (...)": say what errno means.
        return os.strerror(error.errno).lower()
    return error.strerror or str(error) or type(error).__name__


# --- responses -----------------------------------------------------------------------------------


@dataclass
class _Head:
    """Status line and headers of a response. Header names are lowercase."""

    version: str
    status: int
    reason: str
    headers: dict[str, list[str]]

    def get(self, name: str) -> str | None:
        """The header's value (repeated headers joined by ", "), or None."""
        values = self.headers.get(name)
        return ", ".join(values) if values else None


def _decode_text(raw: bytes) -> str:
    """UTF-8 if it is valid UTF-8, else latin-1 (which old Shoutcast servers send)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _malformed(target: _Target, problem: str) -> SourceError:
    return SourceError(f"malformed HTTP response from {target.where}: {problem}")


async def _read_header_lines(conn: _Connection, what: str) -> list[bytes]:
    """Lines up to the empty line that ends a header section, without line ends.

    Raises asyncio.IncompleteReadError if the stream ends first.
    """
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await conn.read_line(what)
        except asyncio.IncompleteReadError as error:
            # Report everything received, not just the unfinished line.
            raise asyncio.IncompleteReadError(b"".join(lines) + error.partial, None) from None
        size += len(line)
        if size > _MAX_HEAD_BYTES:
            raise _malformed(conn.target, f"{what} is longer than {_MAX_HEAD_BYTES} bytes")
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if not line:
            return lines
        lines.append(line)


def _parse_headers(lines: list[bytes], target: _Target, what: str) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines:
        if line[:1] in (b" ", b"\t") and last is not None:
            # Obsolete line folding: the line continues the previous header's value.
            headers[last][-1] += " " + _decode_text(line.strip(b" \t"))
            continue
        raw_name, colon, raw_value = line.partition(b":")
        name = raw_name.decode("latin-1")
        if not colon or not _TOKEN.fullmatch(name):
            raise _malformed(target, f"bad line in the {what}: {line[:80]!r}")
        last = name.lower()
        headers.setdefault(last, []).append(_decode_text(raw_value.strip(b" \t")))
    return headers


async def _read_head(conn: _Connection) -> _Head:
    """Reads the status line and headers, skipping interim 1xx responses."""
    target = conn.target
    while True:
        try:
            lines = await _read_header_lines(conn, "response header section")
        except asyncio.IncompleteReadError as error:
            if not error.partial:
                raise SourceError(
                    f"{target.where} closed the connection without sending a response; "
                    "is the URL right (http vs https, port)?"
                ) from None
            raise _malformed(target, "the connection ended inside the response headers") from None
        if not lines:
            raise _malformed(target, "empty status line")
        match = _STATUS_LINE.fullmatch(lines[0])
        if not match:
            raise _malformed(
                target,
                f"status line {lines[0][:80]!r} is not HTTP/1.x or ICY; is this an HTTP server "
                "(and is the scheme right: http vs https)?",
            )
        status = int(match.group(2))
        if 100 <= status < 200:
            continue
        return _Head(
            version=match.group(1).decode("ascii"),
            status=status,
            reason=(match.group(3) or b"").decode("latin-1").strip(),
            headers=_parse_headers(lines[1:], target, "response headers"),
        )


def _status_error(head: _Head, target: _Target) -> SourceError:
    status = head.status
    if status in (401, 407):
        advice = "check the credentials (user:password@ in the URL, or headers)"
    elif status == 403:
        advice = (
            "the server refused access (listener limit or blocked client?); "
            "check the URL and headers"
        )
    elif status in (404, 410):
        advice = "check the URL (for Icecast: is the mount live?)"
    elif status in (408, 429):
        advice = "the server is throttling, will retry"
    elif 500 <= status < 600:
        advice = "server busy/failing, will retry"
    elif 300 <= status < 400:
        advice = "an unsupported redirect; check the URL"
    else:
        advice = "check the URL and headers"
    reason = f" {head.reason}" if head.reason else ""
    return SourceError(f"HTTP {status}{reason} from {target.where}: {advice}")


# --- bodies --------------------------------------------------------------------------------------


class _Body:
    """Reads a response body piece by piece; read() returns b"" at its clean end."""

    def __init__(self, conn: _Connection):
        self._conn = conn
        self.received = 0  # body bytes so far, framing excluded

    async def read(self) -> bytes:
        raise NotImplementedError

    def _cut_off(self, detail: str = "") -> SourceError:
        return SourceError(
            f"{self._conn.target.where}: server closed the connection mid-stream after "
            f"{self.received} bytes{detail}; the session is incomplete"
        )


class _EmptyBody(_Body):
    async def read(self) -> bytes:
        return b""


class _UntilCloseBody(_Body):
    """No length given: the body ends when the server closes the connection."""

    async def read(self) -> bytes:
        data = await self._conn.read_some()
        self.received += len(data)
        return data


class _LengthBody(_Body):
    """A body of Content-Length bytes."""

    def __init__(self, conn: _Connection, length: int):
        super().__init__(conn)
        self._length = length

    async def read(self) -> bytes:
        left = self._length - self.received
        if left == 0:
            return b""
        data = await self._conn.read_some(min(left, _READ_SIZE))
        if not data:
            raise self._cut_off(f" of {self._length} (Content-Length)")
        self.received += len(data)
        return data


class _ChunkedBody(_Body):
    """A `Transfer-Encoding: chunked` body, parsed strictly (RFC 9112, section 7.1)."""

    def __init__(self, conn: _Connection):
        super().__init__(conn)
        self._chunk_left = 0  # data bytes left in the current chunk
        self._done = False

    async def read(self) -> bytes:
        if self._done:
            return b""
        try:
            if self._chunk_left == 0:
                size = await self._read_chunk_size()
                if size == 0:
                    await self._read_trailers()
                    self._done = True
                    return b""
                self._chunk_left = size
            data = await self._conn.read_some(min(self._chunk_left, _READ_SIZE))
            if not data:
                raise self._cut_off(" (inside a chunk)")
            self._chunk_left -= len(data)
            self.received += len(data)
            if self._chunk_left == 0:
                await self._read_chunk_end()
            return data
        except asyncio.IncompleteReadError:
            raise self._cut_off(" (inside the chunked framing)") from None

    async def _read_chunk_size(self) -> int:
        line = await self._conn.read_line("a chunk-size line")
        if len(line) > _MAX_CHUNK_LINE:
            raise self._bad(f"chunk-size line longer than {_MAX_CHUNK_LINE} bytes")
        if not line.endswith(b"\r\n"):
            raise self._bad(f"chunk-size line {line[:40]!r} does not end with CRLF")
        # Extensions (";name=value") carry nothing we need; whitespace may precede them.
        size_text = line[:-2].split(b";", 1)[0].rstrip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise self._bad(f"bad chunk size {line[:40]!r} (expected hex digits)")
        return int(size_text, 16)

    async def _read_chunk_end(self) -> None:
        end = await self._conn.read_exactly(2)
        if end != b"\r\n":
            raise self._bad(f"missing CRLF after chunk data (got {end!r})")

    async def _read_trailers(self) -> None:
        # Trailer fields (if any) end with an empty line; they carry nothing we capture.
        await _read_header_lines(self._conn, "chunked trailer section")

    def _bad(self, problem: str) -> SourceError:
        return SourceError(
            f"malformed chunked encoding from {self._conn.target.where} after {self.received} "
            f"bytes: {problem}"
        )


def _body_for(conn: _Connection, head: _Head) -> _Body:
    """Chooses how the body is delimited (RFC 9112, section 6.3)."""
    target = conn.target
    if head.status in _NO_BODY_STATUSES:
        return _EmptyBody(conn)
    transfer_encoding = head.get("transfer-encoding")
    if transfer_encoding is not None:
        codings = [c.strip().lower() for c in transfer_encoding.split(",") if c.strip()]
        if codings == ["chunked"]:
            return _ChunkedBody(conn)
        if all(c == "identity" for c in codings):
            return _UntilCloseBody(conn)
        raise SourceError(
            f"{target.where} sent Transfer-Encoding {transfer_encoding!r}, which streamtap cannot "
            "decode (only chunked); check the server or proxy settings"
        )
    lengths = head.headers.get("content-length")
    if lengths:
        values = {v.strip() for value in lengths for v in value.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise _malformed(target, f"bad Content-Length {', '.join(lengths)!r}")
        return _LengthBody(conn, int(values.pop()))
    return _UntilCloseBody(conn)


# --- ICY metadata --------------------------------------------------------------------------------


class _IcyMetadata:
    """One non-empty ICY metadata block, as received (NUL padding included)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes):
        self.raw = raw


class _IcyDemuxer:
    """Splits an ICY body into audio bytes and metadata blocks, across any read boundaries.

    The body is `metaint` audio bytes, one length byte L, L*16 metadata bytes, and again.
    """

    def __init__(self, metaint: int):
        self._metaint = metaint
        self._audio_left = metaint  # audio bytes before the next length byte
        self._meta_left: int | None = None  # metadata bytes still to come; None: not in a block
        self._meta = bytearray()

    def feed(self, data: bytes) -> list[bytes | _IcyMetadata]:
        """Audio pieces and metadata blocks in `data`, in stream order."""
        parts: list[bytes | _IcyMetadata] = []
        pos = 0
        end = len(data)
        while pos < end:
            if self._audio_left:
                take = min(self._audio_left, end - pos)
                parts.append(data if take == end else data[pos : pos + take])  # no copy if all
                self._audio_left -= take
                pos += take
            elif self._meta_left is None:
                self._meta_left = data[pos] * 16
                pos += 1
                if self._meta_left == 0:  # no news: the usual case between title changes
                    self._end_block()
            else:
                take = min(self._meta_left, end - pos)
                self._meta += data[pos : pos + take]
                self._meta_left -= take
                pos += take
                if self._meta_left == 0:
                    parts.append(_IcyMetadata(bytes(self._meta)))
                    self._end_block()
        return parts

    def _end_block(self) -> None:
        self._meta.clear()
        self._meta_left = None
        self._audio_left = self._metaint

    def problem_at_end(self) -> str | None:
        """Why the body must not end here, or None if it may."""
        if self._meta_left is None:
            return None
        return (
            f"the connection ended inside an ICY metadata block ({len(self._meta)} of "
            f"{len(self._meta) + self._meta_left} bytes)"
        )


def _stream_title(raw: bytes) -> str | None:
    """StreamTitle from an ICY metadata block, or None if the block has none."""
    text = _decode_text(raw.rstrip(b"\0"))
    for match in _ICY_FIELD.finditer(text):
        if match.group(1).lower() == "streamtitle":
            return match.group(2)
    return None


def _metaint(head: _Head, target: _Target) -> int | None:
    value = head.get("icy-metaint")
    if value is None:
        return None
    if not value.isdigit() or not 0 < int(value) < 2**31:
        raise SourceError(
            f"malformed ICY response from {target.where}: icy-metaint {value!r} is not a "
            "positive integer; set icy_metadata: false to capture the stream without metadata"
        )
    return int(value)


# --- the connector -------------------------------------------------------------------------------


class _HttpConnector(Connector):
    """Opens sessions of one HttpSource: one GET, redirects followed, body pumped to the sink."""

    def __init__(self, config: HttpSource):
        self._config = config
        self._ssl_context: ssl.SSLContext | None = None  # built on first https use, on the worker

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ssl_context"] = None  # SSLContexts don't pickle; rebuilt where it's needed
        return state

    def describe(self) -> str:
        return _redact(self._config.url)

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        # resume_offset is ignored: a live stream cannot be resumed, it is simply reopened.
        first = _Target.parse(self._config.url)
        target = first
        chain = [first]
        while True:
            conn = await self._connect(target)
            clean = False
            try:
                await conn.send(
                    self._request(target, send_credentials=target.origin == first.origin)
                )
                head = await self._response_head(conn)
                if head.status in _REDIRECT_STATUSES:
                    target = self._follow(head, target, chain)
                    clean = True
                    continue
                if not 200 <= head.status < 300:
                    raise _status_error(head, target)
                await self._pump(conn, head, sink)
                clean = True
                return
            finally:
                conn.close(abort=not clean)

    async def _response_head(self, conn: _Connection) -> _Head:
        """The response head, within connect_timeout (and read_timeout between bytes).

        A server with a full listen queue (Icecast's holds 5) can leave a connection the client
        thinks is open and the server never accepted: nothing ever comes. 1,000 streams
        connecting to one Icecast at once overflowed its queue ~600 times; in 3 of 13 runs a few
        dozen streams that had started together then got nothing for the whole read timeout
        (30 s) before being reopened.
        """
        seconds = self._config.connect_timeout
        try:
            return await _within(seconds, _read_head(conn))
        except asyncio.TimeoutError:
            raise SourceError(
                f"no response from {conn.target.where} within {seconds:g} s of sending the "
                "request (the server may not have accepted the connection); it will be "
                "reopened (raise connect_timeout for slow servers)"
            ) from None

    def _request(self, target: _Target, send_credentials: bool) -> bytes:
        headers = {
            "Host": target.host_header,
            "User-Agent": _USER_AGENT,
            "Accept": "*/*",
        }
        if self._config.icy_metadata:
            headers["Icy-MetaData"] = "1"
        parts = urlsplit(self._config.url)
        if send_credentials and parts.username is not None:
            user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
        for name, value in self._config.headers.items():
            if not send_credentials and name.lower() in _CREDENTIAL_HEADERS:
                continue
            # A configured header replaces a default of the same name (User-Agent, Host ...).
            for existing in [n for n in headers if n.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
        headers["Connection"] = "close"
        lines = [f"GET {target.request_target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    async def _connect(self, target: _Target) -> _Connection:
        context = self._context() if target.scheme == "https" else None
        try:
            reader, writer = await _within(
                self._config.connect_timeout,
                asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                    limit=_MAX_HEAD_BYTES,
                ),
            )
        except asyncio.TimeoutError:
            raise SourceError(
                f"connecting to {target.address} timed out after {self._config.connect_timeout:g} "
                "s: is the server up? (raise connect_timeout for slow links)"
            ) from None
        except ssl.SSLCertVerificationError as error:
            problem = str(error.verify_message or error.reason or error).rstrip(".")
            if error.verify_code == _X509_V_ERR_HOSTNAME_MISMATCH:
                advice = "use the host name (or IP) the certificate was issued for in the URL"
            else:
                advice = (
                    "if the server uses a self-signed or private-CA certificate, set ca_file to "
                    "a PEM file that holds it"
                )
            raise SourceError(
                f"TLS certificate of {target.address} was rejected: {problem}; {advice}"
            ) from None
        except OSError as error:
            raise SourceError(
                f"cannot connect to {target.address}: {_os_error_text(error)}; check the host "
                "and port in the URL"
            ) from None
        return _Connection(
            reader, writer, target, self._config.read_timeout, self._config.gather_seconds
        )

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()  # certificate and hostname checks on
            if self._config.ca_file:
                try:
                    context.load_verify_locations(cafile=self._config.ca_file)
                except (OSError, ssl.SSLError) as error:
                    raise PermanentSourceError(
                        f"ca_file {self._config.ca_file!r} cannot be used: {error}; give a "
                        "readable PEM file of CA certificates"
                    ) from None
            self._ssl_context = context
        return self._ssl_context

    def _follow(self, head: _Head, target: _Target, chain: list[_Target]) -> _Target:
        """The target a redirect points to; raises if it leads nowhere or loops."""
        location = head.get("location")
        if not location:
            raise _malformed(target, f"HTTP {head.status} redirect without a Location header")
        new_url = urljoin(target.url, location.strip())
        problem = _url_problem(new_url)
        if problem:
            raise SourceError(
                f"{target.where} redirects to {_redact(new_url)!r}, which cannot be followed: "
                f"{problem}"
            )
        new = _Target.parse(new_url)
        hops = " -> ".join(t.where for t in [*chain, new])
        if any(t.url == new.url for t in chain):
            raise SourceError(f"redirect loop: {hops}; check the URL")
        if len(chain) > self._config.max_redirects:
            raise SourceError(
                f"too many redirects (max_redirects is {self._config.max_redirects}): {hops}; "
                "check the URL or raise max_redirects"
            )
        log.debug("HTTP %s redirect: %s -> %s", head.status, target.where, new.where)
        chain.append(new)
        return new

    async def _pump(self, conn: _Connection, head: _Head, sink: ByteSink) -> None:
        """Writes the body to the sink until its clean end, ICY metadata stripped."""
        target = conn.target
        body = _body_for(conn, head)
        metaint = _metaint(head, target)
        demuxer = _IcyDemuxer(metaint) if metaint else None
        tags: dict[str, str] = {}
        content_type = head.get("content-type")
        if content_type:
            tags["content_type"] = content_type
        icy_name = head.get("icy-name")
        if icy_name:
            tags["icy_name"] = icy_name
        log.info(
            "%s: %s %s %s, content type %s%s",
            target.where,
            head.version,
            head.status,
            head.reason,
            content_type or "not given",
            f", ICY metadata every {metaint} bytes" if metaint else "",
        )
        # Always set the session's tags first: a new session must not inherit the last title.
        sink.set_tags(dict(tags))
        while True:
            await sink.wait_for_room()
            data = await body.read()
            if not data:
                break
            if demuxer is None:
                sink.write(data)
                continue
            for part in demuxer.feed(data):
                if isinstance(part, bytes):
                    sink.write(part)
                    continue
                title = _stream_title(part.raw)
                if title is not None and title != tags.get("icy_title"):
                    log.debug("%s: stream title %r", target.where, title)
                    tags["icy_title"] = title
                    sink.set_tags(dict(tags))
        if demuxer is not None:
            problem = demuxer.problem_at_end()
            if problem:
                raise SourceError(
                    f"malformed ICY stream from {target.where} after {body.received} bytes: "
                    f"{problem}"
                )
