"""Real loopback servers and a recording sink for the http source tests.

The servers are plain asyncio TCP (or TLS) servers on 127.0.0.1 that read one request head and
then run a handler that writes crafted bytes, so a test controls every byte on the wire,
including broken framing and Shoutcast's `ICY 200 OK`. `capture()` runs one session of an
HttpSource against such a server.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from streamtap.errors import SourceError
from streamtap.io.sources.http import HttpSource


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    target: str
    version: str
    headers: dict[str, str]  # lowercase names
    raw: bytes


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


class LoopbackServer:
    """An HTTP-ish server on 127.0.0.1:<free port> that answers every request with `handler`.

    Use as `async with LoopbackServer(handler) as server:`; `server.url("/path")` is its URL and
    `server.requests` lists what it received. Leaving the block cancels handlers still running.
    """

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None):
        self._handler = handler
        self._ssl = ssl_context
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.requests: list[Request] = []
        self.port = 0

    def url(self, path: str = "/", host: str = "127.0.0.1", userinfo: str = "") -> str:
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://{userinfo}{host}:{self.port}{path}"

    async def __aenter__(self) -> LoopbackServer:
        loop = asyncio.get_running_loop()
        default_handler = loop.get_exception_handler()

        def quiet_tls_rejections(loop, context) -> None:
            # A client that rejects our certificate is what the https tests want, not an error.
            if isinstance(context.get("exception"), (ssl.SSLError, ConnectionError)):
                return
            if default_handler:
                default_handler(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(quiet_tls_rejections)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = raw.decode("latin-1").split("\r\n")[:-2]
            method, target, version = request_line.split(" ")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            request = Request(method, target, version, headers, raw)
            self.requests.append(request)
            await self._handler(request, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away: normal for errors and cancellation tests
        except asyncio.CancelledError:
            pass  # the server is shutting down; a cancelled handler would be logged as an error
        finally:
            writer.close()
            self._tasks.discard(task)


class ServerThread:
    """A LoopbackServer on its own event loop in a background thread, for captures that run
    elsewhere (the hub's loop, a pipeline, a `streamtap` subprocess).

    Use as `with ServerThread(handler) as server:`; `server.url(...)` and `server.requests` as on
    LoopbackServer.
    """

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None):
        self._server = LoopbackServer(handler, ssl_context)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopback-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._server.__aenter__())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._server.__aexit__(None, None, None))
        self._loop.close()

    @property
    def requests(self) -> list[Request]:
        return self._server.requests

    @property
    def port(self) -> int:
        return self._server.port

    def url(self, path: str = "/", host: str = "127.0.0.1", userinfo: str = "") -> str:
        return self._server.url(path, host, userinfo)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "the loopback server did not start"
        return self

    def __exit__(self, *exc_info) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def head(status: str = "HTTP/1.1 200 OK", headers: Mapping[str, str] | None = None) -> bytes:
    """A response head with CRLF line ends: latin-1 bytes, or UTF-8 if it has other characters."""
    lines = [status] + [f"{name}: {value}" for name, value in (headers or {}).items()]
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def chunked(pieces: list[bytes], extension: bytes = b"", trailers: bytes = b"") -> bytes:
    """`pieces` framed as chunked transfer coding, then the last chunk and `trailers`."""
    out = bytearray()
    for piece in pieces:
        out += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
    out += b"0\r\n" + trailers + b"\r\n"
    return bytes(out)


async def write_slowly(writer: asyncio.StreamWriter, data: bytes, step: int = 1) -> None:
    """Writes `data` `step` bytes at a time, each its own TCP segment as far as we can make it."""
    for start in range(0, len(data), step):
        writer.write(data[start : start + step])
        await writer.drain()
        await asyncio.sleep(0)


def icy_body(audio: bytes, metaint: int, blocks: Mapping[int, bytes]) -> bytes:
    """`audio` with an ICY metadata block after every `metaint` bytes.

    Block k (the one after audio byte (k+1)*metaint) is `blocks[k]` NUL-padded to a multiple
    of 16, or an empty block (length byte 0) if `blocks` has no k.
    """
    out = bytearray()
    for index, start in enumerate(range(0, len(audio), metaint)):
        piece = audio[start : start + metaint]
        out += piece
        if len(piece) < metaint:
            break
        meta = blocks.get(index, b"")
        length = -(-len(meta) // 16)
        out += bytes([length]) + meta.ljust(length * 16, b"\0")
    return bytes(out)


@dataclass
class RecordingSink:
    """A ByteSink that keeps every byte and every tag change with the byte offset it applies from.

    `room` gates wait_for_room(): clear it to hold the connector back (backpressure).
    """

    data: bytearray = field(default_factory=bytearray)
    tag_changes: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    writes: list[bytes] = field(default_factory=list)
    room: asyncio.Event | None = None
    waits: int = 0

    def write(self, data: bytes, whole: bool = False) -> None:
        assert isinstance(data, bytes) and data, f"write() got {type(data).__name__} {data[:10]!r}"
        self.writes.append(data)
        self.data += data

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tag_changes.append((len(self.data), dict(tags)))

    async def wait_for_room(self) -> None:
        self.waits += 1
        if self.room is not None:
            await self.room.wait()

    def titles(self) -> list[tuple[int, str | None]]:
        """(offset, icy_title) for every tag change."""
        return [(offset, tags.get("icy_title")) for offset, tags in self.tag_changes]


# --- one session against one server ---------------------------------------------------------

RUN_LIMIT = 20.0  # seconds any one session may take before the test fails


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Outcome:
    sink: RecordingSink
    requests: list[Request]
    error: SourceError | None
    seconds: float


def capture(
    handler,
    path: str = "/stream",
    url: Callable[[LoopbackServer], str] | None = None,
    server_ssl: ssl.SSLContext | None = None,
    sink: RecordingSink | None = None,
    **fields,
) -> Outcome:
    """Runs one session of an HttpSource against a fresh loopback server running `handler`."""

    async def scenario() -> Outcome:
        async with LoopbackServer(handler, server_ssl) as server:
            source = HttpSource(id="radio", url=url(server) if url else server.url(path), **fields)
            assert source.validate("sources[0]") == []
            record = sink or RecordingSink()
            started = time.monotonic()
            error = None
            try:
                await asyncio.wait_for(source.connector().run_session(record, 0), RUN_LIMIT)
            except SourceError as raised:
                error = raised
            return Outcome(record, server.requests, error, time.monotonic() - started)

    return asyncio.run(scenario())


def body_handler(response: bytes, step: int | None = None):
    """A handler that sends `response` (head and body) and closes; `step`-byte writes if given."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        if step:
            await write_slowly(writer, response, step)
        else:
            writer.write(response)
            await writer.drain()

    return handle
