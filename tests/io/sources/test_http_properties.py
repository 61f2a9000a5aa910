"""Property tests (hypothesis) of what the http source parses from a server: the response head
(status line and headers), the body framings (chunked, Content-Length) and the ICY demuxer.

For any bytes a server sends, the parser gives the right bytes or the project's own SourceError
with a clear message, never another exception: another exception is a bug, and it used to stop
the stream for good (`Content-Length: ²`, a Unicode digit). The bytes travel over a real socket
pair, as they would from a server; the whole-session test goes through a real loopback server.
"""

from __future__ import annotations

import asyncio
import socket

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamtap.errors import SourceError
from streamtap.io.sources.http.connection import Connection, Target, open_stream
from streamtap.io.sources.http.icy import IcyDemuxer, IcyMetadata, metaint_of, stream_title
from streamtap.io.sources.http.receiver import receive_body
from streamtap.io.sources.http.response import Head, decoder_for, read_head
from tests.io.sources.http_servers import LoopbackServer, RecordingSink, chunked, icy_body

TARGET = Target.parse("http://127.0.0.1:8000/stream?token=secret")
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Header values that look like numbers to str.isdigit() and int() but are not ASCII digits.
UNICODE_DIGITS = ["²", "¹²", "٣", "१२", "𝟗", "1²", "⁰", "①", "٣٢", "9" * 5000, " 12 ", "+5", "-1",
                  "0x10", "1_000", "1e3", "", "12, 12", "12,13"]


async def _over_a_socket(data: bytes, action):
    """Runs `action(conn)` on a Connection whose peer sends `data`, then closes."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()

    async def send() -> None:
        try:
            await loop.sock_sendall(theirs, data)
            theirs.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the reader gave up first (an error, as expected)

    sender = asyncio.create_task(send())
    reader, writer = await open_stream(sock=ours)
    conn = Connection(reader, writer, TARGET, read_timeout=5.0)
    try:
        return await action(conn)
    finally:
        conn.close(abort=True)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        theirs.close()


def _outcome(data: bytes, action):
    """(result, None) or (None, SourceError); any other exception fails the test."""
    try:
        return asyncio.run(_over_a_socket(data, action)), None
    except SourceError as error:
        assert str(error), "a SourceError must say what went wrong"
        assert "secret" not in str(error), str(error)
        return None, error


async def _head_and_body(conn: Connection) -> tuple[Head, bytes]:
    head = await read_head(conn)
    sink = RecordingSink()
    await receive_body(conn, decoder_for(head, conn.target), sink.write, sink)
    return head, bytes(sink.data)


# --- strategies -----------------------------------------------------------------------------------

_token = st.text(
    alphabet="!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-",
    min_size=1, max_size=20,
)
_value_text = st.one_of(
    st.sampled_from(UNICODE_DIGITS),
    st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)),
            max_size=30),
    st.integers(0, 2**70).map(str),
)
_status_line = st.one_of(
    st.builds(lambda v, s, r: f"{v} {s} {r}".encode("latin-1"),
              st.sampled_from(["HTTP/1.1", "HTTP/1.0", "ICY"]), st.integers(100, 599),
              st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20)),
    st.binary(max_size=40),
)
_header_line = st.one_of(
    st.builds(lambda n, v: n.encode() + b": " + v.encode("utf-8"),
              st.sampled_from(["Content-Length", "Transfer-Encoding", "icy-metaint",
                               "Content-Type", "Location"]) | _token, _value_text),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
)
_head = st.builds(
    lambda status, headers, end: b"\r\n".join([status, *headers]) + end,
    _status_line, st.lists(_header_line, max_size=8),
    st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""]),
)


# --- the response head and body framing -----------------------------------------------------------


@SETTINGS
@given(head=_head, body=st.binary(max_size=300))
@example(head=b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\n", body=b"ab")
@example(head=b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", body=b"")
@example(head=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", body=b"\xef\xbc\x91\r\n")
def test_any_response_is_parsed_or_a_source_error(head, body):
    _outcome(head + body, _head_and_body)


@SETTINGS
@given(
    status=st.integers(200, 299).filter(lambda s: s not in (204,)),
    reason=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
    headers=st.lists(st.tuples(_token, st.text(st.characters(min_codepoint=33,
                                                             max_codepoint=0x2FF), max_size=20)),
                     max_size=6),
    body=st.binary(max_size=2000),
)
def test_a_well_formed_response_gives_its_status_headers_and_exact_body(status, reason, headers,
                                                                        body):
    headers = [(n, v) for n, v in headers
               if n.lower() not in ("content-length", "transfer-encoding")]
    lines = [f"HTTP/1.1 {status} {reason}".encode()]
    lines += [f"{name}: {value}".encode() for name, value in headers]
    lines.append(b"Content-Length: %d" % len(body))
    (head, received), error = _outcome(b"\r\n".join(lines) + b"\r\n\r\n" + body, _head_and_body)

    assert error is None
    assert (head.status, head.reason) == (status, reason.strip())
    for name, value in headers:
        assert value.strip(" \t") in head.headers[name.lower()]
    assert received == body


@SETTINGS
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=400), max_size=8),
    extension=st.sampled_from([b"", b";a=b", b" ;x", b";name=\"v\""]),
    trailers=st.sampled_from([b"", b"X-T: 1\r\n", b"A: b\r\nC: d\r\n"]),
    uppercase=st.booleans(),
)
def test_chunked_bodies_give_the_exact_bytes(pieces, extension, trailers, uppercase):
    size = b"%X" if uppercase else b"%x"  # hex sizes in either case
    framed = b"".join(size % len(p) + extension + b"\r\n" + p + b"\r\n" for p in pieces)
    framed += b"0\r\n" + trailers + b"\r\n"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    (_, received), error = _outcome(head + framed, _head_and_body)

    assert error is None
    assert received == b"".join(pieces)


# A chunked body damaged at `position`: cut there, or one byte replaced by `replacement`.
_DAMAGE = dict(
    pieces=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5),
    position=st.integers(0, 10_000),
    replacement=st.binary(max_size=3),
    cut=st.booleans(),
)


def _damaged_chunked(pieces, position, replacement, cut) -> bytes:
    framed = chunked(pieces)
    position %= len(framed)
    return framed[:position] if cut else framed[:position] + replacement + framed[position + 1:]


@SETTINGS
@given(**_DAMAGE)
def test_damaged_chunked_framing_is_a_source_error_or_bytes_never_another_error(
    pieces, position, replacement, cut
):
    damaged = _damaged_chunked(pieces, position, replacement, cut)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, error = _outcome(head + damaged, _head_and_body)

    if error is not None:
        assert "chunked" in str(error) or "closed the connection" in str(error), str(error)
    elif cut:
        raise AssertionError("a chunked body cut short must not end cleanly")


@SETTINGS
@given(value=st.one_of(st.sampled_from(UNICODE_DIGITS), _value_text, st.integers(-5, 2**40)
                       .map(str)))
@example(value="²")
@example(value="٣")
def test_content_length_is_ascii_digits_or_a_clear_source_error(value):
    response = f"HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\n".encode() + b"x" * 10
    result, error = _outcome(response, _head_and_body)

    parts = [part.strip(" \t") for part in value.split(",")]
    numbers = {int(p) for p in parts if p.isascii() and p.isdigit() and len(p) <= 18}
    if len(numbers) == 1 and all(p.isascii() and p.isdigit() for p in parts):
        # One number (repeated copies of it are allowed, RFC 9110 section 8.6).
        length = numbers.pop()
        assert error is None or "closed the connection mid-stream" in str(error)
        if error is None:
            assert result[1] == b"x" * length
    else:
        assert error is not None and "bad Content-Length" in str(error)


# --- the body decoders, fed any split of the bytes (as socket reads come) ---------------------------


def _decode_in_reads(head: Head, data: bytes, reads: list[int]):
    """(body bytes, decoder) of `data` fed to the head's decoder in reads of the given sizes."""
    decoder = decoder_for(head, TARGET)
    got = bytearray()
    start = index = 0
    while start < len(data) and not decoder.done:
        size = reads[index % len(reads)]
        for piece in decoder.feed(data[start : start + size]):
            assert isinstance(piece, bytes) and piece
            got += piece
        start, index = start + size, index + 1
    return bytes(got), decoder


_CHUNKED_HEAD = Head("HTTP/1.1", 200, "OK", {"transfer-encoding": ["chunked"]})
_reads = st.lists(st.integers(1, 700), min_size=1, max_size=10)


@SETTINGS
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=400), max_size=8),
    extension=st.sampled_from([b"", b";a=b", b" ;x"]),
    trailers=st.sampled_from([b"", b"X-T: 1\r\n", b"A: b\nC: d\r\n"]),
    after=st.binary(max_size=50),
    reads=_reads,
)
def test_the_chunked_decoder_gives_the_exact_body_across_any_reads(pieces, extension, trailers,
                                                                   after, reads):
    framed = b"".join(b"%x" % len(p) + extension + b"\r\n" + p + b"\r\n" for p in pieces)
    framed += b"0\r\n" + trailers + b"\r\n"
    body, decoder = _decode_in_reads(_CHUNKED_HEAD, framed + after, reads)

    assert decoder.failure is None and decoder.done
    assert body == b"".join(pieces)  # and nothing of what came after the body's end
    assert decoder.received == len(body) and decoder.end_error() is None


@SETTINGS
@given(**_DAMAGE, reads=_reads)
def test_the_chunked_decoder_fails_damaged_framing_alike_across_any_reads(pieces, position,
                                                                          replacement, cut, reads):
    damaged = _damaged_chunked(pieces, position, replacement, cut)
    whole, at_once = _decode_in_reads(_CHUNKED_HEAD, damaged, [len(damaged) or 1])
    body, decoder = _decode_in_reads(_CHUNKED_HEAD, damaged, reads)

    # However the bytes are split, the same body bytes come out and the same error (or none).
    assert body == whole
    assert str(decoder.failure) == str(at_once.failure)
    assert str(decoder.end_error()) == str(at_once.end_error())
    ends_clean = decoder.done and decoder.failure is None
    if not ends_clean:
        error = decoder.failure or decoder.end_error()
        assert isinstance(error, SourceError)
        assert "chunked" in str(error) or "closed the connection" in str(error), str(error)
    elif cut:
        raise AssertionError("a chunked body cut short must not end cleanly")


@SETTINGS
@given(length=st.integers(0, 3000), extra=st.integers(-3000, 100), reads=_reads)
def test_the_length_decoder_gives_content_length_bytes_across_any_reads(length, extra, reads):
    data = bytes(range(256)) * 13
    sent = data[: max(length + extra, 0)]
    head = Head("HTTP/1.1", 200, "OK", {"content-length": [str(length)]})
    body, decoder = _decode_in_reads(head, sent, reads)

    assert body == sent[:length]
    if len(sent) >= length:
        assert decoder.done and decoder.end_error() is None
    else:
        assert not decoder.done and "closed the connection mid-stream" in str(decoder.end_error())


# --- the ICY demuxer ------------------------------------------------------------------------------


@SETTINGS
@given(
    audio=st.binary(min_size=1, max_size=3000),
    metaint=st.integers(1, 300),
    blocks=st.dictionaries(st.integers(0, 20), st.binary(min_size=1, max_size=100), max_size=6),
    reads=st.lists(st.integers(1, 700), min_size=1, max_size=10),
)
def test_the_demuxer_gives_the_exact_audio_and_blocks_across_any_reads(audio, metaint, blocks,
                                                                       reads):
    body = icy_body(audio, metaint, blocks)
    demuxer = IcyDemuxer(metaint)
    got = bytearray()
    found = []
    start = index = 0
    while start < len(body):
        size = reads[index % len(reads)]
        for part in demuxer.feed(body[start:start + size]):
            if isinstance(part, IcyMetadata):
                found.append(part.raw)
            else:
                got += part
        start, index = start + size, index + 1

    assert bytes(got) == audio
    whole_blocks = len(audio) // metaint
    expected = [blocks[k].ljust(-(-len(blocks[k]) // 16) * 16, b"\0")
                for k in range(whole_blocks) if k in blocks]
    assert found == expected
    assert demuxer.problem_at_end() is None


@SETTINGS
@given(data=st.binary(max_size=5000), metaint=st.integers(1, 500),
       reads=st.lists(st.integers(1, 900), min_size=1, max_size=6))
def test_the_demuxer_takes_any_bytes_and_accounts_for_each(data, metaint, reads):
    demuxer = IcyDemuxer(metaint)
    audio = metadata = 0
    start = index = 0
    while start < len(data):
        size = reads[index % len(reads)]
        for part in demuxer.feed(data[start:start + size]):
            if isinstance(part, IcyMetadata):
                metadata += len(part.raw) + 1
                assert isinstance(stream_title(part.raw), (str, type(None)))
            else:
                audio += len(part)
        start, index = start + size, index + 1
    problem = demuxer.problem_at_end()
    assert problem is None or "inside an ICY metadata block" in problem
    # Every byte is audio, a length byte of an empty or a reported block, or in an open block.
    assert audio <= len(data) and audio + metadata <= len(data)


@SETTINGS
@given(value=st.one_of(st.sampled_from(UNICODE_DIGITS), _value_text))
@example(value="²")
def test_icy_metaint_is_a_positive_ascii_number_or_a_clear_source_error(value):
    head = Head("HTTP/1.1", 200, "OK", {"icy-metaint": [value]})
    text = value.strip(" \t")
    try:
        metaint = metaint_of(head, TARGET)
    except SourceError as error:
        assert "icy-metaint" in str(error) and "icy_metadata: false" in str(error)
        assert not (text.isascii() and text.isdigit() and len(text) < 12
                    and 0 < int(text) < 2**31)
    else:
        assert text.isascii() and text.isdigit() and metaint == int(text)


# --- a whole session, from a real loopback server -------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    head=_head,
    icy=st.sampled_from([b"", b"icy-metaint: 16\r\n", b"icy-metaint: \xc2\xb2\r\n"]),
    body=st.binary(max_size=400),
)
@example(head=b"ICY 200 OK\r\nicy-metaint: \xc2\xb2\r\n\r\n", icy=b"", body=b"abc")
def test_a_session_against_any_server_captures_bytes_or_fails_with_a_source_error(head, icy, body):
    from streamtap.io.sources.http import HttpSource

    response = head.replace(b"\r\n", b"\r\n" + icy, 1) if icy else head

    async def handler(request, writer) -> None:
        writer.write(response + body)
        await writer.drain()

    async def scenario() -> None:
        async with LoopbackServer(handler) as server:
            source = HttpSource(id="radio", url=server.url("/s?token=secret"),
                                read_timeout=2.0, connect_timeout=2.0)
            try:
                await source.connector().run_session(RecordingSink(), 0)
            except SourceError as error:
                assert str(error) and "secret" not in str(error), str(error)

    asyncio.run(scenario())
