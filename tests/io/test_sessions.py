"""Concurrent sessions of one stream (streamtap.io.sessions), driven through the reader without an
event loop: chunks never mix sessions, share the stream's seq and offsets, carry their session's
tags and id; the watermark covers every session; the byte limit holds across sessions."""

from streamtap.config import ChunkSettings
from streamtap.io.reader import StreamReader
from streamtap.io.sources.tcp import TcpListenSource
from streamtap.io.stream_state import StreamPosition
from tests.io.test_reader import _all


def _reader(max_bytes=4, position=None):
    config = TcpListenSource(id="devices", address="127.0.0.1:9", tags={"site": "a"})
    reader = StreamReader(config, ChunkSettings(max_bytes=max_bytes, max_seconds=60.0),
                          position or StreamPosition())
    reader._start_session()
    return reader


def test_interleaved_sessions_never_share_a_chunk_and_each_reassembles_exactly():
    reader = _reader(max_bytes=4)
    a = reader.open_session({"peer": "10.0.0.1:5000"})
    b = reader.open_session({"peer": "10.0.0.2:6000"})
    a.write(b"aa")
    b.write(b"bbb")
    a.write(b"aaaa")  # completes a's chunk (4), leaves "aa" pending
    b.write(b"b")  # completes b's chunk
    a.close()
    b.write(b"bb")
    b.close()

    chunks = _all(reader)
    assert [c.payload for c in chunks] == [b"aaaa", b"bbbb", b"aa", b"bb"]
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert [c.offset for c in chunks] == [0, 4, 8, 10]  # the stream's offsets, in cut order
    by_peer = {}
    for chunk in chunks:
        assert chunk.tags["site"] == "a"
        by_peer.setdefault(chunk.tags["peer"], bytearray()).extend(chunk.payload)
    assert by_peer == {"10.0.0.1:5000": b"aaaaaa", "10.0.0.2:6000": b"bbbbbb"}
    sessions = {c.tags["peer"]: c.session for c in chunks}
    assert len(set(sessions.values())) == 2
    assert all(c.session == sessions[c.tags["peer"]] for c in chunks)
    # The first chunk of each session is a discontinuity, but for the capture's very first.
    assert [c.discontinuity for c in chunks] == [False, True, False, False]
    assert reader.stats.bytes == 12 and reader.stats.chunks == 4


def test_session_tags_keep_the_peer_and_a_tag_change_cuts():
    reader = _reader(max_bytes=100)
    session = reader.open_session({"peer": "p:1"})
    session.write(b"xy")
    session.set_tags({"kind": "z"})
    session.write(b"zz")
    session.close()
    first, second = _all(reader)
    assert (first.payload, first.tags) == (b"xy", {"site": "a", "peer": "p:1"})
    assert (second.payload, second.tags) == (b"zz", {"site": "a", "peer": "p:1", "kind": "z"})


def test_the_watermark_is_the_earliest_of_every_pending_and_unemitted_chunk():
    reader = _reader(max_bytes=4)
    early = reader.open_session({"peer": "early:1"})
    late = reader.open_session({"peer": "late:1"})
    early.write(b"e")  # pending since t0
    t0 = early.first_byte_time
    late.write(b"llll")  # a whole chunk cut now: seq 0, arrived after t0
    (chunk,) = _all(reader)
    assert chunk.event_time >= t0
    # The next chunk to emit (seq 0) arrived later than early's pending byte: the watermark
    # must not pass that byte, which becomes a chunk with a later seq and an earlier time.
    assert reader.watermark(0) == t0
    early.write(b"eee")
    assert _all(reader)[1].event_time == t0
    assert reader.watermark(1) == t0  # seq 1 (t0) is not emitted yet
    assert reader.watermark(2) >= chunk.event_time  # everything emitted: idle, the clock


def test_the_byte_limit_holds_across_sessions():
    reader = _reader(max_bytes=4, position=StreamPosition(end_offset=10))
    a = reader.open_session({"peer": "a:1"})
    b = reader.open_session({"peer": "b:1"})
    a.write(b"aaa")
    b.write(b"bbbbbb")
    assert not reader.ended()
    a.write(b"AAAA")  # only 1 byte more fits
    assert reader.ended()
    chunks = _all(reader)
    assert sum(len(c.payload) for c in chunks) == 10
    assert b"".join(c.payload for c in chunks if c.tags["peer"] == "a:1") == b"aaaA"
    b.write(b"more")  # a finished stream takes nothing
    assert reader.stats.bytes == 10


def test_a_failed_session_counts_as_an_error_of_the_stream_and_keeps_its_bytes():
    reader = _reader(max_bytes=100)
    session = reader.open_session({"peer": "10.1.1.1:7"})
    session.write(b"partial")
    session.close("no data for 5 s")
    (chunk,) = _all(reader)
    assert chunk.payload == b"partial"
    assert reader.stats.errors == 1
    assert reader.stats.last_error == "10.1.1.1:7: no data for 5 s"


def test_a_resumed_stream_marks_every_sessions_first_chunk():
    reader = _reader(max_bytes=2, position=StreamPosition(next_seq=7, next_offset=70))
    a = reader.open_session({"peer": "a:1"})
    a.write(b"aaaa")
    chunks = _all(reader, 7)
    assert [(c.seq, c.offset, c.discontinuity) for c in chunks] == [(7, 70, True), (8, 72, False)]
