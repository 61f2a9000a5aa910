"""ICY metadata of Icecast and Shoutcast streams: split out of the audio bytes, titles read.

A server asked for it (`Icy-MetaData: 1`) answers with `icy-metaint: N` and interleaves the
body: N audio bytes, one length byte L, L*16 bytes of metadata (`StreamTitle='...';`, NUL
padded), and again. `IcyDemuxer` splits that across any read boundaries without copying the
audio (a read that is all audio is handed on as it is); `stream_title` reads the title.
"""

from __future__ import annotations

import re

from streamtap.errors import SourceError
from streamtap.io.sources.http.connection import Target
from streamtap.io.sources.http.response import Head, decode_text, header_number

__all__ = ["IcyDemuxer", "IcyMetadata", "metaint_of", "stream_title"]

# One `key='value';` field of ICY metadata. A value ends at `';` followed by the next key or by
# the end, so quotes inside titles ("It's") survive.
_ICY_FIELD = re.compile(
    r"([A-Za-z][A-Za-z0-9_]*)='(.*?)'(?:;(?=[A-Za-z][A-Za-z0-9_]*=')|;?\s*$)", re.DOTALL
)


class IcyMetadata:
    """One non-empty ICY metadata block, as received (NUL padding included)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes):
        self.raw = raw


class IcyDemuxer:
    """Splits an ICY body into audio bytes and metadata blocks, across any read boundaries.

    The body is `metaint` audio bytes, one length byte L, L*16 metadata bytes, and again.
    """

    def __init__(self, metaint: int):
        self._metaint = metaint
        self._audio_left = metaint  # audio bytes before the next length byte
        self._meta_left: int | None = None  # metadata bytes still to come; None: not in a block
        self._meta = bytearray()

    def feed(self, data: bytes) -> list[bytes | IcyMetadata]:
        """Audio pieces and metadata blocks in `data`, in stream order."""
        parts: list[bytes | IcyMetadata] = []
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
                    parts.append(IcyMetadata(bytes(self._meta)))
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


def stream_title(raw: bytes) -> str | None:
    """StreamTitle from an ICY metadata block, or None if the block has none."""
    text = decode_text(raw.rstrip(b"\0"))
    for match in _ICY_FIELD.finditer(text):
        if match.group(1).lower() == "streamtitle":
            return match.group(2)
    return None


def metaint_of(head: Head, target: Target) -> int | None:
    """The icy-metaint header: audio bytes between metadata blocks, or None (no ICY metadata)."""
    value = head.get("icy-metaint")
    if value is None:
        return None
    metaint = header_number(value)
    if metaint is None or not 0 < metaint < 2**31:
        raise SourceError(
            f"malformed ICY response from {target.where}: icy-metaint {value[:40]!r} is not a "
            "positive integer (ASCII digits 0-9, below 2^31); set icy_metadata: false to capture "
            "the stream without metadata"
        )
    return metaint
