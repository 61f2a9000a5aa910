"""The `http` source: one live HTTP(S) stream, such as an Icecast or Shoutcast radio mount.

HTTP/1.1 is spoken directly on asyncio streams rather than through aiohttp or urllib: Shoutcast v1
answers with an `ICY 200 OK` status line that HTTP libraries reject, and the capture must see the
body byte for byte (chunked framing and in-band ICY metadata removed, nothing else changed).

Unit of parallelism: one stream (one URL) per connector, many connectors per event loop.
Delivery: at-most-once across reconnects of a live stream; every session is one HTTP connection
(after redirects), and the reader marks the gap between sessions as a discontinuity.

Modules, each using only those before it: `connection` (URL targets, one TCP/TLS connection with
timed reads), `response` (status line and headers, body framing: chunked, Content-Length, until
close), `client` (the GET: TLS, request, redirects, error statuses), `icy` (the ICY metadata
demuxer), `source` (HttpSource and its connector).
"""

from streamtap.io.sources.http.source import HttpSource

__all__ = ["HttpSource"]
