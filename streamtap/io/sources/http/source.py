"""The `http` source: its config (HttpSource) and its connector, one live HTTP(S) stream each.

A session is one GET (`client.HttpClient`: redirects followed); the body, its framing removed
(`response`), is written to the reader as it arrives, with ICY metadata split out (`icy`): the
session's tags are the content type, the ICY station name and the current stream title.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from streamtap.config import SourceConfig, doc
from streamtap.errors import SourceError
from streamtap.io.connector import ByteSink, Connector
from streamtap.io.sources.http.client import HttpClient, header_problems
from streamtap.io.sources.http.connection import Connection, url_problem
from streamtap.io.sources.http.icy import IcyDemuxer, metaint_of, stream_title
from streamtap.io.sources.http.receiver import receive_body
from streamtap.io.sources.http.response import Head, decoder_for
from streamtap.redaction import redact_headers, redact_url

__all__ = ["HttpSource"]

log = logging.getLogger(__name__)


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
        problem = url_problem(self.url)
        if problem:
            errors.append(f"{path}.url: {problem}")
        for name, value in self.headers.items():
            errors += header_problems(f"{path}.headers.{name}", name, value)
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

    def __repr__(self) -> str:
        # The generated repr would print the URL's credentials and the header values.
        shown = {**vars(self), "url": redact_url(self.url), "headers": redact_headers(self.headers)}
        fields = ", ".join(f"{name}={value!r}" for name, value in shown.items())
        return f"{type(self).__name__}({fields})"


class _HttpConnector(Connector):
    """Opens sessions of one HttpSource: one GET, redirects followed, body pumped to the sink."""

    def __init__(self, config: HttpSource):
        self._config = config
        self._client = HttpClient(
            config.url,
            headers=config.headers,
            icy_metadata=config.icy_metadata,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_redirects=config.max_redirects,
            gather_seconds=config.gather_seconds,
            ca_file=config.ca_file,
        )

    def describe(self) -> str:
        return redact_url(self._config.url)

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        # resume_offset is ignored: a live stream cannot be resumed, it is simply reopened.
        async with self._client.get() as (conn, head):
            await self._pump(conn, head, sink)

    async def _pump(self, conn: Connection, head: Head, sink: ByteSink) -> None:
        """Writes the body to the sink until its clean end, ICY metadata stripped: each socket
        read goes through the decoder and `deliver` in the transport's data_received."""
        target = conn.target
        decoder = decoder_for(head, target)
        metaint = metaint_of(head, target)
        demuxer = IcyDemuxer(metaint) if metaint else None
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
        if demuxer is None:
            deliver = sink.write
        else:

            def deliver(data: bytes) -> None:
                for part in demuxer.feed(data):
                    if isinstance(part, bytes):
                        sink.write(part)
                        continue
                    title = stream_title(part.raw)
                    if title is not None and title != tags.get("icy_title"):
                        log.debug("%s: stream title %r", target.where, title)
                        tags["icy_title"] = title
                        sink.set_tags(dict(tags))

        await receive_body(conn, decoder, deliver, sink)
        if demuxer is not None:
            problem = demuxer.problem_at_end()
            if problem:
                raise SourceError(
                    f"malformed ICY stream from {target.where} after {decoder.received} bytes: "
                    f"{problem}"
                )
