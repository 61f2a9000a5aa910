"""Reading an HTTP/1.x response of the `http` source: its head and its body, byte for byte.

The head: a status line (`HTTP/1.0`, `HTTP/1.1`, or Shoutcast v1's `ICY 200 OK`, which HTTP
libraries reject), interim 1xx responses skipped, headers with obsolete line folding, UTF-8 or
latin-1 values. The body, delimited as RFC 9112 section 6.3 says: no body (204, 304), chunked
transfer coding (parsed strictly: framing errors are errors, not data), Content-Length, or until
the server closes the connection.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from streamtap.errors import SourceError
from streamtap.io.sources.http.connection import MAX_HEAD_BYTES, Connection, Target

__all__ = [
    "TOKEN",
    "BodyDecoder",
    "Head",
    "decode_text",
    "decoder_for",
    "header_number",
    "malformed",
    "read_head",
    "read_header_lines",
]

_MAX_CHUNK_LINE = 4096  # a chunk-size line, extensions included
_NO_BODY_STATUSES = frozenset({204, 304})
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]|ICY) ([0-9]{3})(?: (.*))?")
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# A number in a header (Content-Length, icy-metaint): ASCII digits only. str.isdigit() and int()
# also take other scripts' digits ('²', '٣'), which then failed outside the parser's errors and
# stopped the stream for good; 18 digits keep int() far from its 4,300-digit limit.
_HEADER_NUMBER = re.compile(r"[0-9]{1,18}", re.ASCII)


# --- responses -----------------------------------------------------------------------------------


@dataclass
class Head:
    """Status line and headers of a response. Header names are lowercase."""

    version: str
    status: int
    reason: str
    headers: dict[str, list[str]]

    def get(self, name: str) -> str | None:
        """The header's value (repeated headers joined by ", "), or None."""
        values = self.headers.get(name)
        return ", ".join(values) if values else None


def decode_text(raw: bytes) -> str:
    """UTF-8 if it is valid UTF-8, else latin-1 (which old Shoutcast servers send)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_number(value: str) -> int | None:
    """The value of a numeric header (ASCII digits, surrounding blanks allowed), or None."""
    value = value.strip(" \t")
    return int(value) if _HEADER_NUMBER.fullmatch(value) else None


def malformed(target: Target, problem: str) -> SourceError:
    return SourceError(f"malformed HTTP response from {target.where}: {problem}")


async def read_header_lines(conn: Connection, what: str) -> list[bytes]:
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
        if size > MAX_HEAD_BYTES:
            raise malformed(conn.target, f"{what} is longer than {MAX_HEAD_BYTES} bytes")
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if not line:
            return lines
        lines.append(line)


def _parse_headers(lines: list[bytes], target: Target, what: str) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines:
        if line[:1] in (b" ", b"\t") and last is not None:
            # Obsolete line folding: the line continues the previous header's value.
            headers[last][-1] += " " + decode_text(line.strip(b" \t"))
            continue
        raw_name, colon, raw_value = line.partition(b":")
        name = raw_name.decode("latin-1")
        if not colon or not TOKEN.fullmatch(name):
            raise malformed(target, f"bad line in the {what}: {line[:80]!r}")
        last = name.lower()
        headers.setdefault(last, []).append(decode_text(raw_value.strip(b" \t")))
    return headers


async def read_head(conn: Connection) -> Head:
    """Reads the status line and headers, skipping interim 1xx responses."""
    target = conn.target
    while True:
        try:
            lines = await read_header_lines(conn, "response header section")
        except asyncio.IncompleteReadError as error:
            if not error.partial:
                raise SourceError(
                    f"{target.where} closed the connection without sending a response; "
                    "is the URL right (http vs https, port)?"
                ) from None
            raise malformed(target, "the connection ended inside the response headers") from None
        if not lines:
            raise malformed(target, "empty status line")
        match = _STATUS_LINE.fullmatch(lines[0])
        if not match:
            raise malformed(
                target,
                f"status line {lines[0][:80]!r} is not HTTP/1.x or ICY; is this an HTTP server "
                "(and is the scheme right: http vs https)?",
            )
        status = int(match.group(2))
        if 100 <= status < 200:
            continue
        return Head(
            version=match.group(1).decode("ascii"),
            status=status,
            reason=(match.group(3) or b"").decode("latin-1").strip(),
            headers=_parse_headers(lines[1:], target, "response headers"),
        )


# --- bodies --------------------------------------------------------------------------------------


class BodyDecoder:
    """Takes the bytes after a response head as they arrive; gives the body, framing removed.

    Sans I/O: `feed()` may be given any split of the bytes (`streamtap.io.sources.http.receiver`
    calls it from the protocol's data_received, once per socket read). Once `done`, the body has
    ended and any further bytes are not part of it: cleanly, or with `failure` (bad framing).
    """

    def __init__(self, target: Target):
        self._target = target
        self.received = 0  # body bytes so far, framing excluded
        self.done = False
        self.failure: SourceError | None = None  # why the body cannot go on (with done)

    def feed(self, data: bytes) -> list[bytes]:
        """The body bytes in `data`, in order, up to bad framing if any (then `failure`)."""
        raise NotImplementedError

    def end_error(self) -> SourceError | None:
        """The error of the connection closing now, or None if the body may end here."""
        return None

    def _cut_off(self, detail: str = "") -> SourceError:
        return SourceError(
            f"{self._target.where}: server closed the connection mid-stream after "
            f"{self.received} bytes{detail}; the session is incomplete"
        )


class _EmptyBody(BodyDecoder):
    def __init__(self, target: Target):
        super().__init__(target)
        self.done = True

    def feed(self, data: bytes) -> list[bytes]:
        return []


class _UntilCloseBody(BodyDecoder):
    """No length given: the body ends when the server closes the connection."""

    def feed(self, data: bytes) -> list[bytes]:
        self.received += len(data)
        return [data]


class _LengthBody(BodyDecoder):
    """A body of Content-Length bytes."""

    def __init__(self, target: Target, length: int):
        super().__init__(target)
        self._length = length
        self.done = length == 0

    def feed(self, data: bytes) -> list[bytes]:
        left = self._length - self.received
        if len(data) >= left:
            self.done = True
            data = data[:left]
        self.received += len(data)
        return [data] if data else []

    def end_error(self) -> SourceError | None:
        return None if self.done else self._cut_off(f" of {self._length} (Content-Length)")


# _ChunkedBody's states: what the next bytes are.
_SIZE_LINE, _DATA, _DATA_END, _TRAILERS = range(4)


class _ChunkedBody(BodyDecoder):
    """A `Transfer-Encoding: chunked` body, parsed strictly (RFC 9112, section 7.1)."""

    def __init__(self, target: Target):
        super().__init__(target)
        self._state = _SIZE_LINE
        self._chunk_left = 0  # data bytes left in the current chunk
        self._line = bytearray()  # the framing line (or CRLF) being received
        self._trailer_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        try:
            self._parse(data, pieces)
        except SourceError as error:  # the body bytes before the bad framing are still given
            self.failure = error
            self.done = True
        return pieces

    def _parse(self, data: bytes, pieces: list[bytes]) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state == _DATA:
                take = min(self._chunk_left, end - pos)
                pieces.append(data if take == end else data[pos : pos + take])  # no copy if all
                self._chunk_left -= take
                self.received += take
                pos += take
                if self._chunk_left == 0:
                    self._state = _DATA_END
            elif self._state == _DATA_END:
                take = min(2 - len(self._line), end - pos)
                self._line += data[pos : pos + take]
                pos += take
                if len(self._line) == 2:
                    if self._line != b"\r\n":
                        raise self._bad(
                            f"missing CRLF after chunk data (got {bytes(self._line)!r})"
                        )
                    self._line.clear()
                    self._state = _SIZE_LINE
            else:
                pos = self._take_line(data, pos)

    def _take_line(self, data: bytes, pos: int) -> int:
        """Adds bytes of a chunk-size or trailer line; acts on it once whole. Returns the new pos."""
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline + 1
        self._line += data[pos:stop]
        if self._state == _SIZE_LINE:
            if len(self._line) > _MAX_CHUNK_LINE:
                raise self._bad(f"chunk-size line longer than {_MAX_CHUNK_LINE} bytes")
            if newline >= 0:
                self._size_line(bytes(self._line))
                self._line.clear()
            return stop
        # Trailer fields (if any) end with an empty line; they carry nothing we capture.
        self._trailer_bytes += stop - pos
        if self._trailer_bytes > MAX_HEAD_BYTES:
            raise malformed(
                self._target, f"chunked trailer section is longer than {MAX_HEAD_BYTES} bytes"
            )
        if newline >= 0:
            if self._line in (b"\n", b"\r\n"):
                self.done = True
            self._line.clear()
        return stop

    def _size_line(self, line: bytes) -> None:
        if not line.endswith(b"\r\n"):
            raise self._bad(f"chunk-size line {line[:40]!r} does not end with CRLF")
        # Extensions (";name=value") carry nothing we need; whitespace may precede them.
        size_text = line[:-2].split(b";", 1)[0].rstrip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise self._bad(f"bad chunk size {line[:40]!r} (expected hex digits)")
        size = int(size_text, 16)
        if size == 0:
            self._state = _TRAILERS
        else:
            self._chunk_left = size
            self._state = _DATA

    def end_error(self) -> SourceError | None:
        if self.done:
            return None
        if self._state == _DATA:
            return self._cut_off(" (inside a chunk)")
        return self._cut_off(" (inside the chunked framing)")

    def _bad(self, problem: str) -> SourceError:
        return SourceError(
            f"malformed chunked encoding from {self._target.where} after {self.received} "
            f"bytes: {problem}"
        )


def decoder_for(head: Head, target: Target) -> BodyDecoder:
    """Chooses how the body is delimited (RFC 9112, section 6.3)."""
    if head.status in _NO_BODY_STATUSES:
        return _EmptyBody(target)
    transfer_encoding = head.get("transfer-encoding")
    if transfer_encoding is not None:
        codings = [c.strip().lower() for c in transfer_encoding.split(",") if c.strip()]
        if codings == ["chunked"]:
            return _ChunkedBody(target)
        if all(c == "identity" for c in codings):
            return _UntilCloseBody(target)
        raise SourceError(
            f"{target.where} sent Transfer-Encoding {transfer_encoding!r}, which streamtap cannot "
            "decode (only chunked); check the server or proxy settings"
        )
    lengths = head.headers.get("content-length")
    if lengths:
        values = {header_number(v) for value in lengths for v in value.split(",")}
        if len(values) != 1 or None in values:
            raise malformed(
                target,
                f"bad Content-Length {', '.join(lengths)[:40]!r} (expected one decimal number of "
                "ASCII digits 0-9)",
            )
        return _LengthBody(target, values.pop())
    return _UntilCloseBody(target)
