"""Tests of the `http` source against real HTTP(S) servers on loopback: the HTTP/1.1 client
(bodies, framing, redirects, errors, TLS, timeouts), the connector and its config.

ICY metadata: test_icy.py.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from streamtap.errors import SourceError
from streamtap.io.sources.http import HttpSource
from tests.io.sources.http_servers import (
    RUN_LIMIT,
    LoopbackServer,
    RecordingSink,
    body_handler,
    capture,
    chunked,
    head,
    payload,
)

# --- bodies --------------------------------------------------------------------------------------


def test_content_length_body_is_captured_byte_exact_and_request_is_well_formed():
    data = payload(300_000)
    response = head(headers={"Content-Type": "audio/mpeg", "Content-Length": str(len(data))})
    outcome = capture(body_handler(response + data), path="/live/mount.mp3?x=1&y=%20z")

    assert outcome.error is None
    assert bytes(outcome.sink.data) == data
    assert outcome.sink.tag_changes == [(0, {"content_type": "audio/mpeg"})]
    (request,) = outcome.requests
    assert (request.method, request.target, request.version) == (
        "GET",
        "/live/mount.mp3?x=1&y=%20z",
        "HTTP/1.1",
    )
    assert request.headers["host"].startswith("127.0.0.1:")
    assert request.headers["user-agent"] == "streamtap/0.1"
    assert request.headers["accept"] == "*/*"
    assert request.headers["connection"] == "close"
    assert request.headers["icy-metadata"] == "1"
    assert "authorization" not in request.headers


def test_basic_auth_from_url_and_configured_headers_are_sent():
    response = head(headers={"Content-Length": "2"}) + b"ok"
    outcome = capture(
        body_handler(response),
        url=lambda server: server.url("/s", userinfo="dj:p%40ss%3Aword@"),
        headers={"User-Agent": "Mozilla/5.0 (compatible)", "X-Station-Key": "k1"},
        icy_metadata=False,
    )

    assert outcome.error is None and bytes(outcome.sink.data) == b"ok"
    sent = outcome.requests[0].headers
    assert sent["authorization"] == "Basic " + base64.b64encode(b"dj:p@ss:word").decode()
    assert sent["user-agent"] == "Mozilla/5.0 (compatible)"  # replaces the default
    assert sent["x-station-key"] == "k1"
    assert "icy-metadata" not in sent
    assert outcome.requests[0].raw.count(b"User-Agent") == 1


def test_body_without_length_ends_cleanly_when_the_server_closes():
    data = payload(50_000, seed=2)

    async def handle(request, writer):
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        for start in range(0, len(data), 7_000):
            writer.write(data[start : start + 7_000])
            await writer.drain()
            await asyncio.sleep(0.001)

    outcome = capture(handle)

    assert outcome.error is None
    assert bytes(outcome.sink.data) == data


def trickle_handler(data: bytes, packet: int, pause: float):
    """A radio-like server: `packet` bytes every `pause` seconds, then it closes."""

    async def handle(request, writer):
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\n\r\n")
        for start in range(0, len(data), packet):
            writer.write(data[start : start + packet])
            await writer.drain()
            await asyncio.sleep(pause)

    return handle


@pytest.mark.parametrize("gather_seconds", [0.1, 0.0])
def test_slow_stream_bytes_gather_into_few_reads_byte_exact(gather_seconds):
    # 240 packets of 100 bytes over ~1.2 s, like a radio stream's small packets.
    data = payload(24_000, seed=21)

    outcome = capture(trickle_handler(data, 100, 0.005), gather_seconds=gather_seconds)

    assert outcome.error is None
    assert bytes(outcome.sink.data) == data
    if gather_seconds:  # ~one read per 0.1 s instead of one per packet
        assert len(outcome.sink.writes) <= 25, len(outcome.sink.writes)
    else:
        assert len(outcome.sink.writes) >= 100, len(outcome.sink.writes)


def test_fast_stream_is_not_held_back_by_gathering():
    # Only a read of under 16 KiB pauses reading: a fast stream's reads are 64 KiB.
    data = payload(8_000_000, seed=22)

    outcome = capture(body_handler(head(headers={"Content-Length": str(len(data))}) + data))

    assert outcome.error is None
    assert bytes(outcome.sink.data) == data
    small_reads = [len(piece) for piece in outcome.sink.writes[:-1] if len(piece) < 16 * 1024]
    assert len(small_reads) <= 3, small_reads  # each of these would pause reading for 0.1 s


def test_a_stream_that_turns_fast_is_read_as_it_comes_then_gathers_again_byte_exact():
    # Slow packets are read by the poll ticker once per gather period; a burst (a read of
    # 16 KiB or more) sends the stream back to the event loop; slow again, it gathers again.
    slow_before, fast, slow_after = payload(6_000, seed=31), payload(3_000_000, seed=32), payload(
        6_000, seed=33
    )

    async def handle(request, writer):
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\n\r\n")
        for data in (slow_before, None, slow_after):
            if data is None:
                writer.write(fast)
                await writer.drain()
                continue
            for start in range(0, len(data), 100):
                writer.write(data[start : start + 100])
                await writer.drain()
                await asyncio.sleep(0.005)

    outcome = capture(handle, gather_seconds=0.1)

    assert outcome.error is None
    assert bytes(outcome.sink.data) == slow_before + fast + slow_after
    sizes = [len(piece) for piece in outcome.sink.writes]
    burst = [size for size in sizes if size >= 16 * 1024]
    assert sum(burst) >= len(fast) - 2 * 65536, sizes  # the burst read as it came, in big reads
    assert len(sizes) - len(burst) <= 12, sizes  # ~0.3 s slow at both ends: ~3 + ~3 polls


def test_slow_stream_over_https_gathers_too_byte_exact(certificate):
    # Over TLS the transport is paused for the gather period (its socket can't be polled).
    data = payload(24_000, seed=34)

    outcome = capture(
        trickle_handler(data, 100, 0.005),
        server_ssl=server_context(certificate),
        ca_file=str(certificate[0]),
        gather_seconds=0.1,
    )

    assert outcome.error is None
    assert bytes(outcome.sink.data) == data
    assert len(outcome.sink.writes) <= 25, len(outcome.sink.writes)


def test_chunked_body_with_extensions_and_trailers_is_byte_exact():
    pieces = [payload(n, seed=n) for n in (1, 15, 16, 255, 4096, 70_000, 3)]
    response = head(headers={"Transfer-Encoding": "chunked", "Content-Type": "audio/ogg"})
    body = chunked(pieces, extension=b" ; name=value;flag", trailers=b"X-Sum: 1\r\nX-Other: 2\r\n")

    outcome = capture(body_handler(response + body))

    assert outcome.error is None
    assert bytes(outcome.sink.data) == b"".join(pieces)


def test_chunked_body_written_one_byte_at_a_time_is_byte_exact():
    pieces = [payload(n, seed=n) for n in (5, 17, 1, 40)]
    response = head(headers={"Transfer-Encoding": "chunked"}) + chunked(pieces, extension=b";x=1")

    outcome = capture(body_handler(response, step=1))

    assert outcome.error is None
    assert bytes(outcome.sink.data) == b"".join(pieces)


@pytest.mark.parametrize(
    "framing, problem",
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", "bad chunk size"),
        (b"-3\r\nabc\r\n0\r\n\r\n", "bad chunk size"),
        (b"3\r\nabcXY0\r\n\r\n", "missing CRLF after chunk data"),
        (b"3\nabc\r\n0\r\n\r\n", "does not end with CRLF"),
    ],
)
def test_malformed_chunked_encoding_is_a_source_error(framing, problem):
    response = head(headers={"Transfer-Encoding": "chunked"}) + b"5\r\nhello\r\n" + framing

    outcome = capture(body_handler(response))

    assert isinstance(outcome.error, SourceError)
    assert "malformed chunked encoding" in str(outcome.error)
    assert problem in str(outcome.error)
    assert bytes(outcome.sink.data).startswith(b"hello")


def test_server_closing_inside_a_chunk_is_not_a_clean_end():
    response = head(headers={"Transfer-Encoding": "chunked"}) + b"5\r\nhello\r\n10\r\n0123456"

    outcome = capture(body_handler(response))

    assert isinstance(outcome.error, SourceError)
    assert "server closed the connection mid-stream after 12 bytes" in str(outcome.error)
    assert bytes(outcome.sink.data) == b"hello0123456"


def test_server_closing_before_the_last_chunk_is_not_a_clean_end():
    response = head(headers={"Transfer-Encoding": "chunked"}) + b"5\r\nhello\r\n"

    outcome = capture(body_handler(response))

    assert isinstance(outcome.error, SourceError)
    assert "mid-stream after 5 bytes" in str(outcome.error)


def test_server_closing_before_content_length_is_not_a_clean_end():
    data = payload(1000, seed=3)
    response = head(headers={"Content-Length": "5000"}) + data

    outcome = capture(body_handler(response))

    assert isinstance(outcome.error, SourceError)
    assert "mid-stream after 1000 bytes of 5000" in str(outcome.error)
    assert bytes(outcome.sink.data) == data


@pytest.mark.parametrize("length", ["²", "١٠", "1²", "9" * 5000, "10, 11", "-1", "0x10"])
def test_a_content_length_that_is_not_ascii_digits_is_a_source_error(length):
    outcome = capture(body_handler(head(headers={"Content-Length": length}) + b"x" * 10))

    assert isinstance(outcome.error, SourceError)
    assert "bad Content-Length" in str(outcome.error)
    assert "ASCII digits" in str(outcome.error) and len(str(outcome.error)) < 300
    assert outcome.sink.data == b""


def test_a_hostile_header_fails_the_session_and_the_stream_goes_on_with_the_next():
    """`Content-Length: ²` (and `icy-metaint: ²`) once raised ValueError, which the reader took for
    its own bug: the stream stopped for good while the log said it would retry."""
    from streamtap.config import ChunkSettings, ReconnectSettings
    from streamtap.io.hub import hub
    from streamtap.io.stream_state import StreamPosition
    from tests.io.sources.http_servers import ServerThread

    data = payload(3000, seed=5)
    hostile = [head(headers={"Content-Length": "²"}) + data,
               head("ICY 200 OK", {"icy-metaint": "²"}) + data]

    async def handle(request, writer) -> None:
        writer.write(hostile.pop(0) if hostile else head(headers={"Content-Length": "3000"}) + data)
        await writer.drain()

    with ServerThread(handle) as server:
        source = HttpSource(id="hostile-headers", url=server.url("/s"), on_eof="stop",
                            reconnect=ReconnectSettings(initial_delay=0.05, max_delay=0.1))
        reader = hub().attach(source, ChunkSettings(max_bytes=1000), StreamPosition(), None)
        deadline = time.monotonic() + RUN_LIMIT
        while not reader.finished(3) and time.monotonic() < deadline:
            time.sleep(0.05)
        chunks = [reader.chunk(seq) for seq in range(3)]
        hub().release(reader)

    assert len(server.requests) == 3
    assert b"".join(c.payload for c in chunks) == data
    assert reader.stats.errors == 2 and "icy-metaint '²'" in reader.stats.last_error


# --- status lines, headers, redirects ------------------------------------------------------------


@pytest.mark.parametrize(
    "status, expected",
    [
        ("HTTP/1.1 404 Not Found", "HTTP 404 Not Found from http://127.0.0.1:"),
        ("HTTP/1.0 500 Internal Server Error", "HTTP 500 Internal Server Error from"),
        ("HTTP/1.1 503 Service Unavailable", "server busy/failing, will retry"),
    ],
)
def test_error_status_is_a_source_error_naming_the_status(status, expected):
    outcome = capture(body_handler(head(status, {"Content-Length": "3"}) + b"bad"))

    assert isinstance(outcome.error, SourceError)
    assert expected in str(outcome.error)
    assert "/stream" in str(outcome.error)
    assert outcome.sink.data == b""


def test_404_message_says_to_check_the_url():
    outcome = capture(body_handler(head("HTTP/1.1 404 Not Found")))

    assert "check the URL" in str(outcome.error)


def test_redirects_relative_then_absolute_are_followed_and_credentials_stay_home():
    data = payload(10_000, seed=4)

    async def scenario():
        async def final(request, writer):
            writer.write(head(headers={"Content-Length": str(len(data))}) + data)

        async with LoopbackServer(final) as other:

            async def redirecting(request, writer):
                if request.target == "/start":
                    writer.write(head("HTTP/1.1 302 Found", {"Location": "next?a=1"}))
                elif request.target == "/next?a=1":
                    location = other.url("/final")
                    writer.write(head("HTTP/1.1 301 Moved Permanently", {"Location": location}))

            async with LoopbackServer(redirecting) as first:
                source = HttpSource(id="r", url=first.url("/start", userinfo="u:pw@"))
                sink = RecordingSink()
                await asyncio.wait_for(source.connector().run_session(sink, 0), RUN_LIMIT)
                return sink, first.requests, other.requests

    sink, first_requests, other_requests = asyncio.run(scenario())

    assert bytes(sink.data) == data
    assert [r.target for r in first_requests] == ["/start", "/next?a=1"]
    assert all(r.headers["authorization"].startswith("Basic ") for r in first_requests)
    assert [r.target for r in other_requests] == ["/final"]
    assert "authorization" not in other_requests[0].headers  # another origin


def test_redirect_loop_is_a_source_error_naming_the_loop():
    async def handle(request, writer):
        to = "/b" if request.target == "/a" else "/a"
        writer.write(head("HTTP/1.1 307 Temporary Redirect", {"Location": to}))

    outcome = capture(handle, path="/a")

    assert isinstance(outcome.error, SourceError)
    message = str(outcome.error)
    assert "redirect loop" in message
    assert "/a -> http://127.0.0.1:" in message and "/b -> http://127.0.0.1:" in message
    assert len(outcome.requests) == 2


def test_more_redirects_than_max_redirects_is_a_source_error():
    async def handle(request, writer):
        hop = int(request.target.rsplit("/", 1)[1])
        writer.write(head("HTTP/1.1 308 Permanent Redirect", {"Location": f"/hop/{hop + 1}"}))

    outcome = capture(handle, path="/hop/0", max_redirects=2)

    assert isinstance(outcome.error, SourceError)
    assert "too many redirects (max_redirects is 2)" in str(outcome.error)
    assert [r.target for r in outcome.requests] == ["/hop/0", "/hop/1", "/hop/2"]


@pytest.mark.parametrize(
    "response, expected",
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad line in the response headers"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", "longer than 65536"),
        (b"HTTP/1.1 200 OK\r\nX-A: " + b"b" * 1000 + b"\r\n", "inside the response headers"),
    ],
    ids=["not-http", "no-colon", "huge-header", "cut-headers"],
)
def test_malformed_response_head_is_a_source_error(response, expected):
    outcome = capture(body_handler(response))

    assert isinstance(outcome.error, SourceError)
    assert "malformed HTTP response" in str(outcome.error)
    assert expected in str(outcome.error)


def test_header_section_over_64_kib_in_many_lines_is_malformed():
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(700))
    outcome = capture(body_handler(b"HTTP/1.1 200 OK\r\n" + many + b"\r\nbody"))

    assert "malformed HTTP response" in str(outcome.error)
    assert "longer than 65536 bytes" in str(outcome.error)


def test_unreachable_port_is_a_source_error():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = HttpSource(id="r", url=f"http://127.0.0.1:{port}/", connect_timeout=2.0)

    with pytest.raises(SourceError, match="cannot connect to 127.0.0.1:"):
        asyncio.run(source.connector().run_session(RecordingSink(), 0))


# --- https ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "/usr/bin/openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_context(certificate) -> ssl.SSLContext:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_https_with_ca_file_is_captured_byte_exact(certificate):
    data = payload(200_000, seed=10)
    response = head(headers={"Content-Length": str(len(data))}) + data

    outcome = capture(
        body_handler(response), server_ssl=server_context(certificate), ca_file=str(certificate[0])
    )

    assert outcome.error is None
    assert bytes(outcome.sink.data) == data
    assert outcome.requests[0].target == "/stream"


def test_https_without_ca_file_fails_naming_the_certificate_problem(certificate):
    outcome = capture(body_handler(head()), server_ssl=server_context(certificate))

    assert isinstance(outcome.error, SourceError)
    message = str(outcome.error)
    assert "certificate" in message and "self-signed certificate" in message
    assert "ca_file" in message
    assert outcome.requests == []


def test_https_hostname_mismatch_fails_even_with_ca_file(certificate):
    outcome = capture(
        body_handler(head()),
        url=lambda server: server.url("/s", host="localhost"),
        server_ssl=server_context(certificate),
        ca_file=str(certificate[0]),
    )

    assert isinstance(outcome.error, SourceError)
    message = str(outcome.error)
    assert "certificate is not valid for 'localhost'" in message
    assert "host name (or IP) the certificate was issued for" in message


# --- timeouts, cancellation, backpressure --------------------------------------------------------


def test_read_timeout_is_a_source_error_after_the_bytes_that_came():
    async def handle(request, writer):
        writer.write(head(headers={"Content-Type": "audio/mpeg"}) + b"abc")
        await writer.drain()
        await asyncio.sleep(60)

    outcome = capture(handle, read_timeout=0.3)

    assert isinstance(outcome.error, SourceError)
    assert "no data for 0.3 s" in str(outcome.error)
    assert bytes(outcome.sink.data) == b"abc"
    assert 0.25 < outcome.seconds < 5


def test_read_timeout_also_covers_the_response_head():
    async def handle(request, writer):
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await writer.drain()
        await asyncio.sleep(60)

    outcome = capture(handle, read_timeout=0.3)

    assert "no data for 0.3 s" in str(outcome.error)


def test_a_response_head_that_never_comes_is_given_up_after_connect_timeout():
    # What a connection lost in a server's full listen queue looks like: open, and silent.
    async def handle(request, writer):
        await asyncio.sleep(60)

    outcome = capture(handle, connect_timeout=0.5, read_timeout=30)

    assert "no response from" in str(outcome.error)
    assert "within 0.5 s of sending the request" in str(outcome.error)
    assert "raise connect_timeout" in str(outcome.error)
    assert 0.4 < outcome.seconds < 5  # not the 30 s read timeout


def endless(piece: bytes = b"\x55" * 100):
    async def handle(request, writer):
        writer.write(head(headers={"Content-Type": "audio/mpeg"}))
        while True:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.005)

    return handle


@pytest.mark.parametrize("blocked", [False, True], ids=["reading", "waiting-for-room"])
def test_cancellation_stops_the_session_promptly(blocked):
    async def scenario():
        async with LoopbackServer(endless()) as server:
            sink = RecordingSink(room=asyncio.Event())
            sink.room.set()
            source = HttpSource(id="r", url=server.url("/live"))
            task = asyncio.create_task(source.connector().run_session(sink, 0))
            while len(sink.data) < 1000:
                await asyncio.sleep(0.01)
            if blocked:
                sink.room.clear()
                await asyncio.sleep(0.1)
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - started, sink

    seconds, sink = asyncio.run(scenario())

    assert seconds < 0.5
    assert bytes(sink.data) == b"\x55" * len(sink.data)


def test_connector_waits_for_room_before_reading():
    data = payload(20_000, seed=11)

    async def scenario():
        response = head(headers={"Content-Length": str(len(data))}) + data
        async with LoopbackServer(body_handler(response)) as server:
            sink = RecordingSink(room=asyncio.Event())  # no room yet
            source = HttpSource(id="r", url=server.url("/s"))
            task = asyncio.create_task(source.connector().run_session(sink, 0))
            await asyncio.sleep(0.3)
            held = bytes(sink.data)
            sink.room.set()
            await asyncio.wait_for(task, RUN_LIMIT)
            return held, sink

    held, sink = asyncio.run(scenario())

    assert held == b""
    assert bytes(sink.data) == data
    assert sink.waits >= len(sink.writes)


# --- config --------------------------------------------------------------------------------------


def test_valid_config_has_no_errors():
    source = HttpSource(
        id="radio", url="https://user:pw@radio.example:8443/live.mp3", headers={"X-Key": "1"}
    )

    assert source.validate("sources[0]") == []
    assert source.type_name == "http"


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"url": "ftp://example.com/s"}, "sources[0].url: scheme 'ftp' is not supported"),
        ({"url": "example.com/stream"}, "sources[0].url: scheme none is not supported"),
        ({"url": ""}, "sources[0].url: required"),
        ({"url": "http:///path"}, "sources[0].url: 'http:///path' has no host"),
        # A bad port may be a password with an unescaped '/' or '#': nothing of it is shown.
        ({"url": "http://host:99999/"}, "sources[0].url: 'http://***' is not a valid URL: Port"),
        ({"url": "http://host/a b"}, "sources[0].url: must not contain spaces"),
        ({"url": "http://h/", "connect_timeout": 0}, "sources[0].connect_timeout: must be > 0"),
        ({"url": "http://h/", "read_timeout": -1.0}, "sources[0].read_timeout: must be > 0"),
        ({"url": "http://h/", "max_redirects": -1}, "sources[0].max_redirects: must be >= 0"),
        ({"url": "http://h/", "gather_seconds": 2}, "sources[0].gather_seconds: must be between 0"),
        (
            {"url": "http://h/", "headers": {"X-A": "1\r\nHost: evil"}},
            "sources[0].headers.X-A: the value must be one line",
        ),
        ({"url": "http://h/", "headers": {"Bad Name": "1"}}, "is not a valid header name"),
        ({"url": "http://h/", "headers": {"Connection": "keep-alive"}}, "set by the connector"),
    ],
)
def test_config_errors_name_the_key(fields, expected):
    errors = HttpSource(id="radio", **fields).validate("sources[0]")

    assert any(expected in error for error in errors), errors


def test_describe_and_repr_hide_credentials_query_values_and_header_values():
    source = HttpSource(id="radio", url="https://dj:secret@radio.example:8443/live?q=1&t=tok#f",
                        headers={"X-Api-Key": "key123"})

    assert source.connector().describe() == "https://***@radio.example:8443/live?q=***&t=***#***"
    for secret in ("dj", "secret", "tok", "key123", "q=1"):
        assert secret not in repr(source) and secret not in source.connector().describe()


# --- many streams of one server ------------------------------------------------------------------


def test_streams_of_one_server_open_at_most_32_connections_at_once_and_all_get_through():
    """Icecast's listen backlog is 5: thousands of streams connecting at once overflowed it.
    Here every stream waits for a head that takes 0.2 s; at most 32 are being opened at once."""
    from streamtap.io.sources.http.client import HttpClient
    from streamtap.io.sources.http.connection import OPENINGS_PER_SERVER

    waiting = 0
    most_waiting = 0

    async def slow_head(request, writer) -> None:
        nonlocal waiting, most_waiting
        waiting += 1
        most_waiting = max(most_waiting, waiting)
        await asyncio.sleep(0.2)
        waiting -= 1
        writer.write(head(headers={"Content-Length": "2"}) + b"ok")
        await writer.drain()

    async def main() -> list[bytes]:
        async with LoopbackServer(slow_head) as server:

            async def one(i: int) -> bytes:
                async with HttpClient(server.url(f"/s{i}")).get() as (conn, _):
                    return await conn.read_exactly(2)

            return await asyncio.gather(*(one(i) for i in range(100)))

    bodies = asyncio.run(main())
    assert bodies == [b"ok"] * 100
    assert OPENINGS_PER_SERVER == 32
    assert 16 <= most_waiting <= OPENINGS_PER_SERVER
