"""StreamReader: chunk numbering, sessions and discontinuities, the commit buffer, the byte limit.

Driven through its ByteSink methods without an event loop; where chunks are cut is the business
of streamtap.io.cutting (tests/io/test_cutting.py). Readers on the hub's loop: test_hub.py.
"""

import asyncio

from streamtap.config import ChunkSettings
from streamtap.io.reader import StreamReader
from streamtap.io.sources.synthetic import SyntheticSource
from streamtap.io.sources.tcp import TcpSource
from streamtap.io.stream_state import StreamPosition


def _reader(max_bytes=10, max_seconds=60.0, position=None, **source):
    config = TcpSource(id=source.pop("id", "s1"), address="127.0.0.1:9", **source)
    reader = StreamReader(
        config,
        ChunkSettings(max_bytes=max_bytes, max_seconds=max_seconds),
        position or StreamPosition(),
    )
    reader._start_session()
    return reader


def _all(reader, seq=0):
    chunks = []
    while (chunk := reader.chunk(seq)) is not None:
        chunks.append(chunk)
        seq += 1
    return chunks


def test_chunks_are_cut_at_exactly_max_bytes_with_contiguous_seqs_and_offsets():
    reader = _reader(max_bytes=10)
    reader.write(b"0123456789abcdefghij" + b"klm")
    reader.write(b"nopqrst")
    chunks = _all(reader)
    assert [c.payload for c in chunks] == [b"0123456789", b"abcdefghij", b"klmnopqrst"]
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert [c.offset for c in chunks] == [0, 10, 20]
    assert all(c.checksum_ok() for c in chunks)
    assert reader.stats.bytes == 30 and reader.stats.chunks == 3


def test_chunk_tags_are_the_user_tags_and_the_session_tags_of_their_bytes():
    reader = _reader(max_bytes=4, tags={"site": "a", "icy_title": "config"})
    reader.set_tags({"icy_title": "one"})
    reader.write(b"aaaa")
    reader.set_tags({"icy_title": "two", "content_type": "audio/mpeg"})
    reader.write(b"bbbb")
    first, second = _all(reader)
    assert (first.payload, first.tags) == (b"aaaa", {"site": "a", "icy_title": "one"})
    assert (second.payload, second.tags) == (
        b"bbbb",
        {"site": "a", "icy_title": "two", "content_type": "audio/mpeg"},
    )
    assert first.tags is not second.tags


def test_byte_limit_ends_the_stream_at_exactly_that_many_bytes():
    config = TcpSource(id="s1", address="127.0.0.1:9")
    reader = StreamReader(config, ChunkSettings(max_bytes=4), StreamPosition(end_offset=10))
    reader._start_session()
    reader.write(b"abcdefgh")
    assert not reader.ended()
    reader.write(b"ijklmnop")
    assert b"".join(c.payload for c in _all(reader)) == b"abcdefghij"
    assert reader.finished(3)
    assert reader.stats.bytes == 10
    reader.write(b"qrst")  # a finished reader takes nothing more
    assert reader.chunk(3) is None and reader.stats.bytes == 10


def test_committed_chunks_are_dropped_and_uncommitted_ones_served_again():
    reader = _reader(max_bytes=2)
    reader.write(b"aabbccdd")
    assert reader.sync(StreamPosition(next_seq=0))
    assert reader.chunk(1).payload == b"bb"
    assert reader.retained_bytes() == 8
    # The runner committed seq 0 and 1; a retry of the next bundle gets seq 2 again, same bytes.
    assert reader.sync(StreamPosition(next_seq=2, next_offset=4))
    assert reader.chunk(1) is None
    assert reader.chunk(2).payload == b"cc"
    assert reader.retained_bytes() == 4
    assert reader.sync(StreamPosition(next_seq=2, next_offset=4))
    assert reader.chunk(2).payload == b"cc"
    # A restriction this reader never reached belongs to a reader elsewhere.
    assert not reader.sync(StreamPosition(next_seq=9, next_offset=18))


def test_a_resumed_live_stream_marks_a_discontinuity_and_continues_seq_and_offset():
    reader = _reader(max_bytes=4, position=StreamPosition(next_seq=5, next_offset=20))
    reader.write(b"wxyz")
    (chunk,) = _all(reader, 5)
    assert (chunk.seq, chunk.offset, chunk.discontinuity) == (5, 20, True)
    assert reader.stats.discontinuities == 1


def test_a_resumed_seekable_stream_continues_without_a_discontinuity():
    source = SyntheticSource(id="sensor")
    reader = StreamReader(source, ChunkSettings(max_bytes=4), StreamPosition(3, 12))
    reader._start_session()
    reader.write(b"mnop")
    (chunk,) = _all(reader, 3)
    assert (chunk.seq, chunk.offset, chunk.discontinuity) == (3, 12, False)


def test_a_reconnect_marks_the_next_chunk_only():
    reader = _reader(max_bytes=4)
    reader.write(b"abcd")
    reader._start_session()
    reader.write(b"efghijkl")
    chunks = _all(reader)
    assert [c.discontinuity for c in chunks] == [False, True, False]
    assert chunks[0].session != chunks[1].session == chunks[2].session


def test_a_read_of_exactly_one_chunk_becomes_its_payload_without_a_copy():
    reader = _reader(max_bytes=4)
    whole_read = bytes(bytearray(b"wxyz"))
    reader.write(b"ab")
    assert reader.room() == 2
    reader.write(b"cd")
    assert reader.room() == 4
    reader.write(whole_read)
    reader.write(b"efgh")
    chunks = _all(reader)
    assert [c.payload for c in chunks] == [b"abcd", b"wxyz", b"efgh"]
    assert chunks[1].payload is whole_read
    assert [c.offset for c in chunks] == [0, 4, 8]
    assert all(c.checksum_ok() for c in chunks)


def test_the_watermark_is_the_first_byte_time_of_the_next_chunk_to_come():
    reader = _reader(max_bytes=4)
    idle = reader.watermark(0)  # nothing received: the clock
    reader.write(b"ab")
    pending_since = reader.watermark(0)
    assert idle <= pending_since  # the pending bytes' first byte time
    reader.write(b"cdef")
    (chunk,) = _all(reader)
    assert reader.watermark(0) == chunk.event_time == pending_since
    assert reader.horizon() >= chunk.event_time  # "ef" pending since then
    assert reader.current_watermark() == reader.watermark(0)


def test_releasable_hands_over_the_chunks_from_a_seq_up_to_a_window_start():
    reader = _reader(max_bytes=2)
    times = [100.0, 100.5, 110.0, 110.5]
    for index, at in enumerate(times):
        reader._retain(bytes([index]) * 2, 2 * index, at, {})
    assert [c.seq for c in reader.releasable(0, None)] == [0, 1, 2, 3]
    assert [c.seq for c in reader.releasable(1, 110 * 1_000_000)] == [1]
    assert reader.releasable(2, 110 * 1_000_000) == []
    assert reader.releasable(4, None) == []  # not cut yet
    reader.sync(StreamPosition(2, 4))
    assert [c.payload for c in reader.releasable(2, None)] == [b"\x02\x02", b"\x03\x03"]
    assert reader.releasable(1, None) == []  # committed already


def _has_room(reader) -> bool:
    """Whether reader.wait_for_room() returns (within 0.1 s)."""
    async def wait() -> bool:
        try:
            await asyncio.wait_for(reader.wait_for_room(), 0.1)
            return True
        except asyncio.TimeoutError:
            return False

    return asyncio.run(wait())


def test_chunks_handed_over_do_not_hold_the_reader_back(monkeypatch):
    from streamtap.io import reader as reader_module

    monkeypatch.setattr(reader_module, "_BUFFER_LIMIT_BYTES", 10)
    reader = _reader(max_bytes=4)
    for index in range(4):  # 16 bytes cut, none handed over: over the limit
        reader._retain(b"abcd", 4 * index, 100.0 + index, {})
    assert not _has_room(reader)
    reader.watermark(3)  # the SDF handed seqs 0-2 over: 4 bytes wait
    assert _has_room(reader)
    reader.watermark(1)  # a retried bundle starts again at seq 1: 12 bytes wait
    assert not _has_room(reader)
    reader.watermark(4)
    reader.sync(StreamPosition(2, 8))  # seqs 0 and 1 committed; 2 and 3 handed over
    assert reader.retained_bytes() == 8 and _has_room(reader)
    for index in range(4, 7):  # 12 more bytes cut, not handed over
        reader._retain(b"abcd", 4 * index, 100.0 + index, {})
    assert not _has_room(reader)
