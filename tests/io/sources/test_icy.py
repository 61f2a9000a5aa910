"""ICY metadata (Icecast, Shoutcast): the demuxer on its own, and end to end through the http source
against loopback servers, byte-exact."""

from __future__ import annotations

import random

import pytest

from streamtap.errors import SourceError
from streamtap.io.sources.http.icy import IcyDemuxer, IcyMetadata, stream_title
from tests.io.sources.http_servers import body_handler, capture, chunked, head, icy_body, payload

# --- the demuxer, no socket ----------------------------------------------------------------------


def _demux(body: bytes, metaint: int, reads: list[int]) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Feeds `body` in reads of the given sizes (cycled); returns the audio and (audio offset,
    raw block) of each metadata block."""
    demuxer = IcyDemuxer(metaint)
    audio = bytearray()
    blocks = []
    start = index = 0
    while start < len(body):
        size = reads[index % len(reads)]
        for part in demuxer.feed(body[start : start + size]):
            if isinstance(part, IcyMetadata):
                blocks.append((len(audio), part.raw))
            else:
                audio += part
        start += size
        index += 1
    assert demuxer.problem_at_end() is None
    return bytes(audio), blocks


@pytest.mark.parametrize("reads", [[1], [2, 15, 16, 17], [100, 1], [1000], [33, 7, 64, 65]])
def test_the_demuxer_splits_audio_and_blocks_across_any_read_boundaries(reads):
    audio = payload(64 * 12 + 5, seed=3)
    body = icy_body(audio, 64, {0: b"StreamTitle='A';", 3: b"x" * 40, 7: b"StreamTitle='B';"})
    got, blocks = _demux(body, 64, reads)
    assert got == audio
    # Empty blocks (length byte 0) are not reported; NUL padding is kept as received.
    assert blocks == [
        (64, b"StreamTitle='A';"),
        (4 * 64, b"x" * 40 + b"\0" * 8),
        (8 * 64, b"StreamTitle='B';"),
    ]


def test_a_read_of_audio_only_is_handed_on_without_a_copy():
    demuxer = IcyDemuxer(1000)
    read = payload(600, seed=4)
    (part,) = demuxer.feed(read)
    assert part is read
    rest = payload(400, seed=5)
    parts = demuxer.feed(rest + b"\x01" + b"T" * 16 + b"z")
    assert [type(p) for p in parts] == [bytes, IcyMetadata, bytes]
    assert (parts[0], parts[1].raw, parts[2]) == (rest, b"T" * 16, b"z")


def test_the_demuxer_says_when_the_body_ends_inside_a_block():
    demuxer = IcyDemuxer(4)
    demuxer.feed(b"abcd\x02" + b"m" * 10)
    assert demuxer.problem_at_end() == (
        "the connection ended inside an ICY metadata block (10 of 32 bytes)"
    )


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


@pytest.mark.parametrize("metaint", ["abc", "0", "-5", "1.5", "²", "١٦", "1²", "2147483648"])
def test_bad_icy_metaint_is_a_source_error(metaint):
    # Unicode digits ("²", Arabic-Indic "١٦") pass str.isdigit() but are no metaint: they once
    # failed outside SourceError and stopped the stream for good.
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
    assert stream_title(raw) == title
