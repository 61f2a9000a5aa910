"""Tests of the `http` source connector against real HTTP(S) servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.io.http_servers import (
    LoopbackServer,
    RecordingSink,
    Request,
    chunked,
    head,
    icy_body,
    write_slowly,
)

from streamtap.errors import SourceError
from streamtap.io.sources.http import HttpSource, _stream_title

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


# --- ICY metadata --------------------------------------------------------------------------------


def title_block(title: bytes, url: bytes = b"") -> bytes:
    return b"StreamTitle='" + title + b"';StreamUrl='" + url + b"';"


def test_icy_metadata_is_stripped_byte_exact_with_one_byte_writes():
    audio = payload(64 * 20 + 17, seed=5)
    blocks = {
        0: title_block(b"First"),
        1: title_block(b"First"),  # repeated: no tag change
        4: title_block(b"It's Rock 'n' Roll", b"http://x/';y"),
        9: b"StreamTitle='';",
    }
    response = head(
        "HTTP/1.0 200 OK",
        {"Content-Type": "audio/mpeg", "icy-metaint": "64", "icy-name": "Test FM"},
    )

    outcome = capture(body_handler(response + icy_body(audio, 64, blocks), step=1))

    assert outcome.error is None
    assert bytes(outcome.sink.data) == audio
    assert outcome.sink.titles() == [
        (0, None),
        (64, "First"),
        (5 * 64, "It's Rock 'n' Roll"),
        (10 * 64, ""),
    ]
    assert outcome.sink.tag_changes[1][1] == {
        "content_type": "audio/mpeg",
        "icy_name": "Test FM",
        "icy_title": "First",
    }


@pytest.mark.parametrize("framing", ["one-write", "random-chunks"])
def test_icy_metadata_is_stripped_from_large_writes_and_any_chunking(framing):
    metaint = 16_000
    audio = payload(3 * 1024 * 1024, seed=6)
    titles = {k: b"Song %d" % k for k in range(0, 200, 10)}
    blocks = {k: title_block(t) for k, t in titles.items()}
    body = icy_body(audio, metaint, blocks)
    if framing == "one-write":
        response = head(headers={"icy-metaint": str(metaint)}) + body
    else:
        rng = random.Random(7)
        pieces, start = [], 0
        while start < len(body):
            size = rng.choice([1, 2, 15, 16, 17, 1000, 16_001, 70_000])
            pieces.append(body[start : start + size])
            start += size
        response = head(headers={"icy-metaint": str(metaint), "Transfer-Encoding": "chunked"})
        response += chunked(pieces)

    outcome = capture(body_handler(response))

    assert outcome.error is None
    assert bytes(outcome.sink.data) == audio
    expected = [(0, None)] + [((k + 1) * metaint, t.decode()) for k, t in titles.items()]
    assert outcome.sink.titles() == expected


def test_shoutcast_icy_status_line_and_latin1_title():
    audio = payload(5000, seed=8)
    blocks = {1: title_block("Café del Mar".encode("latin-1"))}
    response = (
        b"ICY 200 OK\r\n"
        b"icy-notice1:<BR>This stream requires Winamp<BR>\r\n"
        b"icy-name:Shout One\r\n"
        b"icy-metaint:1000\r\n"
        b"content-type:audio/aacp\r\n"
        b"\r\n"
    ) + icy_body(audio, 1000, blocks)

    outcome = capture(body_handler(response))

    assert outcome.error is None
    assert bytes(outcome.sink.data) == audio
    assert outcome.sink.tag_changes == [
        (0, {"content_type": "audio/aacp", "icy_name": "Shout One"}),
        (
            2000,
            {"content_type": "audio/aacp", "icy_name": "Shout One", "icy_title": "Café del Mar"},
        ),
    ]


def test_connection_ending_inside_an_icy_metadata_block_is_a_source_error():
    audio = payload(300, seed=9)
    body = icy_body(audio, 100, {0: title_block(b"A"), 1: title_block(b"B" * 40)})
    cut = body[: 100 + 1 + 32 + 100 + 1 + 20]  # 20 bytes into the second block

    outcome = capture(body_handler(head(headers={"icy-metaint": "100"}) + cut))

    assert isinstance(outcome.error, SourceError)
    assert "inside an ICY metadata block (20 of 80 bytes)" in str(outcome.error)
    assert bytes(outcome.sink.data) == audio[:200]
    assert outcome.sink.titles() == [(0, None), (100, "A")]


@pytest.mark.parametrize("metaint", ["abc", "0", "-5", "1.5"])
def test_bad_icy_metaint_is_a_source_error(metaint):
    outcome = capture(body_handler(head(headers={"icy-metaint": metaint}) + b"x" * 100))

    assert isinstance(outcome.error, SourceError)
    assert f"icy-metaint {metaint!r} is not a positive integer" in str(outcome.error)
    assert outcome.sink.data == b""


@pytest.mark.parametrize(
    "raw, title",
    [
        (b"StreamTitle='Artist - Song';StreamUrl='';\0\0\0", "Artist - Song"),
        (b"StreamTitle='It's here';", "It's here"),
        (b"StreamUrl='http://a';StreamTitle='B';", "B"),
        (b"StreamTitle='no semicolon'", "no semicolon"),
        ("StreamTitle='Björk – Jóga';".encode(), "Björk – Jóga"),
        ("StreamTitle='Björk';".encode("latin-1"), "Björk"),
        (b"StreamUrl='only a url';", None),
        (b"garbage", None),
    ],
)
def test_stream_title_parsing(raw, title):
    assert _stream_title(raw) == title


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
        ({"url": "http://host:99999/"}, "sources[0].url: 'http://host:99999/' is not a valid URL"),
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


def test_describe_hides_credentials():
    source = HttpSource(id="radio", url="https://dj:secret@radio.example:8443/live?q=1")

    assert source.connector().describe() == "https://radio.example:8443/live?q=1"
